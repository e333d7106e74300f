"""From one source notebook per exercise set to the student and the solution copies.

The sources use nbgrader's conventions, so a teacher can also feed them to nbgrader itself:

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` is the answer; the student copy
  gets ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` in its place (same indentation);
* code between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` is left out of both copies
  and run only by the grader;
* cell metadata ``nbgrader: {grade, grade_id, points, solution, locked, schema_version}``: a
  test cell (``grade: true``) is one task, named by its ``grade_id``, worth ``points``.

``python -m van_edu.grading generate`` (:func:`main`) writes ``exercises/student/`` and ``exercises/solutions/``
(unexecuted, same file names); ``python -m van_edu.grading check`` fails when they are stale.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..errors import VanEduError

__all__ = ["Task", "tasks_of", "student_copy", "solution_copy", "generate", "out_of_sync",
           "validate_source", "default_exercises_dir", "SOLUTION_STUB"]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SOLUTION_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def default_exercises_dir() -> Path:
    """``exercises/`` of the repository this package was installed from (an editable install)."""
    return Path(__file__).resolve().parents[2] / "exercises"


@dataclass(frozen=True)
class Task:
    """One graded task: the ``grade_id`` of its test cell, its points, the test code (hidden included),
    and the test cell as the student copy shows it (how the grader finds it in a submission)."""

    name: str
    points: float
    test_code: str
    visible: str


def nbgrader_meta(cell) -> dict:
    """A cell's ``nbgrader`` metadata; {} when it is missing or not a mapping (a learner's file can hold anything)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_test_cell(cell) -> bool:
    m = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(m.get("grade")) and not m.get("solution")


def is_answer_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def _replace_blocks(source: str, begin: str, end: str, replacement) -> str:
    """Replace each ``begin`` ... ``end`` block (marker lines included) by ``replacement(indent)`` lines."""
    out, inside, indent = [], False, ""
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == begin and not inside:
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.extend(replacement(indent))
        elif stripped == end and inside:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise VanEduError(f"a {begin!r} has no matching {end!r}")
    return "\n".join(out)


def _drop_marker_lines(source: str, begin: str, end: str) -> str:
    return "\n".join(line for line in source.split("\n") if line.strip() not in (begin, end))


def words(code: str) -> str:
    """``code`` without blank lines and trailing spaces: how a test cell's text is compared."""
    return "\n".join(line.rstrip() for line in code.split("\n") if line.strip())


def _visible(cell_source: str) -> str:
    return _replace_blocks(cell_source, BEGIN_HIDDEN, END_HIDDEN, lambda indent: []).rstrip("\n")


def _clean(nb, exercise_set: str):
    nb = copy.deepcopy(nb)
    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": {"name": "python"},
                                      "van_edu": {"exercise_set": exercise_set}})
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.from_dict({k: v for k, v in cell.metadata.items() if k in ("nbgrader", "tags")})
        cell.id = nbgrader_meta(cell).get("grade_id") or f"cell-{i:02d}"  # stable ids: stable files
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    return nb


def student_copy(nb, exercise_set: str):
    """Answers replaced by stubs, hidden tests removed, no outputs."""
    nb = _clean(nb, exercise_set)
    for cell in nb.cells:
        if is_answer_cell(cell) and cell.cell_type == "markdown":
            cell.source = MARKDOWN_STUB
        elif cell.cell_type == "code":
            cell.source = _visible(_replace_blocks(cell.source, BEGIN_SOLUTION, END_SOLUTION,
                                                   lambda indent: [indent + s for s in SOLUTION_STUB]))
    return nb


def solution_copy(nb, exercise_set: str):
    """Answers kept (markers removed), hidden tests removed, no outputs."""
    nb = _clean(nb, exercise_set)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = _visible(_drop_marker_lines(cell.source, BEGIN_SOLUTION, END_SOLUTION))
    return nb


def tasks_of(nb) -> list[Task]:
    """The graded tasks of a source notebook, in order (one per test cell)."""
    return [Task(nbgrader_meta(c)["grade_id"], float(nbgrader_meta(c).get("points", 0)),
                 _drop_marker_lines(c.source, BEGIN_HIDDEN, END_HIDDEN), _visible(c.source))
            for c in nb.cells if is_test_cell(c)]


def validate_source(nb, name: str = "source") -> None:
    """Raise VanEduError when a source breaks the conventions above."""
    ids, problems = set(), []
    for i, cell in enumerate(nb.cells):
        m = nbgrader_meta(cell)
        gid = m.get("grade_id")
        if m:
            if not gid or not re.fullmatch(r"[A-Za-z0-9_-]+", gid):
                problems.append(f"cell {i}: nbgrader grade_id {gid!r} must be letters, digits, _ or -")
            if gid in ids:
                problems.append(f"cell {i}: duplicate grade_id {gid!r}")
            ids.add(gid)
        text = cell.source
        if cell.cell_type == "code" and is_answer_cell(cell) != (BEGIN_SOLUTION in text):
            problems.append(f"cell {i} ({gid}): solution cells, and only they, hold {BEGIN_SOLUTION}")
        if BEGIN_HIDDEN in text and not is_test_cell(cell):
            problems.append(f"cell {i} ({gid}): hidden tests belong in a test cell (grade: true)")
        if is_test_cell(cell) and not m.get("points"):
            problems.append(f"cell {i} ({gid}): a test cell needs points")
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            if text.count(begin) != text.count(end):
                problems.append(f"cell {i} ({gid}): unbalanced {begin!r} / {end!r}")
    tests = [words(t.visible) for t in tasks_of(nb)]
    if not tests:
        problems.append("no test cells (nbgrader grade: true)")
    if not all(tests) or len(set(tests)) < len(tests):  # the grader finds a submission's test cells by their text
        problems.append("each test cell needs visible code of its own")
    if problems:
        raise VanEduError(f"{name}: " + "; ".join(problems))


def _sync(source_dir, out_dir, write: bool) -> tuple[list[Path], list[str]]:
    """The copies the sources make, and what is out of sync (copies missing, stale, or without a source);
    with ``write``, the missing and stale copies written and those without a source deleted."""
    out_dir = Path(out_dir) if out_dir else default_exercises_dir()
    source_dir = Path(source_dir) if source_dir else out_dir / "source"
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise VanEduError(f"no source notebooks in {source_dir}")
    targets, problems = [], []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        validate_source(nb, path.name)
        for folder, copy_of in (("student", student_copy), ("solutions", solution_copy)):
            target, text = out_dir / folder / path.name, nbformat.writes(copy_of(nb, path.stem)) + "\n"
            targets.append(target)
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            problems.append(f"{target} differs from what {path.name} generates" if target.exists() else
                            f"{target} is missing")
            if write:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    for folder in ("student", "solutions"):
        for extra in sorted((out_dir / folder).glob("*.ipynb")):
            if extra not in targets:
                problems.append(f"{extra} has no source")
                if write:
                    extra.unlink()
    return targets, problems


def generate(source_dir: Path | str | None = None, out_dir: Path | str | None = None) -> list[Path]:
    """Write the student and solution copies of every source; returns their paths.

    Copies whose source was removed are deleted, so the folders mirror ``source/``.
    """
    return _sync(source_dir, out_dir, write=True)[0]


def out_of_sync(source_dir: Path | str | None = None, out_dir: Path | str | None = None) -> list[str]:
    """Generated copies that are missing, stale or orphaned (empty when all are in sync)."""
    return _sync(source_dir, out_dir, write=False)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m van_edu.grading",
                                     description="Generate exercises/student and exercises/solutions from exercises/source.")
    parser.add_argument("action", choices=["generate", "check"],
                        help="generate: write the copies; check: exit 1 if they are out of sync")
    parser.add_argument("--exercises", default=None,
                        help=f"the exercises folder holding source/ (default {default_exercises_dir()})")
    args = parser.parse_args(argv)
    try:
        if args.action == "generate":
            paths = generate(out_dir=args.exercises)
            print(f"wrote {len(paths)} notebooks under {paths[0].parent.parent}")
            return 0
        problems = out_of_sync(out_dir=args.exercises)
    except VanEduError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print(*problems, sep="\n")
        print("run `python -m van_edu.grading generate` to regenerate them", file=sys.stderr)
    return 1 if problems else 0

