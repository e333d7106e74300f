"""The headline experiment: VAN vs ViT vs ResNet with matched budgets and one recipe.

``train_one`` is ``van-edu train``: one model, one seed, results.json + history.json.
``compare`` is ``van-edu compare``: every model of a preset, for each seed, on the same data,
with the same training recipe; ``van_edu.report`` then writes ``report.md``, PNG plots and
results.json. ``load_splits`` loads the training and test splits both commands use.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .complexity import count_macs, count_params
from .data import load_image_dataset
from .errors import VanEduError
from .evaluation import predict_boxes
from .fileio import check_output_dir
from .images import check_seed, check_subset_size, normalize
from .metrics import class_agnostic, detection_floor, detection_scores, floors, truths_from_rows
from .models import DEMO_MODELS, build_model, model_family
from .report import write_report
from .runtime import machine_description, pick_device
from .scaling import throughput
from .sources import DATASETS, known_name
from .train import TRAIN_PRESETS, TrainConfig, check_config, fit

__all__ = ["CompareSetup", "COMPARE_PRESETS", "load_splits", "train_one", "check_setup", "compare"]


@dataclass(frozen=True)
class CompareSetup:
    """One comparison: the data, the three models, the shared recipe and the seeds.

    ``task="segmentation"`` (or ``"detection"``) compares the models as backbones: each becomes a
    Semantic FPN (or a CenterNet; ``head_options``: its options; ``backbone_options``: per model,
    e.g. the pyramid levels ``out_indices`` it feeds the FPN), on a data set with masks (or boxes).
    """

    dataset: str = "fashion_mnist"
    models: tuple[str, ...] = DEMO_MODELS
    train: str = "cpu"                      # a key of van_edu.train.TRAIN_PRESETS
    overrides: dict = field(default_factory=dict)  # fields of TrainConfig that differ from the preset
    seeds: tuple[int, ...] = (0,)
    train_samples: int | float | None = None
    test_samples: int | float | None = None
    image_size: int | None = None
    task: str = "classification"
    head_options: dict = field(default_factory=dict)
    backbone_options: dict = field(default_factory=dict)

    def model_options(self, name: str) -> dict:
        """What ``build_model`` needs beside the data for model ``name``."""
        if self.task == "classification":
            return {}
        return {**self.head_options, **self.backbone_options.get(name, {})}

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
    # VAN as a backbone: Semantic FPNs (32 channels) on the three demo models' pyramids (strides 2,
    # 4, 8), 64 px scattered garments, on a 2-core CPU. The ViT takes 8 px patches (8 x 8 tokens; 4 px
    # patches gave 16 x 16 tokens and the slowest of the three segmenters) and builds its strides
    # 2, 4, 8 by ViTDet's simple feature pyramid from its one stride-8 map.
    "segmentation": CompareSetup(dataset="scattered_garments", task="segmentation", train="seg_cpu",
                                 head_options={"neck_channels": 32, "head_channels": 32},
                                 backbone_options={"vit_mini": {"patch_size": 8, "out_indices": (0, 1, 2)}}),
    # Real photos on a GPU (Colab): Oxford-IIIT Pet's trimaps at 128 px (background, pet; the border
    # ignored), built once by data/build_oxford_pets.py. The authors' Semantic FPN (neck 256, head
    # 128) on three backbones of about 4 M parameters (whole segmenters 7.7-8.4 M, within 15%), from
    # scratch; crops and flips move the masks too. Not measured here: no machine of the course has
    # the data, so the recipe is a starting point, not a tuned one.
    "segmentation_gpu": CompareSetup(dataset="oxford_pets", models=("van_b0", "vit_imagenette", "resnet_imagenette"),
                                     task="segmentation", train="gpu", image_size=128,
                                     overrides={"augment": "cpu", "label_smoothing": 0.0, "batch_size": 32,
                                                "lr": 1e-3, "epochs": 40},
                                     head_options={"neck_channels": 256, "head_channels": 128}),
    # The same backbones under CenterNet, on the garments' boxes: the segmentation preset's parts
    # (FPN 32, the ViT's 8 px patches). The heads run at stride 2 (32 x 32 maps), where width costs
    # most: with neck and heads of 64 the head took 156 of van_mini's 249 MMACs per canvas and a
    # training step 476 ms (batch 32, this 2-core CPU), with 32 it takes 40 of 133 and 358 ms; the
    # ViT's 4 px patches (16 x 16 tokens) made its step 555 ms, 8 px patches 151 ms.
    "detection": CompareSetup(dataset="scattered_garments", task="detection", train="det_cpu",
                              head_options={"neck_channels": 32, "head_channels": 32},
                              backbone_options={"vit_mini": {"patch_size": 8, "out_indices": (0, 1, 2)}}),
}
TASKS = ("classification", "segmentation", "detection")
EXAMPLES = 8   # test canvases whose predicted masks the segmentation report draws


def load_splits(dataset: str, train_samples=None, test_samples=None, image_size=None, seed: int = 0,
                device=None, task: str | None = None):
    """The training and test splits of ``dataset``, each a seeded subset (a count or a fraction,
    None for all of it), resized to ``image_size`` when given, with the labels of ``task`` where
    the data set has several kinds: (train, test)."""
    train = load_image_dataset(dataset, "train", samples=train_samples, seed=seed,
                               image_size=image_size, device=device, task=task)
    test = load_image_dataset(dataset, "test", samples=test_samples, seed=seed,
                              image_size=image_size, device=device, task=task)
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
              resume: bool = False, dataset: str = "", progress_desc: str | None = None,
              model_options: dict | None = None) -> dict:
    """Train one model with one seed; write ``results.json`` and return its fields (and, for
    segmentation, ``examples``: the predicted masks of the first test canvases, not written)."""
    out = Path(out_dir)
    torch.manual_seed(config.seed)  # the initial weights depend on the seed too
    model = build_model(model_name, train_data, **(model_options or {}))
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
        "config": asdict(config), "precision": result.precision, "machine": machine_description(device),
        "task": train_data.task,
    }
    if train_data.task == "segmentation":
        last = result.history[-1]
        results.update(test_miou=last["test_miou"], test_iou=last["test_iou"], model_options=model_options or {})
    if train_data.task == "detection":
        last = result.history[-1]
        truths = truths_from_rows(test_data.labels)
        found = predict_boxes(result.model, test_data, device=device)      # finding garments, whatever the class
        agnostic = detection_scores(class_agnostic(found), class_agnostic(truths), 1)
        results.update(test_map50=last["test_map50"], test_map=last["test_map"], model_options=model_options or {},
                       test_map50_agnostic=agnostic["map50"], test_ap50=last.get("test_ap50"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    results["history"] = result.history
    if train_data.task != "classification" and test_data is not None:
        with torch.no_grad():
            out = result.model.eval()(normalize(test_data.images[:EXAMPLES]).to(device))
            results["examples"] = (out.argmax(1).cpu() if train_data.task == "segmentation"
                                   else [{k: v.cpu() for k, v in d.items()} for d in result.model.decode(out)])
    return results


def score_line(run: dict) -> str:
    """A run's test score, as its task measures it."""
    if "test_miou" in run:
        return f"test mIoU {run['test_miou']:.3f}, pixel accuracy {100 * run['test_accuracy']:.2f}%"
    if "test_map50" in run:
        return f"test mAP50 {run['test_map50']:.3f}, mAP {run['test_map']:.3f}"
    return f"test accuracy {100 * run['test_accuracy']:.2f}%"


def check_setup(setup: CompareSetup, **more) -> None:
    """Every value of a comparison that can be checked without its data: model names, seeds, the
    training recipe (``more``: overrides such as epochs, device); VanEduError for the first bad one."""
    for what, values in (("models", setup.models), ("seeds", setup.seeds)):
        if not values:
            raise VanEduError(f"a comparison needs at least one of {what}, got none")
        repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
        if repeated:
            raise VanEduError(f"{what} {list(values)} repeat {', '.join(map(repr, repeated))} "
                              f"(expected distinct {what}: a repeated run would overwrite its folder)")
    for name in setup.models:
        model_family(name)
    if setup.task not in TASKS:
        raise VanEduError(f"task {setup.task!r} (expected one of {', '.join(TASKS)})")
    spec = DATASETS.get(known_name(setup.dataset))
    if spec is not None and setup.task not in spec.tasks:
        has = {("classification",): "a label per image", ("segmentation",): "masks"}.get(spec.tasks, "masks and boxes")
        want = "scattered_garments" if setup.task != "classification" else "fashion_mnist"
        raise VanEduError(f"--task {setup.task} needs a {setup.task} data set, but {setup.dataset!r} has {has} "
                          f"(expected {want}, e.g. --preset {setup.task if setup.task != 'classification' else 'cpu'})")
    for seed in setup.seeds:
        check_seed(seed, f"seed {seed!r}")
    if setup.train not in TRAIN_PRESETS:
        raise VanEduError(f"train={setup.train!r} (expected one of {sorted(TRAIN_PRESETS)})")
    config = setup.train_config(setup.seeds[0], **more)
    check_config(config)
    pick_device(config.device)
    for samples in (setup.train_samples, setup.test_samples):
        if samples is not None:
            check_subset_size(samples)


def compare(setup: CompareSetup, out_dir: str | Path = "runs/compare", device: str | None = None,
            epochs: int | None = None, log=print) -> dict:
    """Train every model of ``setup`` for every seed; write the report; return results.json's content."""
    out = check_output_dir(out_dir, "the comparison's folder")
    more = {k: v for k, v in (("device", device), ("epochs", epochs)) if v is not None}
    check_setup(setup, **more)
    runs = []
    start = time.perf_counter()
    train_data, test_data = load_splits(setup.dataset, setup.train_samples, setup.test_samples,
                                        setup.image_size, seed=0, device=None,
                                        task=None if setup.task == "classification" else setup.task)
    log(f"data: {setup.dataset}: {len(train_data)} training and {len(test_data)} test images, "
        f"{train_data.in_chans}x{train_data.image_size}x{train_data.image_size}")
    if train_data.task != setup.task:
        raise VanEduError(f"{setup.dataset!r} is a {train_data.task} data set, but the comparison's task is "
                          f"{setup.task!r} (expected labels for {setup.task})")
    check_config(setup.train_config(setup.seeds[0], **more), len(train_data))
    for name in setup.models:               # each model fits the data, before the first one trains
        with torch.device("meta"):
            model = build_model(name, train_data, **setup.model_options(name))
        count_macs(model, (1, train_data.in_chans, train_data.image_size, train_data.image_size))
    extra = {}
    if setup.task == "segmentation":
        extra["floors"] = floors(train_data.images, train_data.labels, test_data.images, test_data.labels,
                                 train_data.num_classes)
        log(f"floors on the test canvases: all background mIoU {extra['floors']['background']['miou']:.3f}, "
            f"intensity threshold {extra['floors']['threshold']['miou']:.3f}")
    if setup.task == "detection":
        extra["floor"] = detection_floor(truths_from_rows(train_data.labels), truths_from_rows(test_data.labels),
                                         train_data.num_classes, train_data.image_size)
        log(f"floor on the test canvases: boxes from the training set's priors at random places, "
            f"mAP50 {extra['floor']['map50']:.3f}")
    for seed in setup.seeds:
        for name in setup.models:
            config = setup.train_config(seed, **more)
            log(f"training {name} (seed {seed}, {config.epochs} epochs)")
            run = train_one(name, train_data, test_data, config, out / f"{name}-seed{seed}",
                            dataset=setup.dataset, model_options=setup.model_options(name))
            score = score_line(run)
            log(f"  {name}: {score} in {run['train_seconds']:.0f} s ({run['images_per_second']:.0f} images/s)")
            runs.append(run)
    if setup.task != "classification":
        extra["examples"] = {"images": test_data.images[:EXAMPLES], "truth": test_data.labels[:EXAMPLES]}
        extra["classes"] = train_data.classes
    summary = {"setup": {**asdict(setup)}, "runs": runs, "wall_seconds": time.perf_counter() - start, **extra}
    write_report(summary, out)
    log(f"report: {out / 'report.md'} ({summary['wall_seconds'] / 60:.1f} min in all)")
    return summary
