"""Grading throughput: a class of learners x every exercise set, graded by `van-edu grade`.

A class of ``--learners`` learners, each handing in every set (even-numbered learners the
solution copies, odd ones the untouched student copies), is graded with ``--jobs 1`` and with
``--jobs 2`` (notebooks per minute, each run in a fresh copy of the class), then once more with
``--jobs 1`` killed (SIGKILL, kernels included) half-way and resumed with ``--resume``: the time the
resumed run took against a full run's, and so the time the journal saved. The time per set is the
mean of its notebooks' grading times in the ``--jobs 1`` run's journal; the slowest set is named.
``--sandbox`` picks the box (bubblewrap, the Landlock fallback, or auto), and the figures name the
box each run had and the machine. Usage (on a quiet machine)::

    python benchmarks/grading_throughput.py --learners 10 --out benchmarks/results/grading_throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXERCISES = Path(__file__).resolve().parents[1] / "exercises"


def make_class(root: Path, learners: int) -> int:
    for i in range(learners):
        folder = "solutions" if i % 2 == 0 else "student"
        (root / f"learner{i:02d}").mkdir(parents=True)
        for nb in sorted((EXERCISES / folder).glob("*.ipynb")):
            shutil.copy(nb, root / f"learner{i:02d}" / nb.name)
    return learners * len(list((EXERCISES / "source").glob("*.ipynb")))


SANDBOX = ["--sandbox", "auto"]


def command(root: Path, jobs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "van_edu", "grade", str(root), "--jobs", str(jobs), "--secret", "7", *SANDBOX, *extra]


def timed(argv: list[str]) -> tuple[float, str]:
    """(seconds, the run's box line) of one grading run."""
    start = time.monotonic()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - start, next((line for line in out.splitlines() if line.startswith("(box:")), "")


def per_set_seconds(root: Path) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for path in (root / ".van-edu-journal").glob("*.json"):
        entry = json.loads(path.read_text())
        times.setdefault(Path(entry["notebook"]).stem, []).append(entry["seconds"])
    return {k: round(sum(v) / len(v), 2) for k, v in sorted(times.items())}


def killed_and_resumed(root: Path, notebooks: int) -> tuple[float, int]:
    """(seconds of the resumed run, notebooks the killed run had finished)."""
    journal = root / ".van-edu-journal"
    run = subprocess.Popen(command(root, 1), start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    while run.poll() is None and len(list(journal.glob("*.json"))) < notebooks // 2:
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    finished = len(list(journal.glob("*.json")))
    return timed(command(root, 1, "--resume"))[0], finished


def machine() -> str:
    import torch

    from van_edu.runtime import machine_description
    return (f"{machine_description('cpu')}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=int, default=10)
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "landlock"), default="auto")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    SANDBOX[1] = args.sandbox
    results: dict = {"machine": machine(), "learners": args.learners}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            root = Path(tmp) / f"jobs{jobs}"
            n = make_class(root, args.learners)
            seconds, box = timed(command(root, jobs))
            results[f"jobs{jobs}"] = {"notebooks": n, "seconds": round(seconds, 1),
                                      "notebooks_per_minute": round(60 * n / seconds, 1)}
            if jobs == 1:
                results["box"] = box.removeprefix("(box: ").removesuffix(")")
                results["seconds_per_set"] = per_set_seconds(root)
                results["slowest_set"] = max(results["seconds_per_set"], key=results["seconds_per_set"].get)
        root = Path(tmp) / "resumed"
        n = make_class(root, args.learners)
        seconds, finished = killed_and_resumed(root, n)
        results["resume"] = {"finished_before_the_kill": finished, "resumed_run_seconds": round(seconds, 1),
                             "full_run_seconds": results["jobs1"]["seconds"],
                             "seconds_saved": round(results["jobs1"]["seconds"] - seconds, 1)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
