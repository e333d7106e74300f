"""The segmentation recipe: Semantic FPNs on the scattered garments under a few variants.

    python benchmarks/segmentation_recipe.py                 # every variant, seed 0
    python benchmarks/segmentation_recipe.py "B: ..."        # some of them, by name
    python benchmarks/segmentation_recipe.py --json out.json # also write the rows

Each variant trains one backbone's segmenter on the full training split (8,000 canvases) and
prints the test mIoU (2,000 canvases) after every epoch, the training time and the images/s; the
README ("Segmentation: the recipe") quotes the figures and names the machine. Run it alone on the
machine: the times are compared between variants.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from van_edu.compare import COMPARE_PRESETS
from van_edu.data import load_image_dataset
from van_edu.models import build_model
from van_edu.runtime import machine_description
from van_edu.train import TRAIN_PRESETS, fit

SEG = COMPARE_PRESETS["segmentation"]
FPN64 = {"neck_channels": 64, "head_channels": 64}    # the FPN before the preset took 32 channels
# Each variant states what it measured (the preset has moved since: seg_cpu is L).
VARIANTS = {  # name: (backbone, TrainConfig overrides, build_model options replacing the preset's)
    "A: van_mini, FPN 64, lr 2e-3, 6 epochs": ("van_mini", {"lr": 2e-3, "augment": "none", "epochs": 6}, FPN64),
    "B: van_mini, FPN 64, lr 4e-3, 6 epochs": ("van_mini", {"lr": 4e-3, "augment": "none", "epochs": 6}, FPN64),
    "C: van_mini, FPN 32, lr 4e-3, 6 epochs": ("van_mini", {"lr": 4e-3, "augment": "none", "epochs": 6},
                                               {"neck_channels": 32, "head_channels": 32}),
    "F: van_mini, FPN 64, lr 4e-3, crops and flips (masks moved too)": ("van_mini", {"lr": 4e-3, "augment": "cpu",
                                                                                    "epochs": 6}, FPN64),
    "G: van_mini, FPN 32, lr 4e-3, crops and flips, 8 epochs": ("van_mini", {"lr": 4e-3, "augment": "cpu", "epochs": 8},
                                                               {"neck_channels": 32, "head_channels": 32}),
    "H: van_mini, FPN 32, lr 8e-3, crops and flips, 8 epochs": ("van_mini", {"lr": 8e-3, "augment": "cpu", "epochs": 8},
                                                               {"neck_channels": 32, "head_channels": 32}),
    "I: van_mini, FPN 32, lr 4e-3, crops and flips, 8 epochs, bf16 autocast": (
        "van_mini", {"lr": 4e-3, "augment": "cpu", "epochs": 8, "amp": "bf16"}, {"neck_channels": 32, "head_channels": 32}),
    "J: van_mini, FPN 32, lr 4e-3, crops and flips, 10 epochs, bf16 autocast": (
        "van_mini", {"lr": 4e-3, "augment": "cpu", "epochs": 10, "amp": "bf16"}, {"neck_channels": 32, "head_channels": 32}),
    "K: van_mini, FPN 32, batch 64, lr 8e-3, crops and flips, 10 epochs, bf16 autocast": (
        "van_mini", {"lr": 8e-3, "batch_size": 64, "augment": "cpu", "epochs": 10, "amp": "bf16"},
        {"neck_channels": 32, "head_channels": 32}),
    "L: van_mini, FPN 32, batch 64, lr 8e-3, crops and flips, 9 epochs, bf16 autocast": (
        "van_mini", {"lr": 8e-3, "batch_size": 64, "augment": "cpu", "epochs": 9, "amp": "bf16"},
        {"neck_channels": 32, "head_channels": 32}),
    "D: resnet_mini, FPN 64, lr 4e-3, 6 epochs": ("resnet_mini", {"lr": 4e-3, "augment": "none", "epochs": 6}, FPN64),
    "E: vit_mini (patch 8, levels 0-2), FPN 64, lr 4e-3": ("vit_mini", {"lr": 4e-3},
                                                         {**FPN64, "patch_size": 8, "out_indices": (0, 1, 2)}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="variants to run (default: all)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    train = load_image_dataset("scattered_garments", "train")
    test = load_image_dataset("scattered_garments", "test")
    rows = []
    for name in args.names or VARIANTS:
        backbone, train_over, model_over = VARIANTS[name]
        config = replace(TRAIN_PRESETS[SEG.train], progress=False, **train_over)
        torch.manual_seed(0)
        model = build_model(backbone, train, **{**SEG.model_options(backbone), **model_over})
        start = time.time()
        result = fit(model, train, test, config)
        miou = [round(h["test_miou"], 4) for h in result.history]
        rows.append({"variant": name, "test_miou_by_epoch": miou, "seconds": time.time() - start,
                     "images_per_second": result.images_per_second,
                     "params": sum(p.numel() for p in model.parameters()), "machine": machine_description()})
        print(f"{name:52s} mIoU by epoch {miou}  {result.images_per_second:.0f} images/s  "
              f"{rows[-1]['seconds']:.0f} s  {rows[-1]['params']:,} params", flush=True)
    print(f"8,000 training and 2,000 test canvases; {rows[0]['machine']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
