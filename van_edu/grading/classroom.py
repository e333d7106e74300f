"""Grading a class: many notebooks at once, a journal so that nothing finished is lost, shards, the CSV.

* :func:`grade_folder` grades every ``FOLDER/<learner>/**/*.ipynb`` (or ``FOLDER/<learner>.ipynb``),
  ``jobs`` at a time, each in its own box (and, with ``jobs > 1``, its own grader process);
* each result is written at once, atomically, to the **journal** (``FOLDER/.van-edu-journal/``,
  one JSON file per notebook), named by a key made of the submission's hash, the source's hash, the
  grader's version (a hash of the course's code) and the limits: ``resume=True`` takes what the
  journal already holds for a key and grades only the rest, so a run killed at learner 300 of 400
  goes on from there. A notebook the grader itself failed on is not journaled: a resumed run retries it;
* ``shard=(k, n)`` grades only the learners whose name hashes to share ``k`` of ``n``, so a large
  class can be spread over machines (a SLURM array, a Kubernetes indexed job); :func:`merge`
  joins the shards' journals into one CSV. Each run draws its own secret seed for the hidden
  tests (a shard's, and a resumed run's, differ from the others') unless one is given; the CSV's rows
  (:func:`class_rows`) and the learners' feedback come from the journal's entries, whichever run wrote them.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import secrets
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from ..errors import VanEduError
from ..fileio import atomic_write_text
from .grader import _read_text, can_hide, grade_notebook, load_sources
from .limits import Limits
from .scores import GradeReport, TaskResult, feedback, first_line, rows_to_csv, write_json
from .scores import gradescope as scores_gradescope

__all__ = ["grade_folder", "merge", "class_rows", "write_feedback", "JOURNAL", "grader_version", "default_jobs"]

JOURNAL = ".van-edu-journal"


def grader_version() -> str:
    """The grader's version: the package's, and a hash of the course's code (the checks, the references
    they compare with, the copy a box gets: a change to any changes it)."""
    from .. import __version__
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def default_jobs(memory_mb: int) -> int:
    """Notebooks at once: one per core, as far as the available memory allows half a kernel's limit each."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        avail = 2 * memory_mb
    return max(1, min(os.cpu_count() or 1, avail // max(1, memory_mb // 2)))


def _submissions(folder: Path) -> dict[str, list[Path]]:
    """Learner -> notebooks: ``folder/<learner>/**/*.ipynb`` or ``folder/<learner>.ipynb``."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints, hidden folders, the journal
            continue
        out.setdefault(rel.parts[0] if len(rel.parts) > 1 else path.stem, []).append(path)
    return out


def _in_shard(learner: str, shard: tuple[int, int]) -> bool:
    return int(hashlib.sha256(learner.encode()).hexdigest(), 16) % shard[1] == shard[0] - 1


def _key(notebook: str, text: str | None, sources: dict, limits: Limits, forbid_reference: bool, version: str) -> str:
    """The journal's key of a result: which file, its content, the sources, the limits and the grader."""
    digest = hashlib.sha256(json.dumps([notebook, text]).encode("utf-8", "surrogatepass"))
    for stem in sorted(sources):  # the sources as read (which one a notebook answers is decided when graded)
        digest.update(stem.encode() + json.dumps(sources[stem][1], sort_keys=True).encode())
    digest.update(json.dumps([asdict(limits), forbid_reference, version]).encode())
    return digest.hexdigest()


def _grade_one(job: dict) -> dict:
    """One notebook's journal entry (run in a worker process with ``jobs > 1``), with the seconds it took."""
    entry, start = {k: job[k] for k in ("key", "learner", "notebook")}, time.monotonic()
    try:
        report = grade_notebook(job["path"], job["source_dir"], limits=job["limits"], secret=job["secret"],
                                forbid_reference=job["forbid_reference"], text=job["text"], sources=job["sources"],
                                hide=[job["folder"]])
    except VanEduError as err:
        return {**entry, "note": first_line(str(err), 300)}
    except Exception as err:  # a crash of the grader's own code on this file: the class goes on, retried on resume
        return {**entry, "failed": True, "note": f"{Path(job['notebook']).name}: the grader failed on it "
                                                 f"({type(err).__name__}: {first_line(str(err), 200)}); scored 0"}
    return {**entry, "failed": report.failed, "set": Path(report.source).stem, "report": report,
            "seconds": round(time.monotonic() - start, 2)}


def _report(entry: dict, folder: Path) -> GradeReport | None:
    """The report of a journal entry (without its cells), or None for a notebook that was not graded."""
    data = entry.get("report")
    if not isinstance(data, dict):
        return data if isinstance(data, GradeReport) else None
    return GradeReport(str(folder / entry["notebook"]), data["source"], [TaskResult(**t) for t in data["tasks"]],
                       box=data.get("box", {}))


def _write(journal: Path, entry: dict) -> None:
    report = entry.get("report")
    data = {**entry, "report": None if report is None else {**report.to_json(), "source": report.source}}
    atomic_write_text(journal / f"{entry['key']}.json", json.dumps(data, indent=1) + "\n")


def _read_journal(journal: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(journal.glob("*.json")):
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            _report(entry, journal)  # an entry whose report cannot be read is not one
            out[entry["key"]] = entry
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a file that is not an entry (the writes are atomic: no torn ones)
    return out


def _graded(entries: list[dict], folder: Path) -> tuple[list[dict], dict, dict[str, list[TaskResult]]]:
    """The entries in the order of their notebooks' paths, their reports (by ``id``), and each exercise set
    anyone submitted with its tasks."""
    entries = sorted(entries, key=lambda e: e["notebook"])
    reports = {id(e): _report(e, folder) for e in entries}
    sets: dict[str, list[TaskResult]] = {}
    for e in entries:
        if reports[id(e)] is not None:
            sets.setdefault(e["set"], reports[id(e)].tasks)
    return entries, reports, dict(sorted(sets.items()))


def class_rows(entries: list[dict], folder: Path) -> list[dict]:
    """One row per learner (in the order of their notebooks' paths): each task's score, the total, notes.

    A learner's ``max_score`` counts every exercise set that anyone submitted, so a missing notebook
    scores 0 rather than shrinking the total.
    """
    entries, reports, sets = _graded(entries, folder)
    columns = [t.name for tasks in sets.values() for t in tasks]
    max_total = sum(t.max_score for tasks in sets.values() for t in tasks)
    learners: dict[str, list[dict]] = {}
    for e in entries:
        learners.setdefault(e["learner"], []).append(e)
    rows = []
    for learner, own in learners.items():
        graded = {e["set"]: reports[id(e)] for e in own if reports[id(e)] is not None}
        scores = {t.name: t.score for r in graded.values() for t in r.tasks}
        notes = [e["note"] for e in own if e.get("note")]
        notes += [f"{stem}: no submission" for stem in sets if stem not in graded]
        rows.append({"learner": learner, "score": sum(scores.values()), "max_score": max_total,
                     **{name: scores.get(name, 0.0) for name in columns}, "notes": "; ".join(notes)})
    return rows


def write_feedback(csv_path, entries: list[dict], rows: list[dict], folder: Path, show_hidden: bool = False,
                   gradescope=None) -> None:
    """``feedback/<learner>.md`` beside the CSV: each learner's tasks, points and reasons (:func:`.scores.feedback`);
    with ``gradescope``, also ``<gradescope>/<learner>/results.json`` (:func:`.scores.gradescope`)."""
    out = Path(csv_path).parent / "feedback"
    out.mkdir(exist_ok=True)
    entries, reports, sets = _graded(entries, folder)
    for row in rows:
        own = [reports[id(e)] for e in entries if e["learner"] == row["learner"] and reports[id(e)] is not None]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", row["learner"]).lstrip(".") or "_"
        if name != row["learner"]:  # two names made the same by the replacement stay apart
            name += "-" + hashlib.sha256(row["learner"].encode()).hexdigest()[:8]
        atomic_write_text(out / f"{name}.md", feedback(row["learner"], own, row["notes"], show_hidden) + "\n")
        if gradescope:
            (Path(gradescope) / name).mkdir(parents=True, exist_ok=True)
            write_json(scores_gradescope(row["score"], own, sets, row["notes"], show_hidden),
                       Path(gradescope) / name / "results.json")


def grade_folder(folder, csv_path=None, source_dir=None, progress=None, *, limits: Limits | None = None,
                 forbid_reference: bool = False, jobs: int = 1, resume: bool = False, shard=(1, 1),
                 secret: int | None = None, show_hidden: bool = False,
                 gradescope=None) -> tuple[list[dict], list[GradeReport]]:
    """Grade every learner's notebooks (of this shard); one CSV row per learner (to ``csv_path`` if given).

    Every submission and source is read into memory before the first kernel starts, and each
    notebook runs in its own box, so one learner's code can reach neither another's notebook nor
    the CSV (written atomically at the end): the scores do not depend on the order or on ``jobs``.
    ``progress(entry, total)`` is called after each notebook (graded, or taken from the journal);
    ``gradescope``: a folder for each learner's Gradescope ``results.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VanEduError(f"no such folder: {folder}")
    k, n = shard
    if not 1 <= k <= n:
        raise VanEduError(f"a shard is K/N with 1 <= K <= N, got {k}/{n}")
    can_hide(limits or Limits(), forbid_reference)
    sources = load_sources(source_dir)
    learners = _submissions(folder)
    if not learners:
        raise VanEduError(f"no notebooks (*.ipynb) under {folder}")
    journal = folder / JOURNAL
    journal.mkdir(exist_ok=True)
    limits, version = limits or Limits(), grader_version()
    secret = secrets.randbits(64) if secret is None else secret
    journaled = _read_journal(journal)
    done = journaled if resume else {}
    entries, todo = [], []
    for learner, paths in learners.items():
        if not _in_shard(learner, shard):
            continue
        for path in paths:
            text, notebook = _read_text(path), str(path.relative_to(folder))
            key = _key(notebook, text, sources, limits, forbid_reference, version)
            if key in done:
                entries.append(done[key])
                continue
            todo.append({"key": key, "learner": learner, "notebook": notebook, "path": path, "folder": folder.resolve(),
                         "source_dir": source_dir, "limits": limits, "secret": secret, "text": text,
                         "forbid_reference": forbid_reference, "sources": sources})
    current = {e["key"] for e in entries} | {job["key"] for job in todo}
    for key, old in journaled.items():  # this shard's results of earlier submissions, settings or graders
        if _in_shard(old.get("learner", ""), shard) and key not in current:
            (journal / f"{key}.json").unlink(missing_ok=True)
    total = len(entries) + len(todo)
    for entry in entries if progress else ():
        progress(entry, total)
    for entry in _run(todo, jobs):
        if not entry.get("failed"):
            _write(journal, entry)
        entries.append(entry)
        if progress:
            progress(entry, total)
    rows = _write_class(entries, folder, csv_path, show_hidden, gradescope)
    return rows, [r for r in (_report(e, folder) for e in entries) if r is not None]


def _run(todo: list[dict], jobs: int):
    """Each job's entry as it finishes: here, one by one, or in ``jobs`` worker processes."""
    if jobs <= 1 or len(todo) <= 1:
        yield from map(_grade_one, todo)
        return
    # spawn, not fork: the grader holds torch's threads, and a forked copy of them can deadlock
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_orphan_guard,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_grade_one, job) for job in todo]
        for job, future in zip(todo, futures):
            try:
                yield future.result()
            except Exception as err:  # the worker died (killed, out of memory): retried on resume
                yield {**{k: job[k] for k in ("key", "learner", "notebook")}, "failed": True,
                       "note": f"{Path(job['notebook']).name}: the grader's worker failed ({type(err).__name__}); "
                               "scored 0, run again with --resume"}


def _orphan_guard(grader: int) -> None:
    """In a worker: end this process (and so its box: bubblewrap dies with its parent, an ipykernel polls
    its own) as soon as the grader is gone. A worker outlives a grader that was SIGKILLed (an OOM kill)
    and would grade on, and then wait, forever."""
    def watch():
        while os.getppid() == grader:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True, name="orphan-guard").start()


def merge(journals, csv_path=None, show_hidden: bool = False, gradescope=None) -> list[dict]:
    """Join the journals of several shards (their folders) into one CSV's rows, written to ``csv_path``."""
    entries: dict[str, dict] = {}
    for j in journals:
        j = Path(j)
        journal = j / JOURNAL if (j / JOURNAL).is_dir() else j
        if not journal.is_dir():
            raise VanEduError(f"no journal at {j} (expected a class folder holding {JOURNAL}/, or that folder)")
        entries.update(_read_journal(journal))
    if not entries:
        raise VanEduError(f"the journals {', '.join(map(str, journals))} hold no results")
    return _write_class(list(entries.values()), Path(journals[0]), csv_path, show_hidden, gradescope)


def _write_class(entries: list[dict], folder: Path, csv_path, show_hidden: bool, gradescope=None) -> list[dict]:
    """The CSV's rows; with ``csv_path``, the CSV (atomically) and each learner's feedback beside it."""
    rows = class_rows(entries, folder)
    if csv_path:
        atomic_write_text(csv_path, rows_to_csv(rows))
        write_feedback(csv_path, entries, rows, folder, show_hidden, gradescope)
    return rows
