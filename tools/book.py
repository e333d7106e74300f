"""``make book``: the course as a static website, from the committed, executed notebooks.

    python tools/book.py [--out build/book] [--src build/book-src]

Assembles the book's sources in ``--src`` (never edits the repository) and runs Sphinx with
warnings as errors into ``--out``:

* ``index.md``: the README's course part (what the course covers, the two commands) and the map
  of the notebooks, each with its first heading and opening sentence;
* ``chapters/``: the course notebooks as committed (MyST-NB renders their stored outputs; nothing is
  re-executed), each with its Colab badge (the badge image served from the book itself) and a
  link to download the notebook;
* ``chapters/references.md``: the works the notebooks cite (``notebooks/references.md``);
* ``exercises/``: the student copies and how to grade them (``exercises/README.md``);
* ``numbers.md``: the paper's tables as ``van_edu`` computes them (B0-B6, Table 2);
* ``api.md``: the ``van_edu`` names the notebooks import, from their docstrings.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_SETUP = "# On Colab (only there), bring the course along"   # the first line of every notebook's set-up cell
# A link from a notebook to a repository file that is not a page of the book ("../README.md"):
# in the book it points at that file in the course repository.
REPO_FILE_LINK = re.compile(r"\]\(\.\./(?!exercises/README\.md)([^)\s#]+)(#[^)\s]*)?\)")


def _first_heading(nb) -> tuple[str, str]:
    """(title, opening sentence) of a notebook, from its first markdown cell."""
    text = next(c.source for c in nb.cells if c.cell_type == "markdown")
    lines = [line for line in text.split("\n") if line.strip()]
    title = lines[0].lstrip("# ").strip()
    body = " ".join(line for line in lines[1:] if not line.startswith(("[![", "**", "-", "#")))
    sentence = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0] if body else ""
    return title, sentence


def _readme_course_part() -> str:
    """The README from its title to the end of "Set-up: two commands"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    end = text.index("\n## What is where")
    return text[:end].strip() + "\n"


def _repository_link(match: re.Match) -> str:
    """``](../FILE#anchor)`` -> ``](COURSE_REPO/blob/COURSE_BRANCH/FILE#anchor)``."""
    from van_edu.notebook import COURSE_BRANCH, COURSE_REPO

    return f"]({COURSE_REPO}/blob/{COURSE_BRANCH}/{match[1]}{match[2] or ''})"


def _alt_text(cell, section: str) -> str:
    """A figure's alt text: what the notebook stored beside its image (``van_edu.notebook.describe_figure``,
    the figure's titles, axes and legends), or, for a figure stored before it did, the section it is in."""
    told = [out["data"].get("text/plain", "") for out in cell.outputs if "image/png" in out.get("data", {})]
    told = [t for t in told if t and not t.startswith("<Figure size")]
    return " ".join(told) if told else f'A figure of the section "{section}".'


def _chapter(src: Path, dest: Path, badge_path: str) -> None:
    """A notebook for the book: the Colab badge drawn from the book, a download link added, the
    Colab set-up cell's code folded (MyST-NB's ``hide-input``; its printed environment stays), alt
    text on every figure (:func:`_alt_text`)."""
    nb = nbformat.read(src, as_version=4)
    section = nb.cells[0].source.split("\n")[0].lstrip("# ") if nb.cells else src.stem
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            section = next((line.lstrip("# ") for line in cell.source.split("\n") if line.startswith("#")), section)
            cell.source = cell.source.replace("](../exercises/README.md)", "](../exercises/index.md)")
            cell.source = REPO_FILE_LINK.sub(_repository_link, cell.source)
            if BADGE in cell.source:
                cell.source = cell.source.replace(BADGE, badge_path)
                cell.source += f"\n\n{{download}}`Download this notebook <{src.name}>`"
        elif any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            cell.metadata.setdefault("mystnb", {})["image"] = {"alt": _alt_text(cell, section)}
        if cell.cell_type == "code" and cell.source.startswith(COLAB_SETUP):  # set-up, not lesson: folded in the book only
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    # code cells hold IPython (! and % lines): highlight them as such, executed or not
    nb.metadata["language_info"] = {**nb.metadata.get("language_info", {}), "name": "python",
                                    "pygments_lexer": "ipython3"}
    nbformat.write(nb, dest)


def _notebook_imports() -> dict[str, list[str]]:
    """module -> the names the course notebooks import from it (``from van_edu.X import a``)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.split("\n"):
                m = re.match(r"\s*from (van_edu[\w.]*) import ([\w, ]+)", line)
                if m:
                    found.setdefault(m.group(1), set()).update(n.strip() for n in m.group(2).split(",") if n.strip())
    return {k: sorted(v) for k, v in sorted(found.items())}


def _api_page() -> str:
    import importlib
    import inspect

    parts = ["# The `van_edu` API\n", "The names the notebooks import, with their docstrings.\n"]
    for module, names in _notebook_imports().items():
        mod = importlib.import_module(module)
        members = [n for n in names if inspect.isfunction(getattr(mod, n, None)) or
                   inspect.isclass(getattr(mod, n, None))]
        if not members:
            continue
        parts.append(f"## `{module}`\n")
        parts.append("```{eval-rst}\n" + "\n".join(
            f".. auto{'class' if inspect.isclass(getattr(mod, n)) else 'function'}:: {module}.{n}\n"
            + ("   :members:\n" if inspect.isclass(getattr(mod, n)) else "")
            for n in members) + "```\n")
    return "\n".join(parts)


def _numbers_page() -> str:
    from van_edu.complexity import table2, variant_table

    rows = variant_table(resolution=224, macs=True)
    lines = ["# The paper's numbers, computed\n",
             "Computed from `van_edu`'s modules when this book was built, next to the paper's values.\n",
             "## VAN B0–B6 (Table 5): parameters with a 1000-class head, multiply-adds at 224×224\n",
             "| variant | parameters | paper (M) | GMACs | paper GFLOPs | paper top-1 % |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['paper_params_m']:.1f} | {r['gmacs']:.3f} | "
                     f"{r['paper_gflops']:.1f} | {r['paper_top1']:.1f} |")
    lines += ["", "## Table 2: parameters of a 21×21 convolution (biases ignored), counted from modules\n",
              "| C | standard | paper | MobileNet | paper | VAN (K=21, d=3) | paper |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table2():
        lines.append(f"| {r['C']} | {r['standard']:,} | {r['paper_standard']:,} | {r['mobilenet']:,} | "
                     f"{r['paper_mobilenet']:,} | {r['van']:,} | {r['paper_van']:,} |")
    return "\n".join(lines) + "\n"


def assemble(src: Path) -> None:
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "docs", src)
    chapters = src / "chapters"
    chapters.mkdir()
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for nb in notebooks:
        _chapter(nb, chapters / nb.name, "../_static/colab-badge.svg")
    shutil.copy(ROOT / "notebooks" / "references.md", chapters / "references.md")   # the notebooks link it
    exercises = src / "exercises"
    exercises.mkdir()
    student = sorted((ROOT / "exercises" / "student").glob("*.ipynb"))
    for nb in student:
        _chapter(nb, exercises / nb.name, "../_static/colab-badge.svg")
    grading = (ROOT / "exercises" / "README.md").read_text(encoding="utf-8")
    (exercises / "index.md").write_text(
        grading.replace("# Exercises with autograded solutions", "# Exercises", 1)
        + "\n```{toctree}\n:maxdepth: 1\n:caption: The student copies\n\n"
        + "\n".join(nb.stem for nb in student) + "\n```\n", encoding="utf-8")
    course_map = ["## The chapters\n", "| | chapter | what it does |", "|---|---|---|"]
    for nb in notebooks:
        title, sentence = _first_heading(nbformat.read(nb, as_version=4))
        course_map.append(f"| {nb.name[:2]} | [{title}](chapters/{nb.stem}) | {sentence} |")
    toc = ("\n```{toctree}\n:maxdepth: 1\n:caption: Chapters\n:hidden:\n\n"
           + "\n".join(f"chapters/{nb.stem}" for nb in notebooks) + "\n```\n"
           "\n```{toctree}\n:maxdepth: 1\n:caption: More\n:hidden:\n\nexercises/index\nchapters/references\nnumbers\napi\n```\n")
    (src / "index.md").write_text(_readme_course_part() + "\n" + "\n".join(course_map) + "\n" + toc
                                  + "\nAlso here: [the exercises](exercises/index), [the references](chapters/references), [the paper's numbers, "
                                  "computed](numbers) and [the `van_edu` API](api).\n", encoding="utf-8")
    (src / "numbers.md").write_text(_numbers_page(), encoding="utf-8")
    (src / "api.md").write_text(_api_page(), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "book"))
    parser.add_argument("--src", default=str(ROOT / "build" / "book-src"))
    args = parser.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    assemble(src)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src), str(out)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
