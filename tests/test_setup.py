"""The set-up files agree with each other, and the commands the README gives do what it says:
every ``make`` target it names exists and runs the stated command (``make -n``, which prints the
recipe without running it), and ``.ci/run`` (run with stand-ins for python3, pip, apt-get and make)
installs the pinned CPU torch only where none is importable and ends in ``make test``, whose
failure is CI's failure."""
import os
import pathlib
import re
import shutil
import stat
import subprocess

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, which requires-python allows; pytest needs tomli there
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements):
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("-", "_") for r in requirements}


def test_environment_yml_names_every_dependency_of_pyproject():
    project = _project()
    wanted = _names(project["dependencies"]) | _names(sum(project["optional-dependencies"].values(), []))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", []) if not r.startswith("-")]
    have = _names(conda) | _names(pip)  # what conda cannot install comes from pip, inside the same env
    if "pytorch" in have:  # conda's name for torch
        have.add("torch")
    missing = wanted - have
    assert not missing, f"environment.yml lacks {sorted(missing)}"


def test_no_pins_on_torch_or_numpy():
    project = _project()
    for req in project["dependencies"]:
        name = _names([req]).pop()
        if name in ("torch", "numpy"):
            assert "==" not in req and "<" not in req, req


def _dry_run(target: str) -> list[str]:
    """The commands ``make <target>`` would run from scratch, one per logical line (continuations
    joined): ``-B`` takes every target as out of date, so a set-up machine (stamps newer than
    pyproject.toml, the wheels fetched) prints the same commands as a fresh clone."""
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "--no-print-directory", target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"make -n {target}: {done.stderr}"
    return done.stdout.replace("\\\n", " ").splitlines()


def _index(lines: list[str], pattern: str) -> int:
    hits = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert hits, f"no command matching {pattern!r} in {lines}"
    return hits[0]


# What the README says each target runs (its "Working on the code", "The book", "Exercises" and
# quick-start sections), as a pattern on the command line make would run.
README_TARGETS = {
    "demo": r"/van-edu compare$",
    "test": r"/python -m pytest$",                       # everything: no marker filter
    "test-fast": r'/python -m pytest tests -m "not slow"$',
    "lint": r"/ruff check \.$",
    "lab": r"JUPYTER_PREFER_ENV_PATH=1 \S*/python -m jupyterlab --ServerApp.root_dir=notebooks\b",
    "notebooks": r"tools/notebooks\.py execute$",
    "book": r"/python tools/book\.py$",
    "exercises": r"/python -m van_edu\.grading generate$",
    "colab-wheels": r"/pip download -q -d \.cache/colab-wheels ",
    "bench-peers": r"/python benchmarks/van_peers\.py --out ",
}


def test_every_make_target_the_readme_names_is_one_the_test_knows():
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", (ROOT / "README.md").read_text()))
    assert named == set(README_TARGETS), "update README_TARGETS with what the README says the new target runs"


@needs_make
@pytest.mark.parametrize("target", sorted(README_TARGETS))
def test_make_target_runs_the_command_the_readme_states(target):
    lines = _dry_run(target)
    _index(lines, README_TARGETS[target])


@needs_make
def test_make_test_lints_first_fetches_the_colab_wheels_and_runs_every_test():
    lines = _dry_run("test")
    lint, wheels, tests = (_index(lines, p) for p in (r"/ruff check \.$", r"/pip download .*colab-wheels",
                                                       README_TARGETS["test"]))
    assert lint < tests and wheels < tests
    assert not any("not slow" in line for line in lines)


@needs_make
def test_the_install_step_keeps_an_installed_torch():
    """The first use installs van_edu with its extras; torch only where none imports (a CPU, conda or
    Colab build is kept)."""
    lines = _dry_run("install")
    if not lines:  # the stamp is newer than pyproject.toml: nothing to do
        return
    torch_line = lines[_index(lines, r"pip install torch$")]
    assert re.match(r'\S+/python -c "import torch" 2>/dev/null \|\| ', torch_line), torch_line
    _index(lines, r'pip install -e "\.\[dev,docs\]"$')


def _stub(folder: pathlib.Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("make_status", [0, 3])
@pytest.mark.parametrize("torch_importable", [True, False], ids=["torch there", "no torch"])
def test_ci_run_installs_the_cpu_torch_where_needed_and_ends_in_make_test(tmp_path, make_status, torch_importable):
    """.ci/run in a copy of the repository with stand-ins that log their arguments: python3 makes a
    .venv whose python imports torch or not, pip, apt-get, chromium and make record their calls.
    CI's exit status is make's."""
    repo, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "log"
    (repo / ".ci").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    python_body = (f'echo "venv-python $*" >> {log}; '
                   + ('exit 0' if torch_importable else '[[ "$*" == *"import torch"* ]] && exit 1; exit 0'))
    _stub(bin_dir, "python3", f'echo "python3 $*" >> {log}\n'
          'if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "$3/bin"\n'
          f'  printf "#!/usr/bin/env bash\\n%s\\n" \'{python_body}\' > "$3/bin/python"\n'
          f'  printf "#!/usr/bin/env bash\\necho \\"pip \\$*\\" >> {log}\\n" > "$3/bin/pip"\n'
          '  chmod +x "$3/bin/python" "$3/bin/pip"; fi')
    for name in ("apt-get", "chromium", "chromedriver"):
        _stub(bin_dir, name, f'echo "{name} $*" >> {log}')
    _stub(bin_dir, "make", f'echo "make $* (in $PWD)" >> {log}; exit {make_status}')
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines()
    assert done.returncode == make_status, (done.stdout, done.stderr, calls)
    assert calls[-1] == f"make test (in {repo})", calls
    assert calls[0] == "python3 -m venv .venv"
    installs = [c for c in calls if c.startswith("pip install")]
    assert len(installs) == (0 if torch_importable else 1), calls
    if not torch_importable:                   # a pinned version: the CPU wheel, never a CUDA pull
        assert re.fullmatch(r"pip install --quiet torch==\d+\.\d+\.\d+", installs[0]), installs
