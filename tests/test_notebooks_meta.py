"""The course notebooks are committed clean and executed: checked without running them.

What is checked for every ``notebooks/NN_*.ipynb``: kernelspec ``python3``; executed in order from
a fresh kernel (execution counts 1..n); no error outputs; no widget state; under 3 MB; a first
Markdown cell with a title, learning goals, prerequisites and the Colab badge stamped from
``van_edu.notebook.COURSE_REPO``; a first code cell that starts with the Colab set-up stamped from
that same repository (never reinstalling torch) and calls ``setup()``; checked cells (``# NBVAL_CHECK_OUTPUT``)
that have an output; in 01-09 three folded questions and a Predict moment; a last cell with a summary, the exercises and a link to the next notebook;
relative links that resolve; every stored figure with its description; no silent redefinition of the package's classes and functions; no code
cell over 40 lines and no Markdown cell over 25; and a study time (reading, running on a CPU and on a
GPU) in the first cell.
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


def test_every_stored_figure_carries_its_description(notebook):
    """Each figure is stored with the text ``setup()`` makes from its titles, axes and legends (the
    book's alt text), not matplotlib's bare ``<Figure size ...>``: a notebook executed before that
    formatter, or a figure made around it, fails here."""
    path, nb = notebook
    bare = [i + 1 for i, cell in enumerate(_code_cells(nb)) for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})
            and "".join(out["data"].get("text/plain", "")).startswith("<Figure size")]
    assert not bare, f"{path.name}: code cell(s) {bare} store a figure without its description"


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


MAX_LINES = {"code": 40, "markdown": 25}
STUDY_TIME = re.compile(r"\*\*Study time:\*\* about \d+ min reading\b.*\bCPU\b.*\bGPU\b")


def test_cells_are_short(notebook):
    """No code cell over 40 lines, no Markdown cell over 25: a cell a reader takes in at one look,
    on one screen. A longer one is split at a natural boundary, or its formatting moves to van_edu."""
    path, nb = notebook
    long = [f"cell {i} ({c['cell_type']}): {n} lines" for i, c in enumerate(nb["cells"])
            if (n := len(_source(c).splitlines())) > MAX_LINES.get(c["cell_type"], n)]
    assert not long, f"{path.name}: cells over {MAX_LINES} lines: {'; '.join(long)}"


def test_first_cell_states_the_study_time(notebook):
    """The first cell says how long the notebook takes: reading, and running on a CPU and on a GPU,
    in a paragraph ``**Study time:** about N min reading, ... CPU ... GPU ...``."""
    path, nb = notebook
    paragraphs = [" ".join(p.split()) for p in _source(nb["cells"][0]).split("\n\n")]
    assert any(STUDY_TIME.match(p) for p in paragraphs), (
        f"{path.name}: the first cell has no '**Study time:** about N min reading, ... CPU ... GPU ...' paragraph")


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


def test_the_map_in_00_names_the_exercise_sets_each_summary_names():
    """00's map gives, for each notebook, the exercise sets that notebook's own summary points to."""
    rows = {}
    the_map = next(c for c in _load(NOTEBOOKS[0])["cells"] if _source(c).startswith("## The map of the course"))
    for line in _source(the_map).splitlines():
        m = re.match(r"\| \[(\d\d) [^]]*\]\([^)]*\) \|.*\| (.+) \|$", line)
        if m:
            rows[m[1]] = re.findall(r"\d\d", m[2])
    assert len(rows) == len(NOTEBOOKS), sorted(rows)
    for path in NOTEBOOKS[1:]:
        last = _source(_load(path)["cells"][-1])
        mention = re.search(r"xercise(?:s:\*\*| set)(.*?)(?:\n\n|\*\*Next|$)", last, re.S)
        named = re.findall(r"\bsets? (\d\d)|\band (\d\d)\b", mention[1]) if mention else []
        sets = [a or b for a, b in named] or re.findall(r"^ (\d\d)", mention[1] if mention else "")
        assert rows[path.name[:2]] == sets, f"00's map says {rows[path.name[:2]]} for {path.name}, its summary {sets}"


REFERENCES = ROOT / "notebooks" / "references.md"
REFERENCES_LINE = re.compile(r"^\*\*References\*\* \(full entries in \[references\]\(references\.md\)\): (.+)\.$", re.M)


def _bibliography() -> list[str]:
    """The keys of notebooks/references.md: each entry starts ``- **Author et al. Year.**``."""
    return re.findall(r"^- \*\*(.+?)\.\*\*", REFERENCES.read_text(encoding="utf-8"), re.M)


def _cited(nb) -> list[str]:
    match = REFERENCES_LINE.search(_source(nb["cells"][-1]))
    return match[1].split("; ") if match else []


def test_every_notebook_cites_its_sources_from_the_bibliography(notebook):
    """The summary ends with the works the notebook draws on, each one an entry of references.md."""
    path, nb = notebook
    cited = _cited(nb)
    assert cited, f"{path.name}: the summary has no '**References** (full entries in [references](references.md)): ...' line"
    unknown = [key for key in cited if key not in _bibliography()]
    assert not unknown, f"{path.name} cites {unknown}, which notebooks/references.md does not list"
    assert len(set(cited)) == len(cited), f"{path.name} cites a work twice: {cited}"


def test_the_bibliography_lists_only_cited_works_once():
    keys = _bibliography()
    assert len(keys) >= 20 and len(set(keys)) == len(keys), "references.md: an entry key twice"
    cited = {key for path in NOTEBOOKS for key in _cited(_load(path))}
    assert set(keys) <= cited, f"references.md lists works no notebook cites: {sorted(set(keys) - cited)}"
    for key in keys:                    # a key names its year, so two works of one author-year need a/b
        assert re.fullmatch(r"[A-Z][\w ]+ (et al\.|and [A-Z]\w+)? ?\d{4}[ab]?", key), key


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


class _RedefinitionChecks:
    """Which of a notebook's definitions of a package name are followed by a check against van_edu.

    The code cells are read in order as one program, following where values come from: a name
    imported from van_edu (``import van_edu.lka``, ``from van_edu.models import create_model``)
    carries the mark "van_edu"; a class or function defined under a package name carries a mark of
    its own; anything assigned (or looped over) from an expression carries the marks of the names
    in it. A definition counts as checked when a check that comes after it -- an ``assert`` statement,
    a call of an ``assert...`` function (``assert_close``), or a call of a notebook function whose
    body asserts -- involves both its mark and van_edu's.
    """

    def __init__(self, package: set[str]):
        self.package = package
        self.marks: dict[str, set[str]] = {}
        self.asserting_functions: set[str] = set()
        self.definitions: list[str] = []          # one mark per definition of a package name
        self.checked: set[str] = set()

    def _marks_of(self, node) -> set[str]:
        found = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                found |= self.marks.get(sub.id, set())
        return found

    def _assign(self, target, marks: set[str]) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                self.marks[sub.id] = set(marks)

    def _is_check(self, call: ast.Call) -> bool:
        name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
        return name.startswith("assert") or name in self.asserting_functions

    def _record_checks(self, node) -> None:
        checks = [sub for sub in ast.walk(node) if isinstance(sub, ast.Assert)
                  or (isinstance(sub, ast.Call) and self._is_check(sub))]
        for check in checks:
            marks = self._marks_of(check)
            if "van_edu" in marks:
                self.checked |= {m for m in marks if m.startswith("ours:")}

    def statement(self, node) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                source = module if module is not None else alias.name
                bound = alias.asname or alias.name.split(".")[0]
                self.marks[bound] = {"van_edu"} if source.split(".")[0] == "van_edu" else set()
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any(isinstance(sub, ast.Assert) or (isinstance(sub, ast.Call) and self._is_check(sub))
                   for sub in ast.walk(node)):
                self.asserting_functions.add(node.name)
            marks = self._marks_of(node)        # what its body uses (an earlier class it builds on)
            if node.name in self.package:
                own = f"ours:{node.name}#{len(self.definitions)}"
                self.definitions.append(own)
                marks = (marks - {"van_edu"}) | {own}
            self.marks[node.name] = marks
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._record_checks(node.iter)
            self._assign(node.target, self._marks_of(node.iter))
            for child in node.body + node.orelse:
                self.statement(child)
        elif isinstance(node, (ast.With, ast.AsyncWith, ast.If, ast.While, ast.Try)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.statement(child)
                elif isinstance(child, ast.ExceptHandler):
                    for grandchild in child.body:
                        self.statement(grandchild)
                elif isinstance(child, ast.withitem):
                    if child.optional_vars is not None:
                        self._assign(child.optional_vars, self._marks_of(child.context_expr))
                else:
                    self._record_checks(child)
        else:
            self._record_checks(node)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    self._assign(target, self._marks_of(node.value))
            elif isinstance(node, ast.AugAssign):
                self._assign(node.target, self._marks_of(node.value) | self._marks_of(node.target))


def unchecked_redefinitions(cells: list[str], package: set[str]) -> list[str]:
    """The package names that ``cells`` define without a later check against van_edu's (in order)."""
    reader = _RedefinitionChecks(package)
    for source in cells:
        for node in ast.parse(source).body:
            reader.statement(node)
    return [m.removeprefix("ours:").split("#")[0] for m in reader.definitions if m not in reader.checked]


def test_package_code_is_not_redefined_without_a_check(notebook):
    """A notebook may build a package class or function by hand to teach it, under the same name,
    only if a check after it compares what it computes with van_edu's (``unchecked_redefinitions``)."""
    path, nb = notebook
    cells = [_python(_source(c)) for c in _code_cells(nb)]
    assert unchecked_redefinitions(cells, _package_names()) == [], (
        f"{path.name} redefines van_edu's classes or functions without asserting they equal the package's")


CHECKED = ["import torch\nfrom torch.testing import assert_close\nimport van_edu.lka",
           "class LKA(torch.nn.Module):\n    pass",
           "x = torch.randn(1, 8, 9, 9)\nours, theirs = LKA(8), van_edu.lka.LKA(8)",
           "with torch.no_grad():\n    assert_close(ours(x), theirs(x))"]


@pytest.mark.parametrize("cells, unchecked", [
    (CHECKED, []),
    # a check in the defining cell, after the definition, comparing with van_edu's
    (["import van_edu.lka\nclass LKA:\n    pass\nassert LKA().f() == van_edu.lka.LKA(8).f()"], []),
    # through a notebook helper that asserts, and a loop over pairs
    (["from van_edu.models import create_model as make\ndef same(a, b):\n    assert a == b",
      "class Mlp:\n    pass", "for ours, theirs in [(Mlp(), make('m'))]:\n    same(ours, theirs)"], []),
    # any assert after it, but not about it
    (["import van_edu.lka\nclass LKA:\n    pass\nassert 1 + 1 == 2"], ["LKA"]),
    # about it, but not against van_edu
    (CHECKED[:2] + ["x = 1\nours, theirs = LKA(8), LKA(8)", CHECKED[3]], ["LKA"]),
    # against van_edu, but about something else
    (CHECKED[:2] + ["ours, theirs = torch.nn.Identity(), van_edu.lka.LKA(8)", CHECKED[3]], ["LKA"]),
    # the check comes before the definition
    ([CHECKED[0], CHECKED[2].replace("LKA(8), ", "torch.nn.Identity(), "),
      "assert_close(ours(x), theirs(x))\nclass LKA:\n    pass"], ["LKA"]),
    # defined again after the check: the second definition is unchecked
    (CHECKED + ["class LKA:\n    pass"], ["LKA"]),
    # a name imported from van_edu and then redefined is the notebook's from then on
    (["from van_edu.lka import LKA\nimport van_edu.lka\nclass LKA:\n    pass\nassert LKA(8) == LKA(8)"], ["LKA"]),
], ids=["checked", "same cell", "helper and loop", "unrelated assert", "not against van_edu",
        "another object", "check before", "redefined after", "shadowed import"])
def test_the_redefinition_check_needs_a_later_comparison_with_the_package(cells, unchecked):
    assert unchecked_redefinitions(cells, {"LKA", "Mlp"}) == unchecked


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
