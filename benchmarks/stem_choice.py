"""Which stem for small images? Train van_mini with the stem at stride 1, 2 and 4 on the same data.

The authors' stride-4 stem leaves a 28 px image at 7x7 after the stem, so most taps of the 23x23
LKA read padding; stride 1 keeps 28x28 but costs far more. This script measures accuracy and
training speed of the three under the same recipe and prints a table (and JSON with --json).

    python benchmarks/stem_choice.py --train-samples 10000 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace

from van_edu.compare import train_one
from van_edu.data import load_image_dataset
from van_edu.models import van
from van_edu.train import TRAIN_PRESETS

STEMS = {  # name: (stem kernel, stem stride)
    "stride 1 (3x3)": (3, 1),
    "stride 2 (3x3), van_mini": (3, 2),
    "stride 4 (7x7, the authors')": (7, 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    train = load_image_dataset("fashion_mnist", "train", samples=args.train_samples)
    test = load_image_dataset("fashion_mnist", "test", samples=args.test_samples)
    config = replace(TRAIN_PRESETS["cpu"], epochs=args.epochs, progress=False)
    base = van.VAN_CONFIGS["van_mini"]
    rows = []
    for label, (kernel, stride) in STEMS.items():
        van.VAN_CONFIGS["van_mini"] = replace(base, stem_kernel=kernel, stem_stride=stride)
        try:
            with tempfile.TemporaryDirectory() as out:
                r = train_one("van_mini", train, test, config, out, dataset="fashion_mnist")
        finally:
            van.VAN_CONFIGS["van_mini"] = base
        rows.append({"stem": label, "params": r["params"], "mmacs": r["macs"] / 1e6,
                     "test_accuracy": r["test_accuracy"], "images_per_second": r["images_per_second"],
                     "train_seconds": r["train_seconds"], "machine": r["machine"]})
        print(f"{label:30s} params {r['params']:>9,d}  MMACs {r['macs'] / 1e6:7.1f}  "
              f"test accuracy {100 * r['test_accuracy']:6.2f}%  {r['images_per_second']:6.0f} images/s  "
              f"{r['train_seconds']:6.0f} s", flush=True)
    print(f"{args.train_samples} training images, {args.epochs} epochs, recipe 'cpu'; {rows[0]['machine']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
