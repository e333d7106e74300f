"""Playing Colab: the notebooks run from their badge, with nothing but themselves, offline.

What Colab gives a notebook opened from its badge, rebuilt here:
- a fresh virtual environment holding only what Colab has that the course needs before its set-up
  cell runs (torch, numpy, matplotlib, ipykernel), and a kernel in it that looks like Colab's
  (``google.colab`` is importable);
- the notebook alone in an empty folder outside any clone;
- the course repository at its GitHub address, served here from a local bare clone of this
  repository's committed HEAD through git's ``url.<base>.insteadOf`` (so the notebooks' own clone
  line runs unchanged);
- no Hub (``HF_HUB_OFFLINE=1``), and pip reading only a local wheel folder (``make colab-wheels``
  fills ``.cache/colab-wheels`` once, at set-up time; nothing is downloaded while the test runs).

Then notebooks 00, 06, 07 and 08 and one student exercise notebook are executed in test mode: all
must run, and the exercise's check cells must print their verdicts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from van_edu.notebook import COURSE_REPO

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".cache" / "colab-wheels"
NOTEBOOKS = ["00_start_here.ipynb", "06_training_a_small_van.ipynb", "07_van_vit_resnet.ipynb",
             "08_looking_inside.ipynb"]
EXERCISE = ROOT / "exercises" / "student" / "01_lka_arithmetic.ipynb"
COLAB_HAS = ["numpy", "matplotlib", "ipykernel"]

pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(the empty content folder, the kernel's environment, the fresh environment's folder)."""
    if not (WHEELS / ".done").is_file():
        pytest.skip(f"no local wheels in {WHEELS}: run `make colab-wheels` once (what `make test` does)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    import torch

    base = tmp_path_factory.mktemp("colab")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    pip_env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS)}
    pip_env.pop("PYTHONPATH", None)
    _run([str(python), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}", *COLAB_HAS],
         env=pip_env, timeout=900)
    # The course's repository, at its GitHub address: a bare clone of the committed HEAD as main.
    origin = base / "origin.git"
    _run(["git", "init", "-q", "--bare", str(origin)])
    _run(["git", "-C", str(ROOT), "push", "-q", str(origin), "HEAD:refs/heads/main"])
    # A kernel in that environment that looks like Colab's.
    ipython_dir = base / "ipython"
    (ipython_dir / "profile_default" / "startup").mkdir(parents=True)
    (ipython_dir / "profile_default" / "startup" / "00-colab.py").write_text(
        "import sys, types\nsys.modules.setdefault('google.colab', types.ModuleType('google.colab'))\n")
    kernels = base / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        '{"argv": ["%s", "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
        '"display_name": "Colab (played)", "language": "python"}' % python)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VAN_EDU_", "PYTHON", "JUPYTER", "GIT_CONFIG", "VIRTUAL_ENV"))}
    env.update({
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VAN_EDU_QUICK": "1",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(base / "hf"),
        "VAN_EDU_CACHE": str(base / "van_edu_cache"), "IPYTHONDIR": str(ipython_dir),
        "JUPYTER_PATH": str(base / "jupyter"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{origin.as_uri()}.insteadOf",
        "GIT_CONFIG_VALUE_0": COURSE_REPO,
    })
    content = base / "content"
    content.mkdir()
    return content, env, venv


def _execute(path: Path, content: Path, env: dict, allow_errors: bool = False):
    """Copy one notebook into the content folder and run it there in the played Colab kernel."""
    import nbformat
    from nbclient import NotebookClient

    target = content / path.name
    shutil.copy(path, target)
    nb = nbformat.read(target, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this environment; JUPYTER_PATH finds its spec
    try:
        client = NotebookClient(nb, timeout=600, kernel_name="colab", allow_errors=allow_errors,
                                resources={"metadata": {"path": str(content)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def _errors(nb) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells)
            if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _text(cell) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_course_notebook_runs_from_its_badge(colab, name):
    content, env, venv = colab
    nb = _execute(ROOT / "notebooks" / name, content, env)
    assert not _errors(nb)
    assert (content / "van-course" / "van_edu").is_dir()          # the course came along ...
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "van_edu").is_dir() and (site / "datasets").is_dir()  # ... and was installed there
    assert "Google Colab" in _text(nb.cells[next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")])


def test_a_student_exercise_runs_its_self_checks_from_its_badge(colab):
    content, env, _ = colab
    nb = _execute(EXERCISE, content, env, allow_errors=True)
    errors = _errors(nb)
    # The unanswered tasks raise NotImplementedError in their answer cells, nothing else fails ...
    assert errors and all("NotImplementedError" in e for e in errors), errors
    # ... and every check cell ran and said why it failed.
    checks = [c for c in nb.cells if c.cell_type == "code" and "check." in c.source]
    assert checks and all("FAIL" in _text(c) for c in checks), [_text(c)[:200] for c in checks]
