"""Plots. Each has a title and axis labels with units; functions return the matplotlib Figure."""
from __future__ import annotations

from collections import defaultdict

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg")  # files, not windows, outside notebooks
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .stats import mean_std  # noqa: E402

FAMILY_COLOURS = {"van": "tab:red", "vit": "tab:blue", "resnet": "tab:green"}

__all__ = ["FAMILY_COLOURS", "plot_learning_curves", "plot_tradeoff", "plot_maps", "plot_eq3", "plot_scaling",
           "plot_bars", "plot_image_grid", "plot_history", "plot_confusion", "plot_cam_overlays", "plot_ablation",
           "plot_deletion_curves", "plot_roofline"]


def _colour(run: dict) -> str:
    return FAMILY_COLOURS.get(run.get("family"), "tab:gray")


METRICS = {"test_accuracy": "test accuracy (%)", "test_miou": "test mIoU (%)", "test_map50": "test mAP50 (%)"}


def plot_learning_curves(runs: list[dict], title: str = "Test accuracy during training", metric: str = "test_accuracy"):
    """Test accuracy (or another of ``METRICS``), in %, against epoch, one line per run; runs carry a
    ``history`` list."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    labelled = set()
    for run in runs:
        hist = [h for h in run.get("history", []) if h.get(metric) is not None]
        if not hist:
            continue
        label = run["model"] if run["model"] not in labelled else None
        labelled.add(run["model"])
        ax.plot([h["epoch"] for h in hist], [100 * h[metric] for h in hist], marker="o",
                color=_colour(run), alpha=0.8, label=label)
    ax.set(title=title, xlabel="epoch", ylabel=METRICS[metric])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # whole epochs only
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_tradeoff(runs: list[dict], x_key: str, x_label: str, title: str, log_x: bool = True,
                  metric: str = "test_accuracy"):
    """Mean test accuracy (or another of ``METRICS``, in %) of each model against ``x_key`` of its
    runs, error bars = std over seeds."""
    by_model = defaultdict(list)
    for run in runs:
        by_model[run["model"]].append(run)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for model, group in by_model.items():
        mean, std = mean_std(100 * r[metric] for r in group)
        xs = [r[x_key] for r in group]
        ax.errorbar(sum(xs) / len(xs), mean, yerr=std, fmt="o", capsize=4, color=_colour(group[0]), label=model)
    if log_x:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=x_label, ylabel=METRICS[metric])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_boxes(images, truth, predictions: dict, classes: list[str], title: str = "Predicted boxes on test canvases",
               min_score: float = 0.3):
    """A grid: one column per canvas; the first row the true boxes (``truth``: [n, M, 5] padded
    rows x0, y0, x1, y1, class), then one row per model (``predictions``: model name -> per canvas
    ``boxes``, ``scores``, ``labels``), boxes scoring at least ``min_score``, labelled with class
    and score, one colour per class."""
    import numpy as np
    from matplotlib.patches import Rectangle

    rows = [("truth", None), *predictions.items()]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n, 1.5 * len(rows)), dpi=80, squeeze=False)
    for r, (name, found) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.asarray(images[c]).squeeze(), cmap="gray", vmin=0, vmax=255)
            if found is None:
                items = [(row[:4], int(row[4]), None) for row in np.asarray(truth[c]) if row[4] >= 0]
            else:
                d = found[c]
                items = [(b, int(k), float(s)) for b, k, s in zip(np.asarray(d["boxes"]), np.asarray(d["labels"]),
                                                                   np.asarray(d["scores"])) if s >= min_score]
            for (x0, y0, x1, y1), k, score in items:
                colour = plt.cm.tab10(k % 10)
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
                text = classes[k] if score is None else f"{classes[k]} {score:.2f}"
                ax.text(x0, y0 - 1, text, color=colour, fontsize=5, va="bottom")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_masks(images, truth, predictions: dict, classes: list[str], title: str = "Predicted masks on test canvases"):
    """A grid: one column per canvas; rows: the image, the true mask, then one row per model's
    predicted mask (``predictions``: model name -> [n, H, W]), with one colour per class (a legend
    names them); pixels without a label (negative, ``IGNORE_INDEX``) are left blank."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = ["#202020"] + [plt.cm.tab10(i) for i in range(len(classes) - 1)]
    cmap = ListedColormap(colours[:len(classes)])
    rows = [("image", images), ("truth", truth), *predictions.items()]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.6, 1.3 * len(rows)), dpi=80, squeeze=False)
    for r, (name, maps) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            value = np.asarray(maps[c])
            if r == 0 and value.ndim == 3 and value.shape[0] == 3:
                ax.imshow(value.transpose(1, 2, 0))                  # a colour photo, [3, H, W] -> [H, W, 3]
            elif r == 0:
                ax.imshow(value.squeeze(), cmap="gray", vmin=0, vmax=255)
            else:                                                    # unlabelled pixels (< 0) stay blank
                ax.imshow(np.ma.masked_less(value, 0), cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.legend(handles=[Patch(color=colours[i], label=k) for i, k in enumerate(classes)], loc="center right",
               fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (1.3 * n + 1.6), 1))
    return fig


# --- The ideas and their costs (notebooks 01-05) ------------------------------------------------
def plot_maps(maps, titles, suptitle: str, cmap: str = "viridis", boxes=None, colorbar_label=None,
              xlabel: str = "x (pixels)", ylabel: str = "y (pixels)", symmetric: bool = False):
    """Several 2-D maps side by side (kernels, receptive fields, attention maps).

    ``maps`` are 2-D arrays or tensors; ``boxes`` optionally gives, per map, a square side (or None)
    drawn centred on the map, e.g. the 23 x 23 field an LKA should reach; ``symmetric`` centres
    the colour scale on zero (for signed maps).
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(min(7.5, 2.1 * n + 0.4), 2.5), dpi=90, squeeze=False)
    for i, (ax, m, t) in enumerate(zip(axes[0], maps, titles)):
        a = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m, dtype=float)
        lim = float(np.abs(a).max()) or 1.0
        kw = {"vmin": -lim, "vmax": lim} if symmetric else {}
        im = ax.imshow(a, cmap=cmap, interpolation="nearest", **kw)
        if boxes is not None and boxes[i]:
            side, (h, w) = boxes[i], a.shape
            corner = (w // 2 - side // 2 - 0.5, h // 2 - side // 2 - 0.5)  # centred on pixel (h//2, w//2)
            ax.add_patch(Rectangle(corner, side, side, fill=False, ec="red", lw=1))
        ax.set_title(t, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel if i == 0 else "", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(False)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cb.ax.tick_params(labelsize=6)
        if colorbar_label and i == n - 1:
            cb.set_label(colorbar_label, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_eq3(kernel_sizes=(7, 14, 21, 28, 35), max_dilation: int = 8):
    """Eq. (3) per channel, without the 1x1 conv's C: ceil(K/d)^2 + (2d-1)^2 against d, one line
    per K, the minimum of each line marked."""
    from .lka import best_dilation, lka_params

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    for k in kernel_sizes:
        ds = list(range(1, min(max_dilation, k) + 1))
        ys = [lka_params(k, d, 1) - 1 for d in ds]
        line, = ax.plot(ds, ys, marker="o", ms=3, label=f"K={k}")
        best = best_dilation(k)
        ax.plot([best], [lka_params(k, best, 1) - 1], marker="*", ms=12, color=line.get_color())
    ax.set_yscale("log")
    ax.set(title="Eq. (3) per channel: depth-wise taps of the decomposition (* = minimum)",
           xlabel="dilation d", ylabel="ceil(K/d)^2 + (2d-1)^2  (weights per channel)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_scaling(rows: list[dict], key: str = "seconds", ylabel: str = "time per forward pass (s)",
                 title: str = "Cost against resolution", slopes: dict | None = None, guides: bool = True):
    """Log-log plot of ``key`` against the number of pixels, one line per method (the rows of
    ``scaling.measure_scaling``); ``slopes`` (method -> fitted exponent) go into the legend.

    ``guides`` draws grey dashed lines of slope 1 and 2 (cost proportional to n and to n^2),
    through the lowest first point, for the eye to compare the measured lines with.
    """
    by_method = defaultdict(list)
    for r in rows:
        if r.get(key) is not None:
            by_method[r["method"]].append(r)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    for method, group in by_method.items():
        label = method if not slopes or method not in slopes else f"{method} (slope {slopes[method]:.2f})"
        ax.plot([r["pixels"] for r in group], [r[key] for r in group], marker="o", ms=3, label=label)
    if guides and by_method:
        xs = sorted({r["pixels"] for group in by_method.values() for r in group})
        y0 = min(group[0][key] for group in by_method.values())
        for p, style in ((1, "--"), (2, ":")):
            ax.plot(xs, [y0 * (x / xs[0]) ** p for x in xs], style, color="grey", lw=1, label=f"slope {p} (guide)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title=title, xlabel="pixels per map, H x W (log scale)", ylabel=ylabel)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_roofline(steps: dict, peak: float, bandwidth: float, title: str = "Roofline of one training step"):
    """The roofline: achieved FLOP/s against arithmetic intensity (FLOP per byte moved), log-log.

    ``steps`` maps a model name to ``van_edu.roofline.step_roofline``'s result. The two ceilings are
    the machine's: ``bandwidth`` x intensity (memory-bound, left of the ridge) and ``peak`` (compute-
    bound). Each operator of each step is a dot at its intensity and its measured rate (FLOPs / its
    measured seconds per step), its area proportional to its time; each whole step is a star at the
    step's FLOPs / bytes and FLOPs / measured time. A dot on the slanted line runs at the speed of
    memory; far below it, the operator loses time to something else (overheads, poor kernels).
    """
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.2, 4.0), dpi=90)
    lo, hi = 1e-2, 1e3
    for name, step in steps.items():
        colour = next((c for family, c in FAMILY_COLOURS.items() if name.startswith(family)), "tab:gray")
        ops = [r for r in step["operators"] if r["measured_s"] > 0 and r["flops"] > 0 and r["bytes"] > 0]
        total = sum(r["measured_s"] for r in ops) or 1.0
        x = np.array([r["intensity"] for r in ops])
        y = np.array([r["flops"] / r["measured_s"] for r in ops])
        ax.scatter(x, y, s=[4 + 400 * r["measured_s"] / total for r in ops], color=colour, alpha=0.35, lw=0)
        intensity = step["flops"] / step["bytes"]
        ax.scatter([intensity], [step["flops"] / step["measured_s"]], marker="*", s=160, color=colour,
                   edgecolor="black", lw=0.6, label=f"{name}: whole step", zorder=3)
        if len(x):
            lo, hi = min(lo, x.min() / 2), max(hi, x.max() * 2)
    xs = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.plot(xs, np.minimum(peak, bandwidth * xs), color="black", lw=1.2,
            label=f"ceilings: {bandwidth / 1e9:.0f} GB/s, {peak / 1e9:.0f} GFLOP/s")
    ax.axvline(peak / bandwidth, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title=title, xlabel="arithmetic intensity (FLOP per byte moved, log scale)",
           ylabel="achieved rate (FLOP/s, log scale)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_bars(labels, series: dict, title: str, ylabel: str, xlabel: str = "", log: bool = False):
    """Grouped bars: ``series`` maps a legend name to one value per label."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=90)
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- Training and looking inside (notebooks 06-09) ----------------------------------------------
def _to_image(image):
    """A [C, H, W] tensor (normalised to [-1, 1] or uint8) -> an [H, W] or [H, W, 3] array in [0, 1]."""
    import numpy as np

    a = image.detach().cpu().float() if hasattr(image, "detach") else np.asarray(image, dtype=float)
    a = np.asarray(a, dtype=float)
    if a.max() > 1.5:                          # uint8 values
        a = a / 255.0
    elif a.min() < 0:                          # normalised to [-1, 1]
        a = (a + 1.0) / 2.0
    a = a.clip(0, 1)
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def plot_image_grid(images, titles, suptitle: str, columns: int = 8, size: float = 0.85):
    """Images ([N, C, H, W], uint8 or normalised) in a grid with a title each; no axes (pixels).
    ``size``: inches per image (0.85 suits 28x28 images; photographs want more)."""
    n = len(images)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, (size + 0.1) * rows + 0.4), dpi=90,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(_to_image(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=6)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict], title: str = "Training curves"):
    """Loss and accuracy (%) against epoch from a ``fit`` history: train and test, two panels.

    The two losses are not the same quantity: the training loss is label-smoothed cross-entropy on
    augmented images, the test loss plain cross-entropy; the legend says so.
    """
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.8), dpi=90)
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train (label-smoothed)")
    right.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", ms=3, label="train (augmented)")
    tested = [h for h in history if h.get("test_loss") is not None]     # eval_every may skip epochs
    if tested:
        left.plot([h["epoch"] for h in tested], [h["test_loss"] for h in tested], marker="s", ms=3, label="test (plain)")
        right.plot([h["epoch"] for h in tested], [100 * h["test_accuracy"] for h in tested], marker="s", ms=3,
                   label="test")
    left.set(title="loss", xlabel="epoch", ylabel="cross-entropy (nats)")
    right.set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (left, right):
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion(confusion, classes: list[str], title: str = "Confusion matrix on the test set"):
    """A confusion matrix (``[k, k]`` counts, row = true class, column = predicted, as
    ``van_edu.metrics.confusion_matrix`` returns it): each cell coloured by its share of the row (%,
    so classes of unequal size compare) and labelled with its count; empty cells stay blank.
    White face colours, so it reads in a dark theme too."""
    import numpy as np

    counts = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion has shape {list(counts.shape)}, expected [{k}, {k}] for {k} classes")
    share = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=90, facecolor="white")
    ax.set_facecolor("white")
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    ax.grid(False)                               # a style's grid would cut through the cells
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 50 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    ax.title.set_fontsize(9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class (%)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def plot_cam_overlays(images, rows: dict, suptitle: str, column_titles=None, alpha: float = 0.5):
    """Each image in the first row, then one row per entry of ``rows`` (name -> maps [N, H, W] in
    [0, 1]) drawn over the image in the 'jet' colour map: red = where the map is high."""
    import numpy as np

    n = len(images)
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(0.95 * n + 0.9, 1.0 * (1 + len(rows)) + 0.4),
                             dpi=90, squeeze=False)
    for j, img in enumerate(images):
        base = _to_image(img)
        grey = base if base.ndim == 2 else base.mean(-1)
        axes[0, j].imshow(base, cmap="gray", vmin=0, vmax=1)
        if column_titles is not None:
            axes[0, j].set_title(column_titles[j], fontsize=6)
        for i, maps in enumerate(rows.values(), start=1):
            m = maps[j].detach().cpu().numpy() if hasattr(maps[j], "detach") else np.asarray(maps[j])
            axes[i, j].imshow(grey, cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(m, cmap="jet", vmin=0, vmax=1, alpha=alpha)
    for i, name in enumerate(["image", *rows]):
        axes[i, 0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_ablation(names, differences, errors, paper_differences, title: str,
                  error_label: str = "here: seed-mean difference, 95% interval", band: float | None = None,
                  band_label: str = "test-set noise", intervals=None,
                  interval_label: str = "here: paired interval over the test images, 95%"):
    """Each variant's accuracy minus the baseline's, in percentage points, on ONE axis: the measured
    difference with its error bar (e.g. the half-width of a 95% interval) beside the paper's
    difference (no error bar: the paper gives none). A line at zero marks "same as the baseline";
    ``band`` (points), if given, shades -band..+band around it (e.g. the smallest difference the
    run could see). ``intervals``, if given, are a second, possibly asymmetric interval per variant
    ((low, high) in points, e.g. a paired bootstrap's), drawn around the same difference between
    the two. ``paper_differences`` may hold None where the paper has no value."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.0, 3.2), dpi=90)
    x = np.arange(len(names))
    ax.axhline(0.0, color="0.5", linewidth=0.8, zorder=0)
    if band is not None:
        ax.axhspan(-band, band, color="0.85", zorder=0, label=band_label)
    ax.errorbar(x - 0.1, differences, yerr=errors, fmt="o", capsize=3, color="tab:red", label=error_label)
    if intervals is not None:
        d = np.asarray(differences, dtype=float)
        below_above = np.array([[di - lo for di, (lo, _) in zip(d, intervals)], [hi - di for di, (_, hi) in zip(d, intervals)]])
        ax.errorbar(x, d, yerr=below_above, fmt="D", markersize=3, capsize=3, color="tab:orange", label=interval_label)
    ax.plot(x + 0.1, [p if p is not None else np.nan for p in paper_differences], "s", color="tab:blue",
            label="paper: VAN-B0, ImageNet top-1")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set(title=title, xlabel="LKA variant", ylabel="accuracy − full LKA's (points)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig



def plot_deletion_curves(fractions, curves: dict, title: str, bands: dict | None = None):
    """A deletion test drawn whole: one panel per model (``curves``: panel title -> {line label ->
    accuracy in % at each of ``fractions``}), accuracy against the share of each image's pixels
    deleted (in %), one line per way of choosing the pixels. ``bands`` (the same keys, where
    given) shades (lows, highs) around a line, e.g. the range over the random control's seeds."""
    import numpy as np

    x = 100 * np.asarray(fractions, dtype=float)
    fig, axes = plt.subplots(1, len(curves), figsize=(2.6 * len(curves), 2.8), dpi=90, sharey=True, squeeze=False)
    for ax, (panel, lines) in zip(axes[0], curves.items()):
        for label, accuracy in lines.items():
            (line,) = ax.plot(x, accuracy, marker="o", markersize=3, label=label)
            band = (bands or {}).get(panel, {}).get(label)
            if band is not None:
                ax.fill_between(x, band[0], band[1], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(title=panel, xlabel="pixels deleted (% of the image)")
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
