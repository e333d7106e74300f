"""The headline experiment: VAN vs ViT vs ResNet with matched budgets and one recipe.

``train_one`` is ``van-edu train``: one model, one seed, results.json + history.json.
``compare`` is ``van-edu compare``: every model of a preset, for each seed, on the same data,
with the same training recipe, then ``report.md``, PNG plots and results.json.
``load_splits`` loads the training and test splits both commands use.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .complexity import count_macs, count_params
from .data import load_image_dataset
from .errors import VanEduError
from .models import DEMO_MODELS, build_model, model_family
from .runtime import machine_description
from .scaling import throughput
from .train import TRAIN_PRESETS, TrainConfig, fit

__all__ = ["CompareSetup", "COMPARE_PRESETS", "load_splits", "train_one", "compare", "write_report"]


@dataclass(frozen=True)
class CompareSetup:
    """One comparison: the data, the three models, the shared recipe and the seeds."""

    dataset: str = "fashion_mnist"
    models: tuple[str, ...] = DEMO_MODELS
    train: str = "cpu"                      # a key of van_edu.train.TRAIN_PRESETS
    overrides: dict = field(default_factory=dict)  # fields of TrainConfig that differ from the preset
    seeds: tuple[int, ...] = (0,)
    train_samples: int | float | None = None
    test_samples: int | float | None = None
    image_size: int | None = None

    def train_config(self, seed: int, **more) -> TrainConfig:
        return replace(TRAIN_PRESETS[self.train], **{**self.overrides, **more, "seed": seed})


COMPARE_PRESETS = {
    # The demo: bundled Fashion-MNIST on a 2-core CPU in about a quarter of an hour.
    "cpu": CompareSetup(),
    # GPU presets (Colab or a workstation): CIFAR-10 at 32 px; Imagenette at 160 px with the stride-4 VAN.
    "cifar10": CompareSetup(dataset="cifar10", models=("van_cifar", "vit_cifar", "resnet_cifar"),
                            train="gpu", seeds=(0, 1)),
    "imagenette": CompareSetup(dataset="imagenette", models=("van_b0", "vit_imagenette", "resnet_imagenette"),
                               train="gpu", seeds=(0,), image_size=160, overrides={"batch_size": 128}),
}


def load_splits(dataset: str, train_samples=None, test_samples=None, image_size=None, seed: int = 0,
                device=None):
    """The training and test splits of ``dataset``, each a seeded subset (a count or a fraction,
    None for all of it), resized to ``image_size`` when given: (train, test)."""
    train = load_image_dataset(dataset, "train", samples=train_samples, seed=seed,
                               image_size=image_size, device=device)
    test = load_image_dataset(dataset, "test", samples=test_samples, seed=seed,
                              image_size=image_size, device=device)
    return train, test


def _measure(model, data, device) -> dict:
    """Multiply-adds per image (``count_macs``: every layer and the attention products) and batch-1
    inference latency on ``device``."""
    size = (1, data.in_chans, data.image_size, data.image_size)
    macs = count_macs(model, size)
    model.to(device)
    latency = 1000.0 / throughput(model, size, batch_size=1, steps=20, warmup=3, device=device)
    return {"macs": macs, "latency_ms": latency}


def train_one(model_name: str, train_data, test_data, config: TrainConfig, out_dir: str | Path,
              resume: bool = False, dataset: str = "", progress_desc: str | None = None) -> dict:
    """Train one model with one seed; write ``results.json`` and return its fields."""
    out = Path(out_dir)
    torch.manual_seed(config.seed)  # the initial weights depend on the seed too
    model = build_model(model_name, train_data)
    result = fit(model, train_data, test_data, config, out_dir=out, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 measures and writes
        return {"model": model_name, "test_accuracy": result.test_accuracy, "history": result.history}
    device = torch.device(result.device)
    results = {
        "model": model_name, "family": model_family(model_name), "params": count_params(model),
        **_measure(result.model, test_data, device), "dataset": dataset,
        "train_samples": len(train_data), "test_samples": len(test_data), "epochs": config.epochs,
        "test_accuracy": result.test_accuracy, "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second, "device": result.device, "seed": config.seed,
        "config": asdict(config), "machine": machine_description(device),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    results["history"] = result.history
    return results


def compare(setup: CompareSetup, out_dir: str | Path = "runs/compare", device: str | None = None,
            epochs: int | None = None, log=print) -> dict:
    """Train every model of ``setup`` for every seed; write the report; return results.json's content."""
    out = Path(out_dir)
    more = {k: v for k, v in (("device", device), ("epochs", epochs)) if v is not None}
    runs = []
    start = time.perf_counter()
    train_data, test_data = load_splits(setup.dataset, setup.train_samples, setup.test_samples,
                                        setup.image_size, seed=0, device=None)
    log(f"data: {setup.dataset}: {len(train_data)} training and {len(test_data)} test images, "
        f"{train_data.in_chans}x{train_data.image_size}x{train_data.image_size}")
    for seed in setup.seeds:
        for name in setup.models:
            config = setup.train_config(seed, **more)
            log(f"training {name} (seed {seed}, {config.epochs} epochs)")
            run = train_one(name, train_data, test_data, config, out / f"{name}-seed{seed}",
                            dataset=setup.dataset)
            log(f"  {name}: test accuracy {100 * run['test_accuracy']:.2f}% in {run['train_seconds']:.0f} s "
                f"({run['images_per_second']:.0f} images/s)")
            runs.append(run)
    summary = {"setup": {**asdict(setup)}, "runs": runs, "wall_seconds": time.perf_counter() - start}
    write_report(summary, out)
    log(f"report: {out / 'report.md'} ({summary['wall_seconds'] / 60:.1f} min in all)")
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarise(runs: list[dict]) -> list[dict]:
    """One row per model: mean and std over seeds of accuracy, and the mean costs."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        group = [r for r in runs if r["model"] == name]
        acc, acc_std = _mean_std([100 * r["test_accuracy"] for r in group])
        rows.append({
            "model": name, "family": group[0]["family"], "params": group[0]["params"],
            "mmacs": group[0]["macs"] / 1e6, "accuracy": acc, "accuracy_std": acc_std, "seeds": len(group),
            "images_per_second": _mean_std([r["images_per_second"] for r in group])[0],
            "train_seconds": _mean_std([r["train_seconds"] for r in group])[0],
            "latency_ms": _mean_std([r["latency_ms"] for r in group])[0],
        })
    return rows


def write_report(summary: dict, out_dir: str | Path) -> Path:
    """report.md, learning_curves.png, accuracy_vs_params.png, accuracy_vs_throughput.png, results.json."""
    from .viz import plot_learning_curves, plot_tradeoff

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = summary["runs"]
    plots = {
        "learning_curves.png": plot_learning_curves(runs, "Test accuracy during training"),
        "accuracy_vs_params.png": plot_tradeoff(runs, "params", "parameters (count, log scale)",
                                                "Accuracy against model size"),
        "accuracy_vs_throughput.png": plot_tradeoff(runs, "images_per_second",
                                                    "training throughput (images/s, log scale)",
                                                    "Accuracy against training speed"),
    }
    for name, fig in plots.items():
        fig.savefig(out / name)
        fig.clf()
    stored = {**summary, "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs]}
    (out / "results.json").write_text(json.dumps(stored, indent=2))
    (out / "report.md").write_text(_report_text(summary))
    return out / "report.md"


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
        f"seeds {sorted({r['seed'] for r in runs})}. Device: {first['device']} ({first['machine']}).", "",
        "| model | params | MMACs / image | test accuracy (%) | training images/s | training time (s) | latency, batch 1 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = f"{r['accuracy']:.2f} ± {r['accuracy_std']:.2f} (n={r['seeds']})" if r["seeds"] > 1 else f"{r['accuracy']:.2f} (n=1)"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['mmacs']:.1f} | {acc} | "
                     f"{r['images_per_second']:.0f} | {r['train_seconds']:.0f} | {r['latency_ms']:.1f} |")
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


def export_assets(out_dir: str | Path = "runs/compare", dest: str | Path = "notebooks/assets/compare",
                  seed: int = 0) -> Path:
    """Copy a comparison's report and seed ``seed``'s trained weights where the notebooks read them.

    Writes ``results.json``, ``report.md`` and the PNGs as they are, ``history-<model>.json`` and
    ``<model>.pt`` (a plain state dict, a few MB: the checkpoint without the optimiser state).
    """
    import shutil

    out, dest = Path(out_dir), Path(dest)
    results_file = out / "results.json"
    if not results_file.is_file():
        raise VanEduError(f"{results_file} does not exist: run `van-edu compare --out {out}` first")
    results = json.loads(results_file.read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in ["results.json", "report.md"] + sorted(p.name for p in out.glob("*.png")):
        shutil.copy(out / name, dest / name)
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        run_dir = out / f"{model}-seed{seed}"
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        torch.save(ckpt["model"], dest / f"{model}.pt")
        shutil.copy(run_dir / "history.json", dest / f"history-{model}.json")
    return dest
