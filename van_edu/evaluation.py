"""Evaluation: the accuracy and mean loss of a model on a split, sharded over ranks when distributed;
on a segmentation split (a mask per image) also the confusion matrix, mIoU and per-class IoU.

``evaluate`` is what a learner calls (also importable from ``van_edu.train``); ``fit`` uses the
same sums after every epoch, with its autocast dtype, memory layout and process group.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .distributed import DistContext, all_reduce, reduce_sums
from .images import IGNORE_INDEX, ImageData, batches
from .metrics import detection_scores, segmentation_scores, truths_from_rows
from .runtime import autocast

__all__ = ["evaluate", "eval_sums", "eval_detection", "metrics", "sum_dtype", "predict", "predict_masks", "predict_boxes"]


def evaluate(model: nn.Module, data: ImageData, batch_size: int = 512, device=None) -> dict:
    """Accuracy (a fraction) and mean cross-entropy (no label smoothing) of `model` on `data`.

    On a segmentation split the accuracy and the loss are means over pixels, and the result also holds ``miou``, ``pixel_accuracy`` and ``iou``
    (per class), from the confusion matrix of all test pixels (``van_edu.metrics``).

    Runs in eval mode (BatchNorm uses its running averages, dropout is off) and restores the
    model's previous mode. `device` defaults to the device of the model's parameters.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if data.task == "detection":
            return eval_detection(model, data.to(device), batch_size, device)
        sums = eval_sums(model, data.to(device), batch_size, device)
    finally:
        model.train(was_training)
    return metrics(*sums)


@torch.no_grad()
def predict(model: nn.Module, data: ImageData, batch_size: int = 256, device=None) -> torch.Tensor:
    """The predicted class (the argmax of the logits) of every item of ``data``, in order: int64 [N]
    for a classification split, [N, H, W] (one class per pixel) for a segmentation split, on the
    CPU, in evaluation mode (the model's mode is restored). ``predict(m, d) == d.labels`` is the
    per-image correctness that a paired test of two models on the same test set needs
    (``van_edu.stats.mcnemar``, ``paired_bootstrap``); its mean is ``evaluate``'s accuracy."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x.to(device)).argmax(1).cpu()
                          for x, _ in batches(data, batch_size, shuffle=False)])
    finally:
        model.train(was_training)


def predict_masks(model: nn.Module, data: ImageData, batch_size: int = 256, device=None) -> torch.Tensor:
    """A segmenter's predicted class of every pixel of ``data``: int64 [N, H, W] on the CPU
    (``predict`` on a segmentation split), e.g. for ``van_edu.metrics.instance_scores``."""
    return predict(model, data, batch_size, device)


@torch.no_grad()
def predict_boxes(model: nn.Module, data: ImageData, batch_size: int = 256, device=None, k: int = 100,
                  threshold: float = 0.01) -> list[dict]:
    """A detector's ``decode``d boxes on every image of ``data``, in order, on the CPU: per image
    ``boxes`` [n, 4], ``scores`` and ``labels`` (COCO's practice, as ``eval_detection`` scores them:
    up to ``k`` per image down to a score of ``threshold``), in evaluation mode (the mode is restored).
    ``van_edu.metrics.detection_scores(predict_boxes(m, d), truths_from_rows(d.labels), K)`` is the
    test mAP that training reports; ``paired_bootstrap_ap`` compares two detectors on them."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        found = []
        for x, _ in batches(data, batch_size, shuffle=False):
            found += [{key: v.cpu() for key, v in d.items()}
                      for d in model.decode(model(x.to(device)), k=k, threshold=threshold)]
        return found
    finally:
        model.train(was_training)


@torch.no_grad()
def eval_detection(model: nn.Module, data: ImageData, batch_size: int, device: torch.device, amp_dtype=None,
                   channels_last: bool = False) -> dict:
    """A detector's mean loss (its own ``loss``) and COCO's box AP (``van_edu.metrics.detection_scores``:
    ``map50``, ``map`` and ``ap50`` per class) on ``data``, from its ``decode``d detections (COCO's
    practice: up to 100 per image, down to a score of 0.01; low-scoring ones can only add recall).
    Every rank evaluates the whole split (detections are lists of boxes; nothing is reduced)."""
    found, truths, loss_sum, count = [], [], 0.0, 0
    for x, y in batches(data, batch_size, shuffle=False):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            outputs = model(x)
        loss_sum += float(model.loss(outputs, y)) * len(y)
        count += len(y)
        found += [{k: v.cpu() for k, v in d.items()} for d in model.decode(outputs, k=100, threshold=0.01)]
        truths += truths_from_rows(y)                                      # padding rows have class -1
    return {"loss": loss_sum / max(count, 1), **detection_scores(found, truths, data.num_classes)}


@torch.no_grad()
def eval_sums(model: nn.Module, data: ImageData, batch_size: int, device: torch.device,
               amp_dtype=None, channels_last=False, ctx: DistContext | None = None) -> list[float]:
    """[summed loss, correct, count] over `data`, each rank taking its shard, summed over ranks; on
    a segmentation split all three are over the labelled pixels (``IGNORE_INDEX`` ones are left out,
    as cross-entropy skips them), and a fourth entry is the confusion matrix [num_classes, num_classes]
    (rows: true class)."""
    ctx = ctx if ctx is not None else DistContext()
    loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
    correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
    dense, k = data.task == "segmentation", data.num_classes
    confusion = torch.zeros(k * k, dtype=torch.int64, device=device) if dense else None
    batch_size = math.ceil(batch_size / ctx.world_size) * ctx.world_size
    for x, y in batches(data, batch_size, shuffle=False, rank=ctx.rank, world_size=ctx.world_size):
        if len(y) == 0:  # the last global batch can leave a rank with nothing
            continue
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")   # over images or pixels
        pred = logits.argmax(1)
        correct += (pred == y).sum()
        if dense:                                 # pixels labelled IGNORE_INDEX count nowhere
            keep = y != IGNORE_INDEX
            count += int(keep.sum())
            confusion += torch.bincount((y[keep] * k + pred[keep]), minlength=k * k)
        else:
            count += y.numel()
    sums = reduce_sums(loss_sum, correct, count, ctx)
    if dense:
        sums.append(all_reduce(confusion, ctx).reshape(k, k).cpu())
    return sums


def metrics(loss_sum: float, correct: float, count: float, confusion: torch.Tensor | None = None) -> dict:
    """Mean loss and accuracy from sums; NaN for an empty set rather than a division error. With a
    confusion matrix (segmentation; the sums are then over pixels) ``miou``, ``pixel_accuracy`` and
    ``iou`` are added."""
    if count == 0:
        return {"accuracy": math.nan, "loss": math.nan}
    if confusion is None:
        return {"accuracy": correct / count, "loss": loss_sum / count}
    return {"accuracy": correct / count, "loss": loss_sum / count, **segmentation_scores(confusion)}


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64
