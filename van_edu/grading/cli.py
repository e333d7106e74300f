"""The ``van-edu grade`` sub-command, registered on the course's parser by ``add_grade_command``.

``van-edu grade NOTEBOOK`` grades one notebook; ``van-edu grade FOLDER`` a class (``--jobs``,
``--resume``, ``--shard K/N``); ``van-edu grade merge FOLDER...`` joins the shards' journals into one CSV.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import VanEduError
from .limits import Limits


def add_grade_command(sub) -> None:
    d = Limits()
    p = sub.add_parser("grade", help="run a submitted exercise notebook (or a folder of them) and score it")
    p.add_argument("path", nargs="+", metavar="NOTEBOOK", help="a submitted notebook, or a folder of submissions "
                   "(FOLDER/<learner>/*.ipynb or FOLDER/<learner>.ipynb); `merge FOLDER...` joins shards' journals")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON (a list of reports for a folder)")
    p.add_argument("--csv", metavar="OUT", help="for a folder: the CSV with one row per learner "
                   "(default FOLDER/grades.csv)")
    p.add_argument("--source", metavar="DIR", help="the teacher's source notebooks (default exercises/source)")
    for flag, default, text in (
            ("--timeout", d.timeout, "seconds each cell may run"),
            ("--notebook-timeout", d.notebook_timeout, "seconds a whole notebook may run, its checks included"),
            ("--output-limit", d.output_limit, "characters of output a cell may print"),
            ("--memory", d.memory_mb, "MiB of memory (address space) a submission's kernel may use"),
            ("--procs", d.procs, "processes and threads a submission's kernel may have")):
        p.add_argument(flag, type=int, default=default, help=f"{text} (default {default:,})")
    p.add_argument("--forbid-reference", action="store_true", help="the learner's kernel lacks the course's own "
                   "code of each task (what its check names): an answer that uses it scores 0 (needs bubblewrap or Landlock)")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "landlock"), default="auto", help="each kernel's box: "
                   "bubblewrap (bwrap), the fallback of Landlock and limits, or auto: bubblewrap where it can run")
    p.add_argument("--gradescope", metavar="DIR", help="also write Gradescope's results.json: DIR/results.json for "
                   "a notebook, DIR/<learner>/results.json for a folder")
    p.add_argument("--jobs", type=int, default=None, help="notebooks graded at once, each in its own box "
                   "(default: one per core, as far as memory allows)")
    p.add_argument("--resume", action="store_true", help="keep the results the folder's journal already holds "
                   "for these submissions, sources, grader and limits; grade only the rest")
    p.add_argument("--shard", default="1/1", metavar="K/N", help="grade only share K of N of the learners "
                   "(then `van-edu grade merge` the shards' folders)")
    p.add_argument("--feedback-hidden", action="store_true", help="in each learner's feedback/<learner>.md, "
                   "show the inputs of the hidden tests their answers failed (default: say only that one failed)")
    p.add_argument("--secret", type=int, default=None, help="the seed of the hidden tests' inputs (default: a "
                   "fresh secret per run; a fixed one makes them predictable to whoever knows it)")
    p.set_defaults(func=_cmd_grade)


def _limits(args):
    for flag in ("timeout", "notebook_timeout", "output_limit", "memory", "procs"):
        if getattr(args, flag) < 1:
            raise VanEduError(f"--{flag.replace('_', '-')} must be a positive number, got {getattr(args, flag)}")
    if args.memory < 1024:
        raise VanEduError(f"--memory {args.memory} MiB is too little for a kernel with torch; give at least 1024")
    if args.procs < 16:
        raise VanEduError(f"--procs {args.procs} is too few for a Python kernel (it runs several threads); "
                          "give at least 16")
    if args.jobs is not None and args.jobs < 1:
        raise VanEduError(f"--jobs must be at least 1, got {args.jobs}")
    return Limits(timeout=args.timeout, notebook_timeout=args.notebook_timeout, output_limit=args.output_limit,
                  memory_mb=args.memory, procs=args.procs, sandbox=args.sandbox)


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise VanEduError(f"--shard must be K/N with 1 <= K <= N (like 2/8), got {text!r}")
    return int(m[1]), int(m[2])


def _print_rows(rows, csv_path, reports=()) -> None:
    from .scores import box_summary, clean

    for row in rows:
        note = f"  ({clean(row['notes'])})" if row["notes"] else ""
        print(f"{clean(row['learner'])}: total {row['score']:g}/{row['max_score']:g}{note}")
    print(f"{len(rows)} learners; scores in {csv_path}, each learner's feedback in {Path(csv_path).parent / 'feedback'}")
    if reports and reports[0].box:
        print(f"(box: {box_summary(reports[0].box)})")


def _cmd_grade(args) -> int:
    try:
        from .classroom import default_jobs, grade_folder, merge
        from .grader import grade_notebook
        from .scores import box_summary, gradescope, write_json
    except ImportError as err:
        raise VanEduError(f"the grader needs nbclient and ipykernel ({err}); install the course with "
                          "`pip install -e .[dev]`") from err
    if args.path[0] == "merge":
        if len(args.path) < 2 or not args.csv:
            raise VanEduError("usage: van-edu grade merge FOLDER [FOLDER ...] --csv OUT (the shards' class folders)")
        rows = merge(args.path[1:], args.csv, show_hidden=args.feedback_hidden, gradescope=args.gradescope)
        _print_rows(rows, args.csv)
        return 0
    if len(args.path) > 1:
        raise VanEduError(f"grade one notebook or one folder at a time, got {len(args.path)} paths")
    limits, path = _limits(args), Path(args.path[0])
    if not path.exists():
        raise VanEduError(f"no such notebook or folder: {path}")
    if path.is_dir():
        csv_path = Path(args.csv) if args.csv else path / "grades.csv"
        jobs, shard = args.jobs or default_jobs(limits.memory_mb), _shard(args.shard)
        progress = _Progress()
        try:
            rows, reports = grade_folder(path, csv_path, args.source, progress, limits=limits, jobs=jobs, shard=shard,
                                         forbid_reference=args.forbid_reference, resume=args.resume,
                                         secret=args.secret, show_hidden=args.feedback_hidden,
                                         gradescope=args.gradescope)
        finally:
            progress.close()
        _print_rows(rows, csv_path, reports)
        if args.json:
            write_json([r.to_json() for r in reports], args.json)
        return 0
    if args.csv or args.resume or args.shard != "1/1":
        raise VanEduError("--csv, --resume and --shard are for a folder of submissions; use --json for one notebook")
    report = grade_notebook(path, args.source, limits=limits, forbid_reference=args.forbid_reference,
                            secret=args.secret)
    print(report.format())
    print(f"  (box: {box_summary(report.box)})")
    if args.json:
        write_json(report.to_json(), args.json)
    if args.gradescope:
        Path(args.gradescope).mkdir(parents=True, exist_ok=True)
        write_json(gradescope(report.score, [report], {}, show_hidden=args.feedback_hidden),
                   Path(args.gradescope) / "results.json")
    sys.stdout.flush()
    return 0


class _Progress:
    """A line per notebook, and a bar (on stderr) with the notebooks done, the failures and the time left."""

    def __init__(self):
        self.bar, self.failed, self.resumed = None, 0, 0

    def __call__(self, entry: dict, total: int) -> None:
        from tqdm import tqdm

        from .scores import clean
        if self.bar is None:
            self.bar = tqdm(total=total, unit="notebook", file=sys.stderr, dynamic_ncols=True)
        report, journaled = entry.get("report"), isinstance(entry.get("report"), dict)
        self.failed += bool(entry.get("failed"))
        self.resumed += journaled
        if report is None:
            line = f"{clean(entry['learner'])}: {clean(entry.get('note', ''))}"
        else:
            score, top = (report["score"], report["max_score"]) if journaled else (report.score, report.max_score)
            line = f"{clean(entry['learner'])}: {clean(Path(entry['notebook']).name)} {score:g}/{top:g}" + (
                " (from the journal)" if journaled else "")
        self.bar.write(line, file=sys.stdout)
        self.bar.set_postfix(failed=self.failed, resumed=self.resumed)
        self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
