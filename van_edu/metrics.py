"""Dense-prediction metrics by the field's standard: a confusion matrix accumulated over the whole
test set, then per-class IoU, their mean (mIoU) and pixel accuracy.

mIoU is computed from the matrix summed over all test pixels, not averaged per image (an image
where a class is absent would otherwise count as 0 or be skipped, depending on a convention).
A class that appears neither in the labels nor in the predictions has no IoU (NaN) and is left
out of the mean; pixels labelled ``ignore_index`` count nowhere.
"""
from __future__ import annotations

import math

import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "segmentation_scores"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts: row = true class, column = predicted class.

    ``pred`` and ``target`` are integer class maps of the same shape (any shape: [B, H, W] or
    flattened). Pixels whose target is ``ignore_index`` are left out; any other target or
    prediction outside ``0 .. num_classes - 1`` is an error, not a silent miscount.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} holds class {int(t.min() if t.min() < 0 else t.max())}, outside "
                             f"0..{num_classes - 1} (expected class indices, or ignore_index for the target)")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> list[float]:
    """IoU of every class: true positives / (true positives + false positives + false negatives);
    NaN for a class absent from both the labels and the predictions."""
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return [float(t / u) if u > 0 else math.nan for t, u in zip(tp.tolist(), union.tolist())]


def mean_iou(confusion: torch.Tensor) -> float:
    """The mean of ``iou_per_class`` over the classes that have one (NaN if none has)."""
    values = [v for v in iou_per_class(confusion) if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """The fraction of (not ignored) pixels whose predicted class is right."""
    total = confusion.sum().item()
    return confusion.diag().sum().item() / total if total else math.nan


def segmentation_scores(confusion: torch.Tensor) -> dict:
    """``miou``, ``pixel_accuracy`` and ``iou`` (per class) from one confusion matrix."""
    return {"miou": mean_iou(confusion), "pixel_accuracy": pixel_accuracy(confusion),
            "iou": iou_per_class(confusion)}
