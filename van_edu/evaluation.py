"""Evaluation: the accuracy and mean loss of a model on a split, sharded over ranks when distributed.

``evaluate`` is what a learner calls (also importable from ``van_edu.train``); ``fit`` uses the
same sums after every epoch, with its autocast dtype, memory layout and process group.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .distributed import DistContext, reduce_sums
from .images import ImageData, batches
from .runtime import autocast

__all__ = ["evaluate", "eval_sums", "metrics", "sum_dtype"]


def evaluate(model: nn.Module, data: ImageData, batch_size: int = 512, device=None) -> dict:
    """Accuracy (a fraction) and mean cross-entropy (no label smoothing) of `model` on `data`.

    Runs in eval mode (BatchNorm uses its running averages, dropout is off) and restores the
    model's previous mode. `device` defaults to the device of the model's parameters.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        loss, correct, count = eval_sums(model, data.to(device), batch_size, device)
    finally:
        model.train(was_training)
    return metrics(loss, correct, count)


@torch.no_grad()
def eval_sums(model: nn.Module, data: ImageData, batch_size: int, device: torch.device,
               amp_dtype=None, channels_last=False, ctx: DistContext | None = None) -> list[float]:
    """[summed loss, correct, count] over `data`, each rank taking its shard, summed over ranks."""
    ctx = ctx if ctx is not None else DistContext()
    loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
    correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
    batch_size = math.ceil(batch_size / ctx.world_size) * ctx.world_size
    for x, y in batches(data, batch_size, shuffle=False, rank=ctx.rank, world_size=ctx.world_size):
        if len(y) == 0:  # the last global batch can leave a rank with nothing
            continue
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    return reduce_sums(loss_sum, correct, count, ctx)


def metrics(loss_sum: float, correct: float, count: float) -> dict:
    """Mean loss and accuracy from sums; NaN for an empty set rather than a division error."""
    if count == 0:
        return {"accuracy": math.nan, "loss": math.nan}
    return {"accuracy": correct / count, "loss": loss_sum / count}


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64
