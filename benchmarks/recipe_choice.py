"""The demo's recipe: van_mini on 10,000 Fashion-MNIST images for 2 epochs under a few recipes.

    python benchmarks/recipe_choice.py          # all variants, one CPU thread, seed 0

Prints the test accuracy (2,000 test images) after each epoch; the README quotes the figures.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace

import torch

from van_edu.data import load_image_dataset
from van_edu.models import build_model
from van_edu.train import TRAIN_PRESETS, fit

VARIANTS = {  # name: (TrainConfig overrides, model overrides)
    "A: batch 128, lr 2e-3": ({"batch_size": 128, "lr": 2e-3}, {}),
    "B: batch 64, lr 4e-3": ({"batch_size": 64, "lr": 4e-3}, {}),
    "C: batch 64, lr 4e-3, layer scale 1.0": ({"batch_size": 64, "lr": 4e-3}, {"layer_scale_init": 1.0}),
}


def main(names=None) -> None:
    torch.set_num_threads(1)
    train = load_image_dataset("fashion_mnist", "train", samples=10000)
    test = load_image_dataset("fashion_mnist", "test", samples=2000)
    for name in names or VARIANTS:
        train_over, model_over = VARIANTS[name]
        config = replace(TRAIN_PRESETS["cpu"], epochs=2, progress=False, channels_last=True, **train_over)
        torch.manual_seed(0)
        model = build_model("van_mini", train, **model_over)
        start = time.time()
        result = fit(model, train, test, config)
        print(f"{name:40s} test accuracy by epoch {[round(h['test_accuracy'], 4) for h in result.history]}  "
              f"{result.images_per_second:.0f} images/s  {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or None)
