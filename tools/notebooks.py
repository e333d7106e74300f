"""Keep the course notebooks stamped, executed and clean.

    python tools/notebooks.py stamp [--repo URL] [--branch B]
                                                    # badges + Colab set-up cells from COURSE_REPO
                                                    # (--repo/--branch: first rewrite COURSE_REPO)
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

import van_edu.notebook as course  # noqa: E402
from van_edu.notebook import QUICK_ENV  # noqa: E402

EXERCISE_SOURCES = ROOT / "exercises" / "source"
NOTEBOOK_PY = ROOT / "van_edu" / "notebook.py"
COLAB_IF = 'if "google.colab" in sys.modules'

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


def stamp(nb, name: str, folder: str = "notebooks", repo: str | None = None,
          branch: str | None = None) -> bool:
    """Rewrite the badge of the first cell and the Colab set-up block at the top of the first code
    cell (``van_edu.notebook.colab_lines``) from ``COURSE_REPO`` (or ``repo``/``branch``).
    ``folder`` is where the notebook lives in the repository (the badge opens it there, and the
    set-up changes into it). Returns whether anything changed."""
    repo, branch = repo or course.COURSE_REPO, branch or course.COURSE_BRANCH
    head = nb.cells[0]
    source = head.source
    badge = course.badge_markdown(name, repo, branch, folder)
    if BADGE_RE.search(source):
        source = BADGE_RE.sub(lambda _: badge, source, count=1)
    else:
        source = source.rstrip("\n") + "\n\n" + badge
    changed = source != head.source
    head.source = source

    code = first_code_cell(nb)
    lines = code.source.split("\n")
    rest = lines[_end_of_colab_block(lines):]
    while rest and not rest[0].strip():
        rest = rest[1:]
    if rest and rest[0].startswith("from van_edu.notebook import"):
        rest.insert(0, "# Everywhere: seed the random generators, choose the device, say whether test mode is on.")
    source = "\n".join(course.colab_lines(folder, repo, branch) + [""] + rest)
    changed |= source != code.source
    code.source = source
    return changed


def _end_of_colab_block(lines: list[str]) -> int:
    """Index of the first line after the old set-up (everything up to the last line of the last
    ``if "google.colab" ...`` block), or 0 when the cell has none."""
    ifs = [i for i, line in enumerate(lines) if line.startswith(COLAB_IF)]
    if not ifs:
        return 0
    end = ifs[-1] + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return end


def set_course_repo(repo: str, branch: str | None) -> None:
    """Rewrite ``COURSE_REPO`` (and ``COURSE_BRANCH``) in van_edu/notebook.py, their one home."""
    text = NOTEBOOK_PY.read_text()
    text, n = re.subn(r'^COURSE_REPO = ".*"$', f'COURSE_REPO = "{repo}"', text, count=1, flags=re.M)
    if branch:
        text = re.sub(r'^COURSE_BRANCH = ".*"$', f'COURSE_BRANCH = "{branch}"', text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{NOTEBOOK_PY}: no COURSE_REPO line to rewrite")
    NOTEBOOK_PY.write_text(text)
    course.COURSE_REPO, course.COURSE_BRANCH = repo, branch or course.COURSE_BRANCH


def stamp_all(names=None) -> int:
    """Stamp the course notebooks and the exercise sources, then regenerate the student copies."""
    targets = [(p, "notebooks") for p in course_notebooks(names)]
    if not names:
        targets += [(p, "exercises/student") for p in sorted(EXERCISE_SOURCES.glob("[0-9][0-9]_*.ipynb"))]
    for path, folder in targets:
        nb = nbformat.read(path, as_version=4)
        if stamp(nb, path.name, folder):
            nbformat.write(nb, path)
            print(f"stamped {path.relative_to(ROOT)}")
    if not names:
        from van_edu.grading import generate

        generate()
        print("regenerated exercises/student and exercises/solutions")
    return 0


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
    st = sub.add_parser("stamp")
    st.add_argument("--repo", help="a fork's address, e.g. https://github.com/you/van-course")
    st.add_argument("--branch", help="its branch (default: COURSE_BRANCH, main)")
    st.add_argument("notebooks", nargs="*")
    ex = sub.add_parser("execute")
    ex.add_argument("--quick", action="store_true", help=f"test mode ({QUICK_ENV}=1)")
    ex.add_argument("notebooks", nargs="*")
    sub.add_parser("times").add_argument("notebooks", nargs="*")
    args = parser.parse_args(argv)

    if args.command == "stamp":
        if args.repo:
            if not re.match(r"^https://github\.com/[^/\s]+/[^/\s]+?/?$", args.repo):
                print(f"stamp: --repo must be a GitHub address like https://github.com/you/van-course, "
                      f"got {args.repo!r}", file=sys.stderr)
                return 2
            set_course_repo(args.repo.rstrip("/"), args.branch)
        elif args.branch:
            set_course_repo(course.COURSE_REPO, args.branch)
        return stamp_all(args.notebooks)
    paths = course_notebooks(args.notebooks)
    total = 0.0
    for path in paths:
        seconds = run(path, quick=args.command == "times" or args.quick, save=args.command == "execute")
        total += seconds
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    print(f"total: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
