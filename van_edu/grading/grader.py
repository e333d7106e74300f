"""The grader: run a learner's notebook in a fresh kernel, apply the source's tests, score each task.

How a notebook is graded:

1. Its exercise set is found (notebook metadata, then file name, then the ``grade_id``s it holds)
   and the teacher's source is read from ``exercises/source/``.
2. The learner's cells run in order in a fresh Python kernel (this interpreter), one by one, each
   with a time limit; errors do not stop the run. Each test cell (nbgrader ``grade: true``) is
   replaced by the source's test cell, hidden tests included, so a learner can neither edit nor
   delete the tests; a task whose test cell is missing is tested at the end.
3. A task scores its points when its test cell runs without an exception, within the time limit,
   printing less than the output limit; otherwise 0, with the reason.

Nothing a learner writes can crash the grader: exceptions, syntax errors and missing functions
fail their task; an infinite loop is interrupted at the time limit (and, if it ignores the
interrupt, the kernel is restarted and the earlier cells replayed without it); a crashed kernel
is restarted the same way; output beyond the limit is dropped and fails the task that printed it.
Shell escapes (``!pip ...``, ``%pip``) in learner cells are skipped: grade in an environment that
already has the course installed. Learner code runs with your permissions, as in nbgrader:
grade untrusted submissions in a container.
"""
from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from ..errors import VanEduError
from .assign import Task, default_exercises_dir, is_answer_cell, is_test_cell, tasks_of
from .kernel import CellRun, run_cells
from .limits import DEFAULT_OUTPUT_LIMIT, DEFAULT_TIMEOUT

__all__ = ["TaskResult", "GradeReport", "grade_notebook", "grade_folder", "DEFAULT_TIMEOUT",
           "DEFAULT_OUTPUT_LIMIT"]


@dataclass
class TaskResult:
    name: str
    score: float
    max_score: float
    message: str


@dataclass
class GradeReport:
    notebook: str
    source: str
    tasks: list[TaskResult]
    cells: list = field(default_factory=list, repr=False)  # _CellRecord per executed cell

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tasks)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tasks)

    def to_json(self) -> dict:
        return {"notebook": self.notebook, "score": self.score, "max_score": self.max_score,
                "tasks": [asdict(t) for t in self.tasks]}

    def errors(self) -> list[tuple[int, str, str]]:
        """(cell number, exception name, message) of every cell that raised, timed out or crashed."""
        out = []
        for r in self.cells:
            if r.error:
                out.append((r.number, r.error[0], r.error[1]))
            elif r.timed_out:
                out.append((r.number, "Timeout", "timed out"))
            elif r.died:
                out.append((r.number, "DeadKernel", "the kernel died"))
        return out

    def format(self) -> str:
        width = max([len(t.name) for t in self.tasks] + [5])
        lines = [f"{self.notebook}  (tests from {self.source})"]
        for t in self.tasks:
            lines.append(f"  {t.name:<{width}}  {_num(t.score):>3}/{_num(t.max_score):<3} {t.message}")
        lines.append(f"  {'total':<{width}}  {_num(self.score):>3}/{_num(self.max_score):<3}")
        return "\n".join(lines)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --------------------------------------------------------------------------- the execution plan
@dataclass
class _Step:
    code: str
    kind: str            # "learner", "setup" or "test"
    task: str | None     # the task a test cell tests, or a learner cell answers
    number: int | None   # 1-based cell number in the learner's notebook (None: appended test)


@dataclass
class _CellRecord(CellRun):
    """A step's ``CellRun`` and where it came from."""

    number: int | None = None
    kind: str = "learner"
    task: str | None = None


_SHELL_LINE = re.compile(r"^(\s*)(!|%pip\b|%conda\b|%%bash\b|%%sh\b|%%script\b)(.*)$")


def _neutralize(code: str) -> str:
    """Skip shell escapes and package installs: the grading environment is fixed."""
    lines = []
    for line in code.split("\n"):
        m = _SHELL_LINE.match(line)
        lines.append(f"{m.group(1)}pass  # skipped by the grader: {m.group(2)}{m.group(3)[:60]}" if m else line)
    return "\n".join(lines)


def _plan(nb, tasks: list[Task]) -> tuple[list[_Step], set[str]]:
    """The learner's cells, with the source's tests in place of theirs; returns the steps and the
    tasks whose test cell the learner's notebook lacked (they are appended at the end)."""
    by_name = {t.name: t for t in tasks}
    steps, placed = [], set()
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if is_test_cell(cell) and gid in by_name:
            if gid not in placed:
                steps.append(_Step(by_name[gid].test_code, "test", gid, number))
                placed.add(gid)
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        locked = cell.get("metadata", {}).get("nbgrader", {}).get("locked") and not is_answer_cell(cell)
        steps.append(_Step(_neutralize(source), "setup" if locked else "learner", None, number))
    missing = {t.name for t in tasks} - placed
    for t in tasks:
        if t.name in missing:
            steps.append(_Step(t.test_code, "test", t.name, None))
    following = None  # each learner cell answers the next task tested after it
    for step in reversed(steps):
        if step.kind == "test":
            following = step.task
        elif step.kind == "learner":
            step.task = following
    return steps, missing


# --------------------------------------------------------------------------- scoring
def _first_line(text: str, limit: int = 300) -> str:
    text = (text or "").strip().split("\n")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(rec: _CellRecord, task: str, timeout: int, output_limit: int) -> str | None:
    """Why a test cell failed, for the learner; None when it passed."""
    if rec.skipped:
        return rec.skipped
    if rec.timed_out:
        return f"the tests timed out after {timeout} s (an infinite loop, or far too slow?)"
    if rec.died:
        return "the Python kernel died while testing (os._exit, a crash, or out of memory?)"
    if rec.truncated:
        return f"the tests printed more than {output_limit:,} characters; print less"
    if rec.error is None:
        return None
    ename, evalue = rec.error
    evalue = re.sub(r"\x1b\[[0-9;]*m", "", evalue)
    if evalue.startswith(f"{task}: "):
        evalue = evalue[len(task) + 2:]
    if ename == "NotImplementedError":
        return f"not answered yet ({_first_line(evalue)})"
    if ename == "CheckFailed":
        return _first_line(evalue, 500)
    if ename == "NameError":
        name = re.search(r"name '([^']+)'", evalue)
        what = f"`{name.group(1)}`" if name else "it"
        return (f"NameError: {_first_line(evalue)}; the tests call {what} by name: did you rename or delete "
                "it, or did the cell that defines it fail?")
    return f"{ename}: {_first_line(evalue)}"


def _learner_note(records: list[_CellRecord], task: str, timeout: int) -> str | None:
    for rec in records:
        if rec.kind != "learner" or rec.task != task or rec.number is None:
            continue
        if rec.timed_out:
            return f"your cell {rec.number} timed out after {timeout} s"
        if rec.died:
            return f"your cell {rec.number} crashed the kernel and was skipped"
        if rec.error and rec.error[0] != "NotImplementedError":
            return f"your cell {rec.number} raised {rec.error[0]}: {_first_line(rec.error[1], 160)}"
    return None


def _score(tasks: list[Task], records: list[_CellRecord], missing: set[str], timeout: int,
           output_limit: int) -> list[TaskResult]:
    results = []
    for task in tasks:
        rec = next(r for r in records if r.kind == "test" and r.task == task.name)
        reason = _failure(rec, task.name, timeout, output_limit)
        flooded = [r.number for r in records if r.kind == "learner" and r.task == task.name and r.truncated]
        if reason is None and flooded:
            reason = (f"your cell {flooded[0]} printed more than {output_limit:,} characters of output; "
                      "remove the printing loop")
        if reason is None:
            results.append(TaskResult(task.name, task.points, task.points, "passed"))
            continue
        note = _learner_note(records, task.name, timeout)
        if note and note.split(" raised ")[-1] not in reason:
            reason += f" ({note})"
        if task.name in missing:
            reason += " (your notebook had no test cell for this task; tested at the end)"
        results.append(TaskResult(task.name, 0.0, task.points, reason))
    return results


# --------------------------------------------------------------------------- finding the source
def _sources(source_dir: Path | None) -> dict[str, Path]:
    folder = Path(source_dir) if source_dir else default_exercises_dir() / "source"
    found = {p.stem: p for p in sorted(folder.glob("*.ipynb"))}
    if not found:
        raise VanEduError(f"no exercise sources (*.ipynb) in {folder}; pass --source with the folder of "
                          "the teacher's source notebooks")
    return found


def _grade_ids(nb) -> set[str]:
    return {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}


def find_source(nb, path: Path, sources: dict[str, Path]) -> Path:
    """The source notebook a submission answers: by metadata, file name, then grade_ids."""
    name = (nb.metadata.get("van_edu", {}) or {}).get("exercise_set") if nb is not None else None
    if name in sources:
        return sources[name]
    if path.stem in sources:
        return sources[path.stem]
    for stem in sorted(sources, key=len, reverse=True):
        if stem in path.stem:
            return sources[stem]
    if nb is not None:
        ids = _grade_ids(nb)
        overlap = {stem: len(ids & _grade_ids(nbformat.read(p, as_version=4))) for stem, p in sources.items()}
        best = max(overlap, key=overlap.get)
        if overlap[best]:
            return sources[best]
    raise VanEduError(f"{path}: cannot tell which exercise set this is (known: {', '.join(sources)}); "
                      "keep the file name of the student copy")


# --------------------------------------------------------------------------- public entry points
def grade_notebook(path, source_dir=None, timeout: int = DEFAULT_TIMEOUT,
                   output_limit: int = DEFAULT_OUTPUT_LIMIT, source=None) -> GradeReport:
    """Grade one submitted notebook; never raises for the learner's mistakes.

    ``source`` (a path) forces the source notebook; otherwise it is looked up in ``source_dir``
    (default ``exercises/source``).
    """
    path = Path(path)
    if not path.is_file():
        raise VanEduError(f"no such notebook: {path}")
    nb, unreadable = None, None
    try:
        nb = nbformat.read(path, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as err:  # not JSON, not a notebook: the learner's file, graded 0
        nb, unreadable = None, f"{type(err).__name__}: {_first_line(str(err), 200)}"
    src_path = Path(source) if source else find_source(nb, path, _sources(source_dir))
    src = nbformat.read(src_path, as_version=4)
    tasks = tasks_of(src)
    if nb is None:
        return GradeReport(str(path), str(src_path),
                           [TaskResult(t.name, 0.0, t.points, f"the notebook could not be read ({unreadable})")
                            for t in tasks])
    steps, missing = _plan(nb, tasks)
    with tempfile.TemporaryDirectory(prefix="van-edu-grade-") as cwd:
        runs = run_cells([s.code for s in steps], timeout, output_limit, cwd,
                         replayable=[s.kind != "test" for s in steps])
    records = [_CellRecord(**vars(run), number=s.number, kind=s.kind, task=s.task) for run, s in zip(runs, steps)]
    return GradeReport(str(path), str(src_path), _score(tasks, records, missing, timeout, output_limit), records)


def _submissions(folder: Path) -> dict[str, list[Path]]:
    """Learner -> notebooks: ``folder/<learner>/**/*.ipynb`` or ``folder/<learner>.ipynb``."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints and hidden folders
            continue
        learner = rel.parts[0] if len(rel.parts) > 1 else path.stem
        out.setdefault(learner, []).append(path)
    return out


def grade_folder(folder, csv_path=None, source_dir=None, timeout: int = DEFAULT_TIMEOUT,
                 output_limit: int = DEFAULT_OUTPUT_LIMIT, progress=None) -> tuple[list[dict], list[GradeReport]]:
    """Grade every learner's notebooks; one CSV row per learner (written to ``csv_path`` if given).

    A learner's ``max_score`` counts every exercise set that anyone submitted, so a missing
    notebook scores 0 rather than shrinking the total.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VanEduError(f"no such folder: {folder}")
    sources = _sources(source_dir)
    learners = _submissions(folder)
    if not learners:
        raise VanEduError(f"no notebooks (*.ipynb) under {folder}")
    reports: list[GradeReport] = []
    per_learner: dict[str, dict[str, GradeReport]] = {}
    problems: dict[str, list[str]] = {}
    for learner, paths in learners.items():
        for path in paths:
            try:
                report = grade_notebook(path, source_dir, timeout, output_limit)
            except VanEduError as err:
                problems.setdefault(learner, []).append(str(err))
                continue
            reports.append(report)
            per_learner.setdefault(learner, {})[Path(report.source).stem] = report
            if progress:
                progress(learner, report)
    sets = sorted({stem for r in per_learner.values() for stem in r})
    columns = [t.name for stem in sets for t in tasks_of(nbformat.read(sources[stem], as_version=4))]
    max_total = sum(t.points for stem in sets for t in tasks_of(nbformat.read(sources[stem], as_version=4)))
    rows = []
    for learner in learners:
        graded = per_learner.get(learner, {})
        scores = {t.name: t.score for r in graded.values() for t in r.tasks}
        notes = list(problems.get(learner, []))
        notes += [f"{stem}: no submission" for stem in sets if stem not in graded]
        row = {"learner": learner, "score": sum(scores.values()), "max_score": max_total}
        row.update({name: scores.get(name, 0.0) for name in columns})
        row["notes"] = "; ".join(notes)
        rows.append(row)
    if csv_path:
        Path(csv_path).write_text(rows_to_csv(rows), encoding="utf-8")
    return rows, reports


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["learner", "score", "max_score"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _num(v) if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def write_json(obj, path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
