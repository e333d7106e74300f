"""The report of a comparison: the summary table, report.md, its plots and results.json, and the
copy of a run's results and trained weights that notebooks 07, 08, 10 and 11 read.

``van_edu.compare`` runs the models and hands its summary (the setup, one record per run, the wall
time) to ``write_report``; ``summarise`` turns the runs into one row per model (mean and standard
deviation over seeds); ``export_assets`` copies a finished comparison into the notebooks' assets,
and ``read_assets`` reads that copy back.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .errors import VanEduError
from .fileio import check_output_dir
from .stats import mean_std

__all__ = ["summarise", "write_report", "check_export", "export_assets", "read_assets"]


def summarise(runs: list[dict]) -> list[dict]:
    """One row per model: mean and std over seeds of accuracy, and the mean costs."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        group = [r for r in runs if r["model"] == name]
        has_accuracy = group[0].get("test_accuracy") is not None             # a detector has none
        acc, acc_std = mean_std([100 * r["test_accuracy"] for r in group]) if has_accuracy else (None, None)
        rows.append({
            "model": name, "family": group[0]["family"], "params": group[0]["params"],
            "mmacs": group[0]["macs"] / 1e6, "accuracy": acc, "accuracy_std": acc_std, "seeds": len(group),
            "images_per_second": mean_std([r["images_per_second"] for r in group])[0],
            "train_seconds": mean_std([r["train_seconds"] for r in group])[0],
            "latency_ms": mean_std([r["latency_ms"] for r in group])[0],
        })
        for key, short in (("test_miou", "miou"), ("test_map50", "map50"), ("test_map", "map"),
                           ("test_map50_agnostic", "map50_agnostic")):
            if key in group[0]:
                rows[-1][short], rows[-1][f"{short}_std"] = mean_std([r[key] for r in group])
    return rows


def write_report(summary: dict, out_dir: str | Path) -> Path:
    """report.md, learning_curves.png, accuracy_vs_params.png, accuracy_vs_throughput.png, results.json."""
    from .viz import plot_learning_curves, plot_tradeoff  # matplotlib only once a report is written

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = summary["runs"]
    task = summary.get("setup", {}).get("task", "classification")
    if task == "segmentation":
        plots = _dense_plots(summary, task)
        text = _segmentation_text(summary)
    elif task == "detection":
        plots = _dense_plots(summary, task)
        text = _detection_text(summary)
    else:
        plots = {
            "learning_curves.png": plot_learning_curves(runs, "Test accuracy during training"),
            "accuracy_vs_params.png": plot_tradeoff(runs, "params", "parameters (count, log scale)",
                                                    "Accuracy against model size"),
            "accuracy_vs_throughput.png": plot_tradeoff(runs, "images_per_second",
                                                        "training throughput (images/s, log scale)",
                                                        "Accuracy against training speed"),
        }
        text = _report_text(summary)
    for name, fig in plots.items():
        fig.savefig(out / name)
        fig.clf()
    stored = {k: v for k, v in summary.items() if k != "examples"}
    stored["runs"] = [{k: v for k, v in r.items() if k not in ("history", "examples")} for r in runs]
    (out / "results.json").write_text(json.dumps(stored, indent=2))
    (out / "report.md").write_text(text)
    return out / "report.md"


# Per dense task: the metric plotted, its name, what the model is called, the files, what the grid shows.
_DENSE = {
    "segmentation": ("test_miou", "mIoU", "segmenter", "miou_vs_params.png", "masks.png", "truth and predicted masks"),
    "detection": ("test_map50", "mAP50", "detector", "map_vs_params.png", "boxes.png", "true and predicted boxes"),
}


def _dense_plots(summary: dict, task: str) -> dict:
    """The curves, the size trade-off and the grid of predictions of a segmentation or detection run."""
    from .viz import plot_boxes, plot_learning_curves, plot_masks, plot_tradeoff

    metric, label, model_kind, tradeoff_png, grid_png, grid_what = _DENSE[task]
    runs, ex = summary["runs"], summary["examples"]
    first_seed = min(r["seed"] for r in runs)
    predictions = {r["model"]: r["examples"] for r in runs if r["seed"] == first_seed and "examples" in r}
    grid = plot_masks if task == "segmentation" else plot_boxes
    return {
        "learning_curves.png": plot_learning_curves(runs, f"Test {label} during training", metric=metric),
        tradeoff_png: plot_tradeoff(runs, "params", f"parameters of the {model_kind} (count, log scale)",
                                    f"{label} against model size", metric=metric),
        grid_png: grid(ex["images"], ex["truth"], predictions, summary["classes"],
                       f"Test canvases: {grid_what} (seed {first_seed})"),
    }


def _detection_text(summary: dict) -> str:
    runs = summary["runs"]
    first, rows = runs[0], summarise(runs)
    recipe = {k: first["config"][k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs")}
    lines = [
        "# VAN, ResNet and ViT as backbones: object detection", "",
        f"Dataset `{first['dataset']}` (boxes): {first['train_samples']} training and {first['test_samples']} test "
        f"canvases. Every backbone under CenterNet on the FPN's finest level "
        f"({json.dumps(summary['setup']['head_options'])}), one recipe (`{json.dumps(recipe)}`, no augmentation), "
        f"seeds {sorted({r['seed'] for r in runs})}. Device: {first['device']} ({first['machine']}), training steps in {first.get('precision', 'float32')}.", "",
        *_table(["detector on", "params", "MMACs / canvas", "test mAP50", "test mAP (0.50:0.95)",
                 "class-agnostic AP50", "training canvases/s", "training time (s)"],
                [[r["model"], f"{r['params']:,}", f"{r['mmacs']:.1f}", _spread(r, "map50", 3), _spread(r, "map", 3),
                  _spread(r, "map50_agnostic", 3) if "map50_agnostic" in r else "-",
                  f"{r['images_per_second']:.0f}", f"{r['train_seconds']:.0f}"] for r in rows]),
    ]
    floor = summary.get("floor")
    if floor is not None:
        lines += ["", f"Floor on the same test canvases: boxes guessed from the training set's priors (class "
                      f"frequencies, box sizes) at random places with random scores, 20 per canvas: mAP50 "
                      f"{floor['map50']:.3f}, mAP {floor['map']:.3f}."]
    lines += [
        "", "![learning curves](learning_curves.png) ![mAP50 against parameters](map_vs_params.png)", "",
        "![predicted boxes](boxes.png)", "",
        "## What these numbers do and do not show", "",
        "- AP by COCO's rules (`van_edu.metrics.detection_scores`, equal to pycocotools' COCOeval in the tests): "
        "mAP50 at IoU 0.5, mAP the mean over IoU 0.50:0.05:0.95, both averaged over classes. The "
        "class-agnostic AP50 scores finding the garments whatever their class: where it is far above mAP50, "
        "the detector finds garments and misnames them (classification); where both are low, it misplaces "
        "them (localisation).",
        f"- Same data, epochs and recipe for all; {_param_spread(rows)}. The paper's COCO results (RetinaNet, "
        "Mask R-CNN) are not tested at this scale.",
        "", f"Wall time of the whole comparison: {summary['wall_seconds'] / 60:.1f} min.", "",
    ]
    return "\n".join(lines)


def _segmentation_text(summary: dict) -> str:
    runs, floors = summary["runs"], summary["floors"]
    first, rows = runs[0], summarise(runs)
    recipe = {k: first["config"][k] for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "augment")}
    lines = [
        "# VAN, ResNet and ViT as backbones: semantic segmentation", "",
        f"Dataset `{first['dataset']}`: {first['train_samples']} training and {first['test_samples']} test "
        f"canvases. Every backbone under a Semantic FPN ({json.dumps(summary['setup']['head_options'])}), one recipe "
        f"(`{json.dumps(recipe)}`; crops and flips, where on, move the masks too), seeds {sorted({r['seed'] for r in runs})}. "
        f"Device: {first['device']} ({first['machine']}), training steps in {first.get('precision', 'float32')}.", "",
        *_table(["segmenter on", "params (whole segmenter)", "MMACs / canvas", "test mIoU", "pixel accuracy (%)",
                 "training canvases/s", "training time (s)"],
                [[r["model"], f"{r['params']:,}", f"{r['mmacs']:.1f}", _spread(r, "miou", 3), f"{r['accuracy']:.2f}",
                  f"{r['images_per_second']:.0f}", f"{r['train_seconds']:.0f}"] for r in rows]
                + [[f"*floor: {what}*", "0", "0", f"{f['miou']:.3f}", f"{100 * f['pixel_accuracy']:.2f}", "", ""]
                   for what, f in (("every pixel background", floors["background"]),
                                   (f"brighter than {floors['threshold']['threshold']} -> class "
                                    f"{floors['threshold']['class']}", floors["threshold"]))]),
    ]
    lines += [
        "", "![learning curves](learning_curves.png) ![mIoU against parameters](miou_vs_params.png)", "",
        "![predicted masks](masks.png)", "",
        "## What these numbers do and do not show", "",
        f"- mIoU is the mean over the {len(summary['classes'])} classes of the IoU from one confusion matrix of all "
        "test pixels (`van_edu.metrics`; pixels without a label, such as a trimap's border, count nowhere); the "
        "floors are scored the same way on the same canvases.",
        "- ± is the standard deviation over seeds; the models are scored on the same test canvases, so "
        "compare two of them with a paired test over canvases (`van_edu.metrics.paired_bootstrap_miou`), "
        "not with these spreads.",
        f"- Same data, epochs and recipe for all; {_param_spread(rows)}. One small budget on 64 px "
        "canvases: the paper's ADE20K numbers (VAN-B0 38.5 mIoU with a Semantic FPN) are not tested here.",
        "", f"Wall time of the whole comparison: {summary['wall_seconds'] / 60:.1f} min.", "",
    ]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the header, the first column left-aligned and the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _spread(row: dict, key: str, digits: int) -> str:
    """A summary row's mean of ``key`` with its standard deviation over seeds, and the seed count."""
    mean, std, n = row[key], row[f"{key}_std"], row["seeds"]
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})" if n > 1 else f"{mean:.{digits}f} (n=1)"


def _param_spread(rows: list[dict]) -> str:
    params = [r["params"] for r in rows]
    spread = 100 * (max(params) - min(params)) / min(params)
    return f"the largest model has {spread:.0f}% more parameters than the smallest"


def _report_text(summary: dict) -> str:
    runs = summary["runs"]
    first = runs[0]
    rows = summarise(runs)
    lines = [
        "# VAN vs ViT vs ResNet", "",
        f"Dataset `{first['dataset']}`: {first['train_samples']} training images, {first['test_samples']} "
        f"test images. Every model: {first['epochs']} epochs of the same recipe "
        f"(`{json.dumps({k: first['config'][k] for k in ('batch_size', 'lr', 'weight_decay', 'warmup_epochs', 'label_smoothing', 'augment')})}`), "
        f"seeds {sorted({r['seed'] for r in runs})}. Device: {first['device']} ({first['machine']}), training steps in {first.get('precision', 'float32')}.", "",
        *_table(["model", "params", "MMACs / image", "test accuracy (%)", "training images/s", "training time (s)",
                 "latency, batch 1 (ms)"],
                [[r["model"], f"{r['params']:,}", f"{r['mmacs']:.1f}", _spread(r, "accuracy", 2),
                  f"{r['images_per_second']:.0f}", f"{r['train_seconds']:.0f}", f"{r['latency_ms']:.1f}"] for r in rows]),
    ]
    lines += [
        "", "![learning curves](learning_curves.png)", "",
        "![accuracy against parameters](accuracy_vs_params.png) ![accuracy against throughput](accuracy_vs_throughput.png)", "",
        "## What these numbers do and do not show", "",
        f"- Same data, same epochs, same optimiser and schedule, same augmentation; {_param_spread(rows)}. "
        "Differences come from the architectures under this budget, not from the recipe.",
        "- One short budget on small images. A recipe tuned per model, longer training or larger images "
        "can reorder the models; the paper's ImageNet results are not tested here.",
        "- ± is the standard deviation over seeds; with n=1 the spread between seeds was not measured "
        "(`van-edu compare --seeds 0 1 2` measures it).",
        "- Throughput and latency are of this machine, this PyTorch build and these kernels: "
        "depth-wise convolutions are comparatively slow on CPUs.",
        "", f"Wall time of the whole comparison: {summary['wall_seconds'] / 60:.1f} min.", "",
    ]
    return "\n".join(lines)


def check_export(out_dir: str | Path, dest: str | Path, what: str = "the export folder") -> Path:
    """VanEduError unless ``dest`` can take a copy of the comparison in ``out_dir``: a folder that
    can be written, and not ``out_dir`` itself. Creates nothing; returns ``dest`` as a Path."""
    dest = check_output_dir(dest, what)
    if dest.resolve() == Path(out_dir).expanduser().resolve():
        raise VanEduError(f"{what} {str(dest)!r} is the comparison's own folder (expected another folder, "
                          "e.g. notebooks/assets/compare)")
    return dest


def export_assets(out_dir: str | Path = "runs/compare", dest: str | Path = "notebooks/assets/compare",
                  seed: int = 0) -> Path:
    """Copy a comparison's report and seed ``seed``'s trained weights where the notebooks read them.

    Writes ``results.json``, ``report.md`` and the PNGs as they are, ``history-<model>.json`` and
    ``<model>.pt`` (a plain state dict, a few MB: the checkpoint without the optimiser state).
    """
    out, dest = Path(out_dir), check_export(out_dir, dest)
    results_file = out / "results.json"
    if not results_file.is_file():
        raise VanEduError(f"{results_file} does not exist: run `van-edu compare --out {out}` first")
    try:
        models = list(dict.fromkeys(r["model"] for r in json.loads(results_file.read_text())["runs"]))
    except (ValueError, KeyError, TypeError) as err:         # not JSON, or not a comparison's
        raise VanEduError(f"{results_file} is not the results.json of a comparison ({type(err).__name__}: "
                          f"{err}); expected the file `van-edu compare` writes") from err
    needed = ["results.json", "report.md"] + [f"{m}-seed{seed}/{f}" for m in models
                                              for f in ("checkpoint.pt", "history.json")]
    missing = [name for name in needed if not (out / name).is_file()]
    if missing:
        raise VanEduError(f"{out} lacks {', '.join(missing)} (expected a finished comparison that ran "
                          f"seed {seed}: `van-edu compare --out {out}`)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ["results.json", "report.md"] + sorted(p.name for p in out.glob("*.png")):
        shutil.copy(out / name, dest / name)
    for model in models:
        run_dir = out / f"{model}-seed{seed}"
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        torch.save(ckpt["model"], dest / f"{model}.pt")
        shutil.copy(run_dir / "history.json", dest / f"history-{model}.json")
    return dest


def read_assets(folder: str | Path, seed: int = 0) -> dict:
    """The results ``export_assets`` copied to ``folder``: ``results.json`` (the setup, one record
    per run under ``"runs"``, the wall time), with each of seed ``seed``'s runs given its per-epoch
    ``"history"`` from ``history-<model>.json`` where that file exists (the export keeps one seed's).
    ``write_report`` leaves the histories out of ``results.json``; this puts them back, so a notebook
    reads the bundled runs the way ``van-edu compare`` returned them."""
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())
    for run in results["runs"]:
        history = folder / f"history-{run['model']}.json"
        if run["seed"] == seed and history.is_file():
            run["history"] = json.loads(history.read_text())
    return results
