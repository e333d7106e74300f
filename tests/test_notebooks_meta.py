"""The course notebooks are committed clean and executed: checked without running them.

What is checked for every ``notebooks/NN_*.ipynb``: kernelspec ``python3``; executed in order from
a fresh kernel (execution counts 1..n); no error outputs; no widget state; under 3 MB; a first
Markdown cell with a title, learning goals, prerequisites and the Colab badge stamped from
``van_edu.notebook.COURSE_REPO``; a first code cell that starts with the Colab set-up stamped from
that same repository (never reinstalling torch) and calls ``setup()``; checked cells (``# NBVAL_CHECK_OUTPUT``)
that have an output; in 01-09 three folded questions and a Predict moment; a last cell with a summary, the exercises and a link to the next notebook;
relative links that resolve; and no silent redefinition of the package's classes and functions.
(Running them is nbval's job: ``pytest --nbval-lax notebooks/``.)
"""
import ast
import json
import re
from pathlib import Path

import pytest

from van_edu.notebook import COLAB_DEPS, COURSE_REPO, badge_markdown, colab_lines, colab_url, install_lines

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 3 * 1024 * 1024
CHECK = "# NBVAL_CHECK_OUTPUT"


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _python(source: str) -> str:
    """Cell source with IPython magics and shell escapes replaced by ``pass``, so ``ast`` reads it."""
    out = []
    for line in source.splitlines():
        stripped = line.lstrip()
        out.append(line[: len(line) - len(stripped)] + "pass" if stripped.startswith(("%", "!")) else line)
    return "\n".join(out)


def _package_names() -> set[str]:
    """Top-level classes and functions defined in van_edu (public names only)."""
    names = set()
    for path in (ROOT / "van_edu").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names.add(node.name)
    return names


def test_the_course_notebooks_exist():
    numbers = {p.name[:2] for p in NOTEBOOKS}
    assert {"00", "01", "02", "03", "04", "05"} <= numbers, sorted(numbers)


def test_colab_dependencies_are_pyproject_minus_torch():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {d.replace(" ", "") for d in deps if re.split(r"[<>=!~\[; ]", d)[0] != "torch"}
    assert set(COLAB_DEPS) == expected
    assert not any(d.startswith("torch") and d[5:6] in "<>=!~ " for d in COLAB_DEPS)


def test_course_repo_is_one_github_url():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", COURSE_REPO), COURSE_REPO
    assert colab_url("00_x.ipynb").endswith("/notebooks/00_x.ipynb")


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return request.param, _load(request.param)


def test_kernelspec_and_size(notebook):
    path, nb = notebook
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB"


def test_executed_in_order_from_a_fresh_kernel(notebook):
    path, nb = notebook
    counts = [c.get("execution_count") for c in _code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"


def test_no_errors_and_no_widget_state(notebook):
    path, nb = notebook
    assert "widgets" not in nb["metadata"], f"{path.name} stores widget state"
    for i, cell in enumerate(_code_cells(nb)):
        assert "widgets" not in cell.get("metadata", {})
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}, code cell {i + 1}: {out.get('ename')}"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {})


def test_first_cell_has_title_goals_prerequisites_and_badge(notebook):
    path, nb = notebook
    head = nb["cells"][0]
    text = _source(head)
    assert head["cell_type"] == "markdown"
    assert re.match(r"#\s+\S", text), f"{path.name}: the first cell must start with a '# title'"
    assert re.search(r"learning goals", text, re.I), f"{path.name}: no learning goals"
    assert re.search(r"prerequisites", text, re.I), f"{path.name}: no prerequisites"
    assert badge_markdown(path.name) in text, (
        f"{path.name}: badge not stamped from COURSE_REPO (run: python tools/notebooks.py stamp)")
    badges = re.findall(r"colab\.research\.google\.com/github/[^)\s]+", json.dumps(nb))
    assert all(b.startswith(colab_url(path.name).removeprefix("https://")) for b in badges), badges


def test_first_code_cell_installs_on_colab_without_torch_and_calls_setup(notebook):
    path, nb = notebook
    src = _source(_code_cells(nb)[0])
    lines = [line.strip() for line in src.splitlines()]
    assert src.startswith("\n".join(colab_lines("notebooks")) + "\n"), (
        f"{path.name}: Colab set-up not stamped from COURSE_REPO (run: python tools/notebooks.py stamp)")
    assert f"git clone -q --depth 1 --branch main {COURSE_REPO}" in src
    pips = [line for line in lines if line.startswith(("%pip", "!pip"))]
    assert len(pips) == len(install_lines()), f"{path.name}: extra pip lines {pips}"
    assert not any(re.search(r"\btorch(vision)?\b(?!info)", p) for p in pips), pips
    assert "setup(" in src


def test_checked_cells_have_output(notebook):
    path, nb = notebook
    checked = [c for c in _code_cells(nb) if CHECK in _source(c)]
    for cell in checked:
        assert cell.get("outputs"), f"{path.name}: a {CHECK} cell has no output: {_source(cell)[:80]!r}"


def test_ends_with_a_summary_exercises_and_the_next_notebook(notebook):
    """The last cell sums up, points to the exercises (00 excepted: it maps them all) and links the
    next notebook in the sequence (the last one links back to 00)."""
    path, nb = notebook
    last = _source(nb["cells"][-1])
    assert nb["cells"][-1]["cell_type"] == "markdown" and re.search(r"^## Summary", last, re.M), (
        f"{path.name}: the last cell must be a '## Summary'")
    if path != NOTEBOOKS[0]:
        assert "exercises/README.md" in last, f"{path.name}: the summary does not point to the exercises"
    following = NOTEBOOKS[(NOTEBOOKS.index(path) + 1) % len(NOTEBOOKS)]
    assert f"]({following.name})" in last, f"{path.name}: the summary does not link {following.name}"


def test_active_reading_questions_and_a_prediction(notebook):
    """01-09 ask at least three check-your-understanding questions, each answer folded in a
    ``<details>`` with a non-empty body, and have at least one **Predict** cell that comes right
    before a code cell (the cell that answers it)."""
    path, nb = notebook
    if path == NOTEBOOKS[0]:
        return
    markdown = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    answers = re.findall(r"<details>\s*<summary>[^<]*</summary>(.*?)</details>", markdown, re.S)
    assert len([a for a in answers if len(a.split()) >= 5]) >= 3, (
        f"{path.name}: {len(answers)} folded answers; at least three questions with answers are required")
    cells = nb["cells"]
    predicts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "**Predict" in _source(c)]
    assert any(i + 1 < len(cells) and cells[i + 1]["cell_type"] == "code" for i in predicts), (
        f"{path.name}: no '**Predict**' markdown cell right before a code cell")


def test_relative_links_point_at_files_that_exist(notebook):
    path, nb = notebook
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", _source(cell)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue                                              # a URL or an anchor
            assert (path.parent / target.split("#")[0]).exists(), f"{path.name}: broken link {target}"


def test_package_code_is_not_redefined_without_a_check(notebook):
    """A notebook may build a package class or function by hand to teach it, under the same name,
    only if a later cell asserts equality (``assert_close`` or ``assert``) and names it."""
    path, nb = notebook
    package = _package_names()
    cells = [_python(_source(c)) for c in _code_cells(nb)]
    for i, src in enumerate(cells):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in package:
                later = cells[i:]
                assert any(node.name in s and ("assert_close" in s or "assert " in s) for s in later), (
                    f"{path.name} redefines van_edu's {node.name} without asserting it equals the package's")



@pytest.mark.parametrize("path", sorted((ROOT / "exercises").glob("*/[0-9][0-9]_*.ipynb")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_exercise_notebook_brings_the_course_along_on_colab(path):
    """Source, student and solution copies alike: the badge opens the student copy, and the first
    code cell starts with the set-up stamped for exercises/student."""
    nb = _load(path)
    assert badge_markdown(path.name, folder="exercises/student") in _source(nb["cells"][0])
    src = _source(_code_cells(nb)[0])
    assert src.startswith("\n".join(colab_lines("exercises/student")) + "\n"), path
    pips = [line.strip() for line in src.splitlines() if line.strip().startswith(("%pip", "!pip"))]
    assert not any(re.search(r"\btorch(vision)?\b(?!info)", p) for p in pips), pips
