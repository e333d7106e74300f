"""float32 against bf16 autocast: one training step of each demo segmenter, side by side.

    python benchmarks/segmentation_precision.py 32     # batch 32
    python benchmarks/segmentation_precision.py 64     # batch 64

For van_mini, resnet_mini and vit_mini under the `segmentation` comparison's Semantic FPN: warm-up,
then five rounds that alternate the two precisions (two steps each, AdamW, channels-last, a
pixel-wise cross-entropy on real canvases), the best time per step of each. The README
("Segmentation: the recipe") quotes the figures with the machine. bf16 autocast pays only on a CPU
that multiplies bf16 in hardware (AVX512-BF16 or AMX: `van_edu.runtime.cpu_has_native_bf16`); run it
alone on the machine.
"""
from __future__ import annotations

import sys
import time

import torch

from van_edu.compare import COMPARE_PRESETS
from van_edu.data import load_image_dataset
from van_edu.images import normalize
from van_edu.models import build_model
from van_edu.runtime import cpu_has_native_bf16, machine_description


def _step(model, optimizer, x, y, dtype) -> None:
    """One training step, under bf16 autocast when `dtype` is bf16, in float32 when it is None."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main(batch: int) -> None:
    seg = COMPARE_PRESETS["segmentation"]
    train = load_image_dataset("scattered_garments", "train", samples=256)
    x = normalize(train.images[:batch]).contiguous(memory_format=torch.channels_last)
    y = train.labels[:batch]
    print(f"{machine_description()}; native bf16: {cpu_has_native_bf16()}; batch {batch}")
    for name in seg.models:
        torch.manual_seed(0)
        model = build_model(name, train, **seg.model_options(name)).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

        for dtype in (None, torch.bfloat16):   # warm-up: oneDNN picks its kernels on the first calls
            _step(model, optimizer, x, y, dtype)
            _step(model, optimizer, x, y, dtype)
        best = {None: float("inf"), torch.bfloat16: float("inf")}
        for _ in range(5):
            for dtype in best:
                start = time.perf_counter()
                _step(model, optimizer, x, y, dtype)
                _step(model, optimizer, x, y, dtype)
                best[dtype] = min(best[dtype], (time.perf_counter() - start) / 2)
        print(f"{name}: float32 {best[None] * 1000:.0f} ms, bf16 {best[torch.bfloat16] * 1000:.0f} ms per step of "
              f"{batch} ({best[None] / best[torch.bfloat16]:.2f}x)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
