"""The ``van-edu grade`` sub-command, registered on the course's parser by ``add_grade_command``."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import VanEduError


def add_grade_command(sub) -> None:
    from .limits import (
        DEFAULT_MEMORY_MB,
        DEFAULT_NOTEBOOK_TIMEOUT,
        DEFAULT_OUTPUT_LIMIT,
        DEFAULT_PROCS,
        DEFAULT_TIMEOUT,
    )

    p = sub.add_parser("grade", help="run a submitted exercise notebook (or a folder of them) and score it")
    p.add_argument("path", metavar="NOTEBOOK", help="a submitted notebook, or a folder of submissions "
                   "(FOLDER/<learner>/*.ipynb or FOLDER/<learner>.ipynb)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON (a list of reports for a folder)")
    p.add_argument("--csv", metavar="OUT", help="for a folder: the CSV with one row per learner "
                   "(default FOLDER/grades.csv)")
    p.add_argument("--source", metavar="DIR", help="the teacher's source notebooks (default exercises/source)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                   help=f"seconds each cell may run (default {DEFAULT_TIMEOUT})")
    p.add_argument("--notebook-timeout", type=int, default=DEFAULT_NOTEBOOK_TIMEOUT,
                   help=f"seconds a whole notebook may run, its checks included (default {DEFAULT_NOTEBOOK_TIMEOUT})")
    p.add_argument("--output-limit", type=int, default=DEFAULT_OUTPUT_LIMIT,
                   help=f"characters of output a cell may print (default {DEFAULT_OUTPUT_LIMIT:,})")
    p.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB,
                   help=f"MiB of memory (address space) a submission's kernel may use (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--procs", type=int, default=DEFAULT_PROCS,
                   help=f"processes and threads a submission's kernel may have (default {DEFAULT_PROCS})")
    p.add_argument("--forbid-reference", action="store_true",
                   help="score 0 a task whose answer imports or calls the course's own implementation of it")
    p.set_defaults(func=_cmd_grade)


def _cmd_grade(args) -> int:
    try:
        from .grader import grade_folder, grade_notebook
        from .scores import box_summary, clean, write_json
    except ImportError as err:
        raise VanEduError(f"the grader needs nbclient and ipykernel ({err}); install the course with "
                          "`pip install -e .[dev]`") from err
    from .limits import Limits

    for flag in ("timeout", "notebook_timeout", "output_limit", "memory", "procs"):
        if getattr(args, flag) < 1:
            raise VanEduError(f"--{flag.replace('_', '-')} must be a positive number, got {getattr(args, flag)}")
    if args.memory < 1024:
        raise VanEduError(f"--memory {args.memory} MiB is too little for a kernel with torch; give at least 1024")
    if args.procs < 16:
        raise VanEduError(f"--procs {args.procs} is too few for a Python kernel (it runs several threads); "
                          "give at least 16")
    limits = Limits(timeout=args.timeout, notebook_timeout=args.notebook_timeout, output_limit=args.output_limit,
                    memory_mb=args.memory, procs=args.procs)
    path = Path(args.path)
    if not path.exists():
        raise VanEduError(f"no such notebook or folder: {path}")
    if path.is_dir():
        csv_path = Path(args.csv) if args.csv else path / "grades.csv"

        def progress(learner, report):
            print(f"{clean(learner)}: {clean(Path(report.notebook).name)} {report.score:g}/{report.max_score:g}",
                  flush=True)

        rows, reports = grade_folder(path, csv_path, args.source, progress,
                                     limits=limits, forbid_reference=args.forbid_reference)
        for row in rows:
            note = f"  ({clean(row['notes'])})" if row["notes"] else ""
            print(f"{clean(row['learner'])}: total {row['score']:g}/{row['max_score']:g}{note}")
        print(f"{len(rows)} learners; scores in {csv_path}")
        if reports:
            print(f"(box: {box_summary(reports[0].box)})")
        if args.json:
            write_json([r.to_json() for r in reports], args.json)
        return 0
    if args.csv:
        raise VanEduError("--csv is for a folder of submissions; use --json for one notebook")
    report = grade_notebook(path, args.source, limits=limits, forbid_reference=args.forbid_reference)
    print(report.format())
    print(f"  (box: {box_summary(report.box)})")
    if args.json:
        write_json(report.to_json(), args.json)
    sys.stdout.flush()
    return 0
