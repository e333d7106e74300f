"""The grader of one notebook: run it in its own box, ask it for its answers, judge them here.

1. Its exercise set is found (notebook metadata, file name, then the test cells it holds) and the
   teacher's source read; every file is read before any learner code runs.
2. A fresh kernel in a fresh folder, with limits (:mod:`.kernel`, :mod:`.box`), runs the learner's
   cells in order; errors do not stop the run; shell escapes are skipped; test cells (found by their
   text, never by the notebook's metadata) never run there.
3. Where each test cell stands (or at the end, for a deleted one) the task's check runs here, in the
   grader's process: it asks the kernel to call the learner's code on inputs drawn from a secret
   seed, gets the outputs back as data (:mod:`.wire`) and compares them with the reference.
4. A task scores its points when its check passes, else 0 with the reason. With ``forbid_reference``
   the box's copy of the course lacks the code the notebook's tasks ask for (each check names it), so
   an answer that calls it fails its check. Nothing a learner writes, and no failure of the grader's
   own code on one notebook, stops the grading: the notebook scores 0 with the reason.
"""
from __future__ import annotations

import ast
import random
import re
import secrets
from pathlib import Path

import nbformat

from ..errors import VanEduError
from ._core import CheckFailed, Session, SubjectMissing, _NotAnswered
from .assign import Task, default_exercises_dir, tasks_of, words
from .box import find_bwrap, landlock_abi
from .check import CHECKS
from .kernel import BoxedKernel, KernelLost, Limits
from .limits import MAX_NOTEBOOK_MB
from .scores import CellRecord, GradeReport, TaskResult, first_line, score

__all__ = ["TaskResult", "GradeReport", "grade_notebook", "can_hide"]


# --------------------------------------------------------------------------- the execution plan
_DEFINES = re.compile(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=(?!=)", re.MULTILINE)  # top-level names a cell binds
_SHELL_LINE = re.compile(r"^(\s*)(!|%pip\b|%conda\b|%%bash\b|%%sh\b|%%script\b)(.*)$", re.MULTILINE)


def _neutralize(code: str) -> str:
    """Skip shell escapes and package installs: the grading environment is fixed."""
    return _SHELL_LINE.sub(lambda m: f"{m[1]}pass  # skipped by the grader: {m[2]}{m[3][:60]}", code)


def _plan(nb, tasks: list[Task]) -> tuple[list[CellRecord], set[str]]:
    """The learner's cells, with a check step where each of the source's test cells stands, found by its
    text (never by the notebook's metadata, which the learner can edit); returns the steps and the tasks
    whose test cell the learner's notebook lacked (checked at the end)."""
    tests = {words(t.visible): t.name for t in tasks if words(t.visible)}
    steps, placed = [], set()
    for number, cell in enumerate(nb.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        task = tests.get(words(cell.source))
        if task is None:
            steps.append(CellRecord(code=_neutralize(cell.source), number=number))
        elif task not in placed:
            steps.append(CellRecord(kind="test", task=task, number=number))
            placed.add(task)
    missing = {t.name for t in tasks} - placed
    steps += [CellRecord(kind="test", task=t.name) for t in tasks if t.name in missing]
    subjects, following = {check_of(t)[1]: t.name for t in tasks}, None
    for step in reversed(steps):  # a learner cell answers the task whose subject it defines, else the next one
        if step.kind == "test":
            following = step.task
        else:
            defined = [subjects[n] for m in _DEFINES.finditer(step.code) for n in m.groups() if n in subjects]
            step.task = defined[0] if defined else following
    return steps, missing


def check_of(task: Task):
    """The check a source's test cell calls, and the name of the learner's object it checks.

    The test cell reads ``check.<name>(<subject>, ...)``; the first such call is the task's check.
    """
    try:
        tree = ast.parse(task.test_code)
    except SyntaxError as err:
        raise VanEduError(f"the source's test cell for {task.name} does not parse: {err}") from None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "check"
                and node.func.attr in CHECKS and node.args and isinstance(node.args[0], ast.Name)):
            return CHECKS[node.func.attr], node.args[0].id
    raise VanEduError(f"the source's test cell for {task.name} calls none of the course's checks "
                      f"(expected check.<task>(<your answer>) with one of {', '.join(sorted(CHECKS))})")


def _judge(kernel: BoxedKernel, task: Task, secret: int) -> tuple[str | None, bool]:
    """Run the task's check here, against the kernel: ``(None, False)`` when it passed, else the reason
    and whether only hidden tests failed (the visible ones, asked again alone, pass)."""
    check, subject = check_of(task)
    session = Session(kernel.ask, subject)
    try:
        check.verdict(session, True, random.Random(f"{secret}:{task.name}"))
        return None, False
    except _NotAnswered as err:
        return f"not answered yet ({err} still raises NotImplementedError)", False
    except SubjectMissing as err:
        return (f"{first_line(str(err))}; the tests call `{subject}` by name: did you rename or delete "
                "it, or did the cell that defines it fail?"), False
    except CheckFailed as err:
        reason = first_line(str(err), 500) or "the check failed"
    except KernelLost as err:
        return str(err), False
    except Exception as err:  # a bug in a check must not crash the grading of a class
        return f"the check itself failed ({type(err).__name__}: {first_line(str(err), 200)}); tell the teacher", False
    try:
        check.verdict(session, False, random.Random(0))
    except Exception:
        return reason, False
    return reason, True


# --------------------------------------------------------------------------- finding the source
def load_sources(source_dir=None, source=None) -> dict:
    """``stem -> (path, notebook)``: the teacher's sources in ``source_dir`` (default ``exercises/source``),
    or the one ``source``, read now."""
    folder = Path(source_dir) if source_dir else default_exercises_dir() / "source"
    paths = [Path(source)] if source else sorted(folder.glob("*.ipynb"))
    if not paths:
        raise VanEduError(f"no exercise sources (*.ipynb) in {folder}; pass --source with the folder of "
                          "the teacher's source notebooks")
    try:
        return {p.stem: (p, nbformat.read(p, as_version=4)) for p in paths}
    except Exception as err:
        raise VanEduError(f"cannot read a source notebook: {type(err).__name__}: {err}") from None


def find_source(nb, path: Path, sources: dict) -> str:
    """The exercise set (a key of ``sources``) a submission answers: by metadata, file name, then the
    test cells it holds."""
    meta = nb.get("metadata") if nb is not None else None
    meta = meta.get("van_edu") if isinstance(meta, dict) else None
    name = meta.get("exercise_set") if isinstance(meta, dict) else None
    if isinstance(name, str) and name in sources:
        return name
    for stem in sorted(sources, key=len, reverse=True):
        if stem in path.stem:
            return stem
    if nb is not None:
        texts = {words(c.source) for c in nb.cells}
        overlap = {stem: sum(words(t.visible) in texts for t in tasks_of(src)) for stem, (_, src) in sources.items()}
        best = max(overlap, key=overlap.get)
        if overlap[best]:
            return best
    raise VanEduError(f"{path}: cannot tell which exercise set this is (known: {', '.join(sources)}); "
                      "keep the file name of the student copy")


# --------------------------------------------------------------------------- public entry points
def _read_notebook(text: str | None):
    """(notebook, None) or (None, why it cannot be read) for a submission's text."""
    if text is None:
        return None, "the file could not be read"
    try:
        nb = nbformat.reads(text, as_version=4)
        if not isinstance(nb.get("cells"), list) or not all(isinstance(c, dict) for c in nb.cells):
            raise ValueError("it has no list of cells")
        for cell in nb.cells:
            if not isinstance(cell.get("source", ""), (str, list)):
                raise ValueError("a cell's source is not text")
    except Exception as err:  # not JSON, not a notebook: the learner's file, graded 0
        return None, f"{type(err).__name__}: {first_line(str(err), 200)}"
    return nb, None


def _read_text(path: Path) -> str | None:
    """The file's text, or None when it cannot be read or is larger than MAX_NOTEBOOK_MB."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_NOTEBOOK_MB * 2**20 + 1)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace") if len(data) <= MAX_NOTEBOOK_MB * 2**20 else None


def grade_notebook(path, source_dir=None, source=None, *, limits: Limits | None = None,
                   forbid_reference: bool = False, secret: int | None = None, text: str | None = None,
                   sources: dict | None = None, hide=()) -> GradeReport:
    """Grade one submitted notebook; never raises for the learner's mistakes.

    ``source`` (a path) forces the source notebook; otherwise it is looked up in ``source_dir``
    (default ``exercises/source``). ``limits`` (default :class:`~.limits.Limits`) bound the
    submission's kernel; ``secret`` seeds the hidden tests' inputs
    (default: a fresh secret). ``text`` and ``sources`` are the submission's and the sources'
    contents when the caller has already read them (a folder is read whole before grading starts);
    ``hide``, folders the kernel may not read besides the notebook's own and the sources' (its class).
    """
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise VanEduError(f"no such notebook: {path}")
        text = _read_text(path)
    nb, unreadable = _read_notebook(text)
    sources = sources or load_sources(source_dir, source)
    try:
        src_path, src = sources[Path(source).stem if source else find_source(nb, path, sources)]
    except VanEduError:
        if nb is None:
            raise VanEduError(f"{path}: not a Jupyter notebook ({unreadable})") from None
        raise
    tasks = tasks_of(src)
    for task in tasks:
        check_of(task)  # a source whose tests call no check is the teacher's problem: say so now
    if nb is None:
        return _zero(path, src_path, tasks, f"the notebook could not be read ({unreadable})")
    secret = secrets.randbits(64) if secret is None else secret
    limits = limits or Limits()
    can_hide(limits, forbid_reference)
    try:
        return _grade(path, text, nb, src_path, tasks, limits, secret, forbid_reference, hide)
    except Exception as err:  # the grader's own failure on odd input costs this notebook only, with a reason
        return _zero(path, src_path, tasks, f"the grader could not grade this notebook ({type(err).__name__}: "
                                            f"{first_line(str(err), 200)}); tell the teacher", failed=True)


def can_hide(limits: Limits, forbid_reference: bool) -> None:
    """Refuse ``forbid_reference`` where the box cannot hide the installed course from the kernel, and
    ``--sandbox bwrap`` where bubblewrap cannot run."""
    if limits.sandbox == "bwrap" and not find_bwrap()[0]:
        raise VanEduError(f"--sandbox bwrap: bubblewrap cannot run here ({find_bwrap()[1]}); leave --sandbox out "
                          "to grade in the fallback (Landlock and limits)")
    if forbid_reference and not ((limits.sandbox != "landlock" and find_bwrap()[0]) or landlock_abi()):
        raise VanEduError("--forbid-reference needs bubblewrap or Landlock (Linux 5.13+) to hide the course's own "
                          "code from the learner's kernel, and this machine has neither: grade in a Linux VM or container")


def _zero(path, src_path, tasks: list[Task], why: str, failed: bool = False) -> GradeReport:
    """Every task 0 with one reason (``failed``: the grader's fault, so a resumed run grades it again)."""
    return GradeReport(str(path), str(src_path), [TaskResult(t.name, 0.0, t.points, why) for t in tasks],
                       failed=failed)


def _grade(path: Path, text: str, nb, src_path, tasks: list[Task], limits: Limits, secret: int,
           forbid_reference: bool, hide=()) -> GradeReport:
    """Run the notebook in its box, judge each task where its test cell stands, and score them."""
    steps, missing = _plan(nb, tasks)
    by_name = {t.name: t for t in tasks}
    hide = [Path(src_path).resolve().parent, path.resolve().parent, default_exercises_dir(), *map(Path, hide)]
    code = sorted({name for t in tasks for name in check_of(t)[0].hides}) if forbid_reference else []
    with BoxedKernel(path.name, text, limits, hide, code) as kernel:
        if forbid_reference and not (kernel.protections.get("landlock") or kernel.protections.get("sandbox")):
            raise VanEduError("neither bubblewrap nor Landlock confined the kernel: --forbid-reference cannot hide the course")
        for step in steps:  # each record filled in: the check's reason, or what running the cell did
            if step.kind == "test":
                step.reason, step.hidden_only = _judge(kernel, by_name[step.task], secret)
            else:
                kernel.run(step.code, step)
        box = {**kernel.protections, **({"hidden": len(code)} if forbid_reference else {})}
    results = score(tasks, steps, missing, limits.timeout, limits.output_limit)
    return GradeReport(str(path), str(src_path), results, steps, box)
