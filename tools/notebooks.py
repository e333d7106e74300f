"""Keep the course notebooks stamped, executed and clean.

    python tools/notebooks.py stamp                 # badges + Colab install lines from COURSE_REPO
    python tools/notebooks.py execute [--quick] [NOTEBOOK ...]
                                                    # run each in a fresh kernel, save its outputs
    python tools/notebooks.py times [NOTEBOOK ...]  # how long each takes in test mode (not saved)

``execute`` runs the notebooks in order, each from a fresh ``python3`` kernel started in
``notebooks/`` (execution counts 1..n), then cleans them: kernelspec ``python3``, no widget state,
no per-cell timing metadata. Without ``--quick`` it runs them as readers see them
(``VAN_EDU_QUICK`` unset); with it, in test mode. The repository URL is read from
``van_edu.notebook.COURSE_REPO``, its only home.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))

from van_edu.notebook import QUICK_ENV, badge_markdown, install_lines  # noqa: E402

BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
KERNEL_LOG = ("[IPKernelApp]",)
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def course_notebooks(names=None) -> list[Path]:
    """The notebooks named (paths or bare file names), or all ``notebooks/NN_*.ipynb`` in order."""
    if names:
        return [Path(n) if Path(n).exists() else NOTEBOOKS / n for n in names]
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def stamp(nb, name: str) -> bool:
    """Rewrite the badge of the first cell and the ``%pip install`` lines of the first code cell
    from ``COURSE_REPO``. Returns whether anything changed."""
    head = nb.cells[0]
    source = head.source
    badge = badge_markdown(name)
    if BADGE_RE.search(source):
        source = BADGE_RE.sub(lambda _: badge, source, count=1)
    else:
        source = source.rstrip("\n") + "\n\n" + badge
    changed = source != head.source
    head.source = source

    code = first_code_cell(nb)
    lines = code.source.split("\n")
    pips = [i for i, line in enumerate(lines) if line.lstrip().startswith("%pip install")]
    if not pips:
        raise SystemExit(f"{name}: the first code cell has no '%pip install' line to stamp")
    indent = lines[pips[0]][: len(lines[pips[0]]) - len(lines[pips[0]].lstrip())]
    new = [indent + line for line in install_lines()]
    lines = lines[: pips[0]] + new + [l for i, l in enumerate(lines[pips[0]:], pips[0]) if i not in pips]
    source = "\n".join(lines)
    changed |= source != code.source
    code.source = source
    return changed


def clean(nb) -> None:
    """Kernelspec python3, no widget state, no timing metadata in the cells, no kernel log lines."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
        if cell.cell_type == "code":
            outputs = []
            for out in cell.get("outputs", []):
                out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
                if out.output_type == "stream" and out.name == "stderr":
                    # the kernel's own log lines (e.g. its TCP warning) are not the cell's output
                    kept = [l for l in out.text.splitlines(keepends=True) if not l.startswith(KERNEL_LOG)]
                    if not kept:
                        continue
                    out.text = "".join(kept)
                outputs.append(out)
            cell.outputs = outputs


def run(path: Path, quick: bool, save: bool, timeout: int = 1200) -> float:
    """Execute one notebook from a fresh kernel; save it (cleaned) if ``save``. Returns seconds."""
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get(QUICK_ENV)
    if quick:
        os.environ[QUICK_ENV] = "1"
    else:
        os.environ.pop(QUICK_ENV, None)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if env_before is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = env_before
    if save:
        clean(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stamp").add_argument("notebooks", nargs="*")
    ex = sub.add_parser("execute")
    ex.add_argument("--quick", action="store_true", help=f"test mode ({QUICK_ENV}=1)")
    ex.add_argument("notebooks", nargs="*")
    sub.add_parser("times").add_argument("notebooks", nargs="*")
    args = parser.parse_args(argv)

    paths = course_notebooks(args.notebooks)
    if args.command == "stamp":
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            if stamp(nb, path.name):
                nbformat.write(nb, path)
                print(f"stamped {path.name}")
        return 0
    total = 0.0
    for path in paths:
        seconds = run(path, quick=args.command == "times" or args.quick, save=args.command == "execute")
        total += seconds
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    print(f"total: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
