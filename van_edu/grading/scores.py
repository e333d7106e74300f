"""The grader's scores: each task's result and reason, the report, and the CSV and JSON it writes.

``score`` turns what happened to a notebook's cells and checks (the grader's records) into one
:class:`TaskResult` per task: its points when the check passed, else 0 and the reason a learner
can act on, with a note on the learner's own cell that failed first.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fileio import atomic_write_text
from .assign import Task
from .kernel import CellRun

__all__ = ["CellRecord", "TaskResult", "GradeReport", "score", "first_line", "clean", "csv_cell", "box_summary",
           "rows_to_csv", "write_json", "feedback", "gradescope"]


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def clean(text) -> str:
    """Learner-provided text made inert for a terminal, a spreadsheet or a JSON reader: control
    characters (``\\r``, ANSI's ESC, ...), zero-width and bidi marks are written as ``\\xNN`` / ``\\uNNNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256 else f"\\u{ord(m[0]):04x}", str(text))


def csv_cell(value) -> str:
    """A CSV cell: numbers as numbers; text cleaned, and a leading = + - @ quoted so no spreadsheet runs it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _num(value)
    text = clean(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@dataclass
class CellRecord(CellRun):
    """One step of the grader's plan: a learner's cell (and what running it did) or a task's check."""

    code: str = ""
    kind: str = "learner"      # "learner" (a cell of the notebook) or "test" (a task's check)
    task: str | None = None    # the task a test step checks, or a learner cell answers
    number: int | None = None  # 1-based cell number in the learner's notebook (None: an appended test)
    reason: str | None = None  # why a test step's check failed; None when it passed
    hidden_only: bool = False  # it failed on hidden inputs only


@dataclass
class TaskResult:
    name: str
    score: float
    max_score: float
    message: str  # holds learner text (their exceptions, their values): cleaned on the way in
    hidden: bool = False  # failed on hidden inputs only (the learner's feedback shows them if the teacher asks)

    def __post_init__(self):
        self.message = clean(self.message)


@dataclass
class GradeReport:
    notebook: str
    source: str
    tasks: list[TaskResult]
    cells: list = field(default_factory=list, repr=False)  # CellRecord per executed cell
    box: dict = field(default_factory=dict)                # the protections the kernel ran with
    failed: bool = False                                   # scored 0 by the grader's own failure

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tasks)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tasks)

    def to_json(self) -> dict:
        return {"notebook": clean(self.notebook), "score": self.score, "max_score": self.max_score,
                "tasks": [asdict(t) for t in self.tasks], "box": self.box}

    def errors(self) -> list[tuple[int, str, str]]:
        """(cell number, exception name, message) of every cell that raised, timed out or crashed."""
        return [(r.number, *(r.error or (("Timeout", "timed out") if r.timed_out else ("DeadKernel", "the kernel died"))))
                for r in self.cells if r.error or r.timed_out or r.died]

    def format(self) -> str:
        width = max([len(t.name) for t in self.tasks] + [5])
        rows = [f"  {t.name:<{width}}  {_num(t.score):>3}/{_num(t.max_score):<3} {t.message}" for t in self.tasks]
        return "\n".join([f"{clean(self.notebook)}  (tests from {clean(self.source)})", *rows,
                          f"  {'total':<{width}}  {_num(self.score):>3}/{_num(self.max_score):<3}"])


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def first_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, cleaned (:func:`clean`), at most ``limit`` characters."""
    text = clean((text or "").strip().split("\n")[0])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _learner_note(records: list[CellRecord], task: str, timeout: int) -> str | None:
    for rec in records:
        if rec.kind != "learner" or rec.task != task or rec.number is None:
            continue
        if rec.timed_out:
            return f"your cell {rec.number} timed out after {timeout} s"
        if rec.died:
            return f"your cell {rec.number} crashed the kernel and was skipped"
        if rec.error and rec.error[0] != "NotImplementedError":
            return f"your cell {rec.number} raised {rec.error[0]}: {first_line(rec.error[1], 160)}"
    return None


def score(tasks: list[Task], records: list[CellRecord], missing: set[str], timeout: int,
          output_limit: int) -> list[TaskResult]:
    results = []
    for task in tasks:
        rec = next(r for r in records if r.kind == "test" and r.task == task.name)
        reason = rec.skipped or rec.reason
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
        results.append(TaskResult(task.name, 0.0, task.points, reason, rec.hidden_only and not rec.skipped))
    return results


def _md(text) -> str:
    """Learner text for a Markdown table cell: cleaned, with no HTML, links or emphasis of its own."""
    text = clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + c if c in "\\`*_[]|#" else c for c in text)


def _why(t: TaskResult, show_hidden: bool) -> str:
    """A failure's reason for the learner: a failure on the hidden tests only says so, without their inputs,
    unless ``show_hidden``."""
    return t.message if not t.hidden or show_hidden else (
        "fails one of the hidden tests (the visible ones pass): try the cases they do not cover")


def feedback(learner: str, reports: list[GradeReport], notes: str = "", show_hidden: bool = False) -> str:
    """A learner's report in Markdown: each set's tasks, their points, and why each failure failed."""
    total, top = sum(r.score for r in reports), sum(r.max_score for r in reports)
    lines = [f"# {_md(learner)}: {_num(total)}/{_num(top)}", ""] + ([f"Notes: {_md(notes)}", ""] if notes else [])
    for r in reports:
        lines += [f"## {_md(Path(r.source).stem)}: {_num(r.score)}/{_num(r.max_score)}", "",
                  "| task | points | result |", "|---|---|---|"]
        lines += [f"| {_md(t.name)} | {_num(t.score)}/{_num(t.max_score)} | {_md(_why(t, show_hidden))} |"
                  for t in r.tasks] + [""]
    return "\n".join(lines)


def gradescope(score: float, reports: list[GradeReport], sets: dict, notes: str = "", show_hidden: bool = False) -> dict:
    """A learner's results in Gradescope's ``results.json`` format: a test per task (``<set>: <task>``) and
    one per set in ``sets`` (stem -> tasks) they did not hand in, scored 0; learner text cleaned."""
    stems = {Path(r.source).stem: r for r in reports}
    tests = [{"name": f"{stem}: {t.name}", "score": t.score, "max_score": t.max_score, "output": _why(t, show_hidden)}
             for stem, r in stems.items() for t in r.tasks]
    tests += [{"name": stem, "score": 0.0, "max_score": sum(t.max_score for t in tasks), "output": "no submission"}
              for stem, tasks in sets.items() if stem not in stems]
    return {"score": score, "output": clean(notes), "tests": tests}


def box_summary(box: dict) -> str:
    """The protections a submission's kernel ran with, in one line."""
    parts = ["bubblewrap: own PID and network namespaces, no capabilities, only the system and Python mounted"
             if box.get("sandbox") else f"no bubblewrap ({box.get('no_bwrap', 'not tried')}): Landlock and limits",
             f"uid {box.get('uid', '?')}"]
    if box.get("memory_mb"):
        parts.append(f"memory {box['memory_mb']} MiB")
    parts.append(f"processes: {box['procs']}" if box.get("procs") else "processes: not limited (root without cgroups)")
    abi = box.get("landlock", 0)
    if abi:
        parts.append(f"Landlock ABI {abi}: files" + (", network" if abi >= 4 else "") + (", signals" if abi >= 6 else ""))
    elif not box.get("sandbox"):
        parts.append("no Landlock: files, network and signals not confined (use a container)")
    if "hidden" in box:
        parts.append(f"--forbid-reference: {box['hidden']} of the course's functions and classes hidden")
    return "; ".join(parts)


def rows_to_csv(rows: list[dict]) -> str:
    buf, header = io.StringIO(), list(rows[0]) if rows else ["learner", "score", "max_score"]
    csv.writer(buf).writerows([[csv_cell(k) for k in header]] + [[csv_cell(row.get(k, "")) for k in header] for row in rows])
    return buf.getvalue()


def write_json(obj, path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
