"""What every course notebook needs first: the repository's address, test mode and a set-up call.

The repository URL lives here and nowhere else: the notebooks' "Open in Colab" badges and their
Colab install lines are stamped from ``COURSE_REPO`` by ``tools/notebooks.py stamp``, and
``tests/test_notebooks_meta.py`` checks that every notebook agrees with it.

Test mode: ``VAN_EDU_QUICK=1`` in the environment sets ``QUICK``; notebooks then shrink sizes,
resolutions and epochs (``pick(full, quick)``) but run the same code. The notebook tests
(nbval) turn it on in the repository's ``conftest.py``.
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
import warnings

__all__ = ["COURSE_REPO", "COURSE_BRANCH", "COLAB_DEPS", "QUICK", "QUICK_ENV", "pick", "setup",
           "colab_url", "badge_markdown", "install_lines", "colab_lines", "COURSE_DIR_ENV", "in_colab",
           "describe_figure"]

# PLACEHOLDER: the course's public repository. Change it here only, then run
# `python tools/notebooks.py stamp` to rewrite every notebook's badge and install line.
COURSE_REPO = "https://github.com/van-edu/van-course"
COURSE_BRANCH = "main"

# What Colab needs besides van_edu itself: the package's dependencies except torch (Colab's own
# torch, built for its GPU, is kept: van_edu is installed with --no-deps). Colab already has most
# of these, and pip leaves a package that satisfies the bound alone. Kept equal to pyproject.toml's
# dependencies minus torch (tests/test_notebooks_meta.py checks it).
COLAB_DEPS = ("numpy>=1.24", "einops>=0.7", "torchinfo>=1.8", "matplotlib>=3.7", "datasets>=2.16",
              "huggingface_hub>=0.20", "tqdm>=4.64")

QUICK_ENV = "VAN_EDU_QUICK"
QUICK = os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def pick(full, quick):
    """``quick`` in test mode (``VAN_EDU_QUICK=1``), ``full`` otherwise: one switch, same code."""
    return quick if QUICK else full


def in_colab() -> bool:
    """Whether this runs inside Google Colab."""
    return "google.colab" in sys.modules


def _repo_path(repo: str = COURSE_REPO) -> str:
    """``owner/name`` of a GitHub URL."""
    return repo.rstrip("/").removeprefix("https://github.com/").removesuffix(".git")


def colab_url(notebook: str, repo: str = COURSE_REPO, branch: str = COURSE_BRANCH,
              folder: str = "notebooks") -> str:
    """The Colab address that opens ``<folder>/<notebook>`` from the course repository."""
    return f"https://colab.research.google.com/github/{_repo_path(repo)}/blob/{branch}/{folder}/{notebook}"


def badge_markdown(notebook: str, repo: str = COURSE_REPO, branch: str = COURSE_BRANCH,
                   folder: str = "notebooks") -> str:
    """The "Open in Colab" badge, in Markdown, for the first cell of ``<folder>/<notebook>``."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook, repo, branch, folder)})")


COURSE_DIR_ENV = "VAN_EDU_COURSE_DIR"  # where the Colab set-up put the course (sources.py reads it)


def install_lines(repo: str = COURSE_REPO, branch: str = COURSE_BRANCH) -> list[str]:
    """The two ``%pip`` lines of the Colab set-up: van_edu from the course's clone without its
    dependencies (so Colab's torch stays), then the other dependencies."""
    deps = " ".join(f'"{d}"' for d in COLAB_DEPS)
    return ['%pip install -q --no-deps "$COURSE_DIR"', f"%pip install -q {deps}"]


def colab_lines(folder: str = "notebooks", repo: str = COURSE_REPO, branch: str = COURSE_BRANCH) -> list[str]:
    """The block of a notebook's first code cell that brings the course along on Colab.

    A notebook opened from its badge has nothing but itself. On Colab (only there) the block makes
    a shallow clone of the course repository in the working folder, installs ``van_edu`` from it
    without its dependencies (Colab's torch, built for its GPU, is kept), installs the others,
    records the clone in ``$VAN_EDU_COURSE_DIR`` (so the bundled data are found) and changes into
    ``folder`` of the clone, so that the notebook then runs exactly as in a clone (bundled data,
    results and exercises at the same relative paths). Run again, it only changes folder. Outside
    Colab it does nothing. ``tools/notebooks.py stamp`` writes it at the top of the first code cell.
    """
    pip_van, pip_deps = install_lines(repo, branch)
    return [
        "# On Colab (only there), bring the course along: a shallow clone of the course repository,",
        "# van_edu installed from it without its dependencies (Colab's torch is kept), then work in it.",
        "import os",
        "import sys",
        "",
        f'if "google.colab" in sys.modules and "{COURSE_DIR_ENV}" not in os.environ:',
        '    COURSE_DIR = os.path.abspath("van-course")',
        '    if not os.path.isdir(os.path.join(COURSE_DIR, "van_edu")):',
        f'        !git clone -q --depth 1 --branch {branch} {repo} "$COURSE_DIR"',
        '    if not os.path.isdir(os.path.join(COURSE_DIR, "van_edu")):',
        f'        raise RuntimeError("could not clone the course from {repo} (is the network on?)")',
        f"    {pip_van}",
        f"    {pip_deps}",
        f'    os.environ["{COURSE_DIR_ENV}"] = COURSE_DIR',
        'if "google.colab" in sys.modules:  # work inside the course, as in a clone',
        f'    os.chdir(os.path.join(os.environ["{COURSE_DIR_ENV}"], "{folder}"))',
    ]


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _plot_defaults() -> None:
    """Small figures (the notebooks are committed with their outputs and must stay small) on a white
    face (readable in JupyterLab's dark theme), each stored with a text description beside its image
    (:func:`describe_figure`, the book's alt text)."""
    import matplotlib as mpl

    mpl.rcParams.update({"figure.figsize": (5.0, 3.5), "figure.dpi": 90, "savefig.dpi": 90,
                         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                         "figure.facecolor": "white", "savefig.facecolor": "white"})
    with contextlib.suppress(ImportError, AttributeError):
        if "inline" in mpl.get_backend():  # first: the inline backend drops Figure's formatters as it starts
            import matplotlib_inline.backend_inline  # noqa: F401
        from IPython import get_ipython
        from matplotlib.figure import Figure

        get_ipython().display_formatter.formatters["text/plain"].for_type(
            Figure, lambda fig, printer, cycle: printer.text(describe_figure(fig)))


def describe_figure(fig) -> str:
    """A figure in words, from its own titles, axis labels and legends: the text a notebook stores
    beside the figure's image, and the book's alt text for it. E.g. ``Figure: "Test accuracy during
    training". Plot 1: x: epoch; y: test accuracy (%); lines: van_mini, vit_mini.``"""
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    parts = [f'Figure: "{title}".' if title else "Figure."]
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i, ax in enumerate(axes[:6], start=1):
        bits = [f'"{ax.get_title()}"' if ax.get_title() else ""]
        bits += [f"{k}: {v}" for k, v in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if v]
        if ax.get_legend() is not None:
            bits.append("legend: " + ", ".join(t.get_text() for t in ax.get_legend().get_texts()[:8]))
        if ax.images:
            bits.append("an image")
        text = "; ".join(b for b in bits if b)
        parts.append(f"Plot {i}: {text}." if text else f"Plot {i}.")
    if len(axes) > 6:
        parts.append(f"{len(axes) - 6} more plots.")
    return " ".join(parts)


def setup(seed: int = 0, device: str = "auto", verbose: bool = True):
    """Prepare a notebook: seed the random generators, set small plot defaults, pick the device.

    Prints the versions, the device and whether test mode is on; returns the ``torch.device``
    (CUDA, then Apple's MPS, then the CPU, unless ``device`` names one).
    """
    import torch

    import van_edu
    from van_edu.runtime import pick_device

    _seed_everything(seed)
    _plot_defaults()
    # datasets imports tqdm.auto, which warns in a kernel without ipywidgets; the course's own bars
    # are text (van_edu.train), so the warning is noise in every notebook's output.
    warnings.filterwarnings("ignore", message="IProgress not found")
    chosen = pick_device(device)
    if verbose:
        where = "Google Colab" if in_colab() else platform.platform(terse=True)
        gpu = f" ({torch.cuda.get_device_name(chosen)})" if chosen.type == "cuda" else ""
        print(f"python {platform.python_version()}, torch {torch.__version__}, "
              f"van_edu {van_edu.__version__} on {where}")
        print(f"device: {chosen}{gpu}; CPU threads: {torch.get_num_threads()}")
        print(f"test mode ({QUICK_ENV}=1): {'on: small sizes' if QUICK else 'off'}")
    return chosen
