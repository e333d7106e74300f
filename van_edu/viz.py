"""Plots. Each has a title and axis labels with units; functions return the matplotlib Figure."""
from __future__ import annotations

from collections import defaultdict

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg")  # files, not windows, outside notebooks
import matplotlib.pyplot as plt  # noqa: E402

FAMILY_COLOURS = {"van": "tab:red", "vit": "tab:blue", "resnet": "tab:green"}

__all__ = ["plot_learning_curves", "plot_tradeoff", "FAMILY_COLOURS"]


def _colour(run: dict) -> str:
    return FAMILY_COLOURS.get(run.get("family"), "tab:gray")


def plot_learning_curves(runs: list[dict], title: str = "Test accuracy during training"):
    """Test accuracy (%) against epoch, one line per run; runs carry a ``history`` list."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    labelled = set()
    for run in runs:
        hist = [h for h in run.get("history", []) if h.get("test_accuracy") is not None]
        if not hist:
            continue
        label = run["model"] if run["model"] not in labelled else None
        labelled.add(run["model"])
        ax.plot([h["epoch"] for h in hist], [100 * h["test_accuracy"] for h in hist], marker="o",
                color=_colour(run), alpha=0.8, label=label)
    ax.set(title=title, xlabel="epoch", ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_tradeoff(runs: list[dict], x_key: str, x_label: str, title: str, log_x: bool = True):
    """Mean test accuracy (%) of each model against ``x_key`` of its runs, error bars = std over seeds."""
    by_model = defaultdict(list)
    for run in runs:
        by_model[run["model"]].append(run)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for model, group in by_model.items():
        accs = [100 * r["test_accuracy"] for r in group]
        xs = [r[x_key] for r in group]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
        ax.errorbar(sum(xs) / len(xs), mean, yerr=std, fmt="o", capsize=4, color=_colour(group[0]), label=model)
    if log_x:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=x_label, ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
