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

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "segmentation_scores", "floors",
           "per_image_confusion", "paired_bootstrap_miou", "box_iou", "detection_scores", "SIZE_EDGES",
           "OVERLAP_EDGES", "instance_scores", "scores_by_bin", "paired_bootstrap_instances"]


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


def _confusion_from_rule(hist: torch.Tensor, threshold: int, cls: int) -> torch.Tensor:
    """The confusion matrix of "intensity > threshold -> cls, else background (0)" from a histogram
    ``hist[v, k]`` of pixels of intensity v and true class k."""
    k = hist.shape[1]
    confusion = torch.zeros(k, k, dtype=torch.int64)
    confusion[:, 0] = hist[: threshold + 1].sum(0)
    confusion[:, cls] += hist[threshold + 1:].sum(0)
    return confusion


def floors(train_images: torch.Tensor, train_masks: torch.Tensor, test_images: torch.Tensor,
           test_masks: torch.Tensor, num_classes: int) -> dict:
    """Two segmenters with no learning, scored on the test set: what a trained model must beat.

    * ``background``: every pixel background (class 0);
    * ``threshold``: a pixel brighter than a threshold is the most frequent garment class of the
      training masks, the rest background; the threshold is the one with the best training mIoU.

    ``*_images`` are uint8 [N, C, H, W] (colour: the rule reads the mean of the channels),
    ``*_masks`` [N, H, W]; pixels with a negative label (``IGNORE_INDEX``) count nowhere. Each
    entry: ``miou``, ``pixel_accuracy`` (and the rule's ``threshold`` and ``class``).
    """
    def hist(images, masks):
        grey = images[:, 0].long() if images.shape[1] == 1 else images.float().mean(1).round().long()
        keep = masks >= 0
        index = grey[keep] * num_classes + masks[keep].long()
        return torch.bincount(index, minlength=256 * num_classes).reshape(256, num_classes)

    train_hist, test_hist = hist(train_images, train_masks), hist(test_images, test_masks)
    majority = int(train_hist[:, 1:].sum(0).argmax()) + 1
    best = max(range(256), key=lambda t: mean_iou(_confusion_from_rule(train_hist, t, majority)))
    background = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    background[:, 0] = test_hist.sum(0)
    rule = _confusion_from_rule(test_hist, best, majority)
    return {"background": {"miou": mean_iou(background), "pixel_accuracy": pixel_accuracy(background)},
            "threshold": {"miou": mean_iou(rule), "pixel_accuracy": pixel_accuracy(rule), "threshold": best,
                          "class": majority}}


def per_image_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One confusion matrix per image: [N, K, K] int64 from class maps [N, H, W]; their sum over
    images is ``confusion_matrix`` of the whole set."""
    if pred.shape != target.shape or pred.dim() < 2:
        raise ValueError(f"pred and target must be class maps of one shape [N, ...], got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    n, k = pred.shape[0], num_classes
    index = (torch.arange(n)[:, None] * k * k + target.reshape(n, -1).long() * k + pred.reshape(n, -1).long())
    return torch.bincount(index.flatten(), minlength=n * k * k).reshape(n, k, k)


def _miou_batch(confusions: torch.Tensor) -> torch.Tensor:
    """mIoU of each matrix in [B, K, K] (classes with no union left out), as ``mean_iou`` does."""
    c = confusions.double()
    tp = c.diagonal(dim1=1, dim2=2)
    union = c.sum(1) + c.sum(2) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    return iou.sum(1) / present.sum(1).clamp(min=1)


def paired_bootstrap_miou(conf_a: torch.Tensor, conf_b: torch.Tensor, samples: int = 2000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """Two segmenters scored on the same test images, compared by a paired bootstrap over images.

    ``conf_a``, ``conf_b``: per-image confusion matrices [N, K, K] (``per_image_confusion``) of the
    same N images. Each of ``samples`` resamples draws N images with replacement, the SAME images
    for both models, and recomputes both mIoUs from the summed matrices (mIoU is not a mean over
    images, so it is recomputed, not averaged). Returns the observed ``difference`` (a - b), the
    percentile interval ``low``..``high`` at ``level``, and a two-sided ``p`` (twice the share of
    resampled differences on the far side of zero, at least 1 / samples).
    """
    if conf_a.shape != conf_b.shape or conf_a.dim() != 3:
        raise ValueError(f"expected per-image confusion matrices [N, K, K] of the same images, got "
                         f"{list(conf_a.shape)} and {list(conf_b.shape)}")
    n = conf_a.shape[0]
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (samples, n), generator=g)
    weights = torch.zeros(samples, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(samples, n, dtype=torch.float64))
    flat_a, flat_b = conf_a.reshape(n, -1).double(), conf_b.reshape(n, -1).double()
    k = conf_a.shape[1]
    diffs = _miou_batch((weights @ flat_a).reshape(-1, k, k)) - _miou_batch((weights @ flat_b).reshape(-1, k, k))
    observed = mean_iou(conf_a.sum(0)) - mean_iou(conf_b.sum(0))
    tail = (1 - level) / 2
    low, high = torch.quantile(diffs, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    far = min((diffs <= 0).double().mean().item(), (diffs >= 0).double().mean().item())
    return {"difference": observed, "low": low, "high": high, "p": min(1.0, max(2 * far, 1 / samples)),
            "samples": samples, "level": level}


# --- Detection: average precision by COCO's rules -------------------------------------------------
COCO_IOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))      # 0.50, 0.55, ..., 0.95
RECALL_POINTS = 101                                         # COCO's interpolation: recall 0, 0.01, ..., 1


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4] (x0, y0, x1, y1): [n, m]."""
    a, b = a.double().reshape(-1, 4), b.double().reshape(-1, 4)
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-12)


def _class_ap(detections, truths, cls: int, threshold: float, max_dets: int) -> float | None:
    """AP of one class at one IoU threshold; None when no image has an object of the class."""
    found = []                                               # (score, image, box) in COCO's order
    for i, det in enumerate(detections):
        keep = det["labels"] == cls
        scores, boxes = det["scores"][keep], det["boxes"][keep]
        order = torch.argsort(-scores, stable=True)[:max_dets]
        found += [(float(scores[j]), i, boxes[j]) for j in order.tolist()]
    found.sort(key=lambda f: -f[0])                          # stable: ties keep image order
    gts = [t["boxes"][t["labels"] == cls] for t in truths]
    total = sum(len(g) for g in gts)
    if total == 0:
        return None
    taken = [torch.zeros(len(g), dtype=torch.bool) for g in gts]
    hits = []
    for _, i, box in found:                                  # each detection claims the best free match
        if len(gts[i]) == 0:
            hits.append(False)
            continue
        ious = box_iou(box[None], gts[i])[0]
        ious[taken[i]] = -1.0
        best = int(ious.argmax())
        hit = bool(ious[best] >= threshold)
        if hit:
            taken[i][best] = True
        hits.append(hit)
    tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    fp = torch.arange(1, len(hits) + 1, dtype=torch.float64) - tp
    recall, precision = tp / total, tp / (tp + fp).clamp(min=1e-12)
    for k in range(len(precision) - 2, -1, -1):              # the envelope: best precision at any higher recall
        precision[k] = max(precision[k], precision[k + 1])
    if not hits:
        return 0.0                                           # objects, and nothing found
    points = torch.linspace(0, 1, RECALL_POINTS, dtype=torch.float64)
    index = torch.searchsorted(recall, points, side="left")  # the first detection reaching each recall
    sampled = torch.zeros_like(points)
    reached = index < len(precision)
    sampled[reached] = precision[index[reached]]
    return float(sampled.mean())


def detection_scores(detections: list[dict], truths: list[dict], num_classes: int, max_dets: int = 100) -> dict:
    """COCO's box AP, by hand: ``map50`` (IoU 0.5) and ``map`` (the mean over IoU 0.50:0.05:0.95),
    each averaged over the classes that have objects, and ``ap50`` per class (None where absent).

    ``detections``: per image, ``boxes`` [n, 4], ``scores`` [n], ``labels`` [n]; ``truths``: per
    image, ``boxes`` and ``labels``. Per class and threshold, detections (the ``max_dets`` best per
    image) are taken from the highest score down, each matching the free true box it overlaps most
    if that IoU reaches the threshold; precision is made non-increasing in recall and read at 101
    recall points (0, 0.01, ..., 1), 0 beyond the highest recall reached.
    """
    per_threshold = {}
    for t in COCO_IOUS:
        aps = [_class_ap(detections, truths, c, t, max_dets) for c in range(num_classes)]
        per_threshold[t] = aps

    def mean(aps):
        values = [a for a in aps if a is not None]
        return sum(values) / len(values) if values else math.nan
    return {"map50": mean(per_threshold[COCO_IOUS[0]]),
            "map": sum(mean(per_threshold[t]) for t in COCO_IOUS) / len(COCO_IOUS),
            "ap50": per_threshold[COCO_IOUS[0]]}


# --- Segmentation by object: which garments does a segmenter get right? --------------------------
SIZE_EDGES = (0, 250, 450, math.inf)              # a garment's drawn area in pixels: about thirds of the test set
OVERLAP_EDGES = (-1.0, 0.0, 0.25, 0.5, 1.0)       # the share of it hidden by later garments: none, ..., most


def instance_scores(pred: torch.Tensor, target: torch.Tensor, instances: torch.Tensor, areas: list) -> dict:
    """Score every object of every image by the share of its visible pixels predicted with its class.

    ``pred``, ``target``: class maps [N, H, W]; ``instances`` [N, H, W]: 0 where no object is
    visible, i + 1 on the visible pixels of image n's i-th object; ``areas``: per image, each
    object's pixels before anything covered it (the scattered garments' ``areas``). Returns flat
    tensors over all M objects: ``image`` (its image's index), ``area``, ``visible`` (pixels),
    ``hidden`` (1 - visible / area: how much of it later objects cover) and ``score`` (right
    pixels / visible pixels, in [0, 1]). A recall per object: pixels of the object predicted as
    another class lower it; pixels elsewhere predicted as its class do not.
    """
    if not (pred.shape == target.shape == instances.shape) or pred.dim() != 3 or len(areas) != len(pred):
        raise ValueError(f"expected pred, target and instances of one shape [N, H, W] and N lists of areas, got "
                         f"{list(pred.shape)}, {list(target.shape)}, {list(instances.shape)} and {len(areas)} lists")
    n, most = len(pred), max((len(a) for a in areas), default=0)
    slots = most + 1                                                  # slot 0: no object
    index = (torch.arange(n)[:, None] * slots + instances.reshape(n, -1).long()).flatten()
    right = (pred == target).reshape(-1).double()
    visible = torch.bincount(index, minlength=n * slots).reshape(n, slots)[:, 1:]
    hits = torch.bincount(index, weights=right, minlength=n * slots).reshape(n, slots)[:, 1:]
    image = torch.tensor([i for i, a in enumerate(areas) for _ in a], dtype=torch.int64)
    slot = torch.tensor([j for a in areas for j in range(len(a))], dtype=torch.int64)
    area = torch.tensor([float(x) for a in areas for x in a], dtype=torch.float64)
    seen = visible[image, slot].double()
    if (seen == 0).any():
        raise ValueError("an object listed in areas has no visible pixel in instances (expected one area per "
                         "visible object, in the order of the instance ids)")
    return {"image": image, "area": area, "visible": seen, "hidden": (1 - seen / area).clamp(min=0),
            "score": hits[image, slot] / seen}


def _bin_of(values: torch.Tensor, edges) -> torch.Tensor:
    """The bin of each value: ``k`` for ``edges[k] < value <= edges[k + 1]``; -1 outside all bins."""
    edges_t = torch.tensor([float(e) for e in edges], dtype=torch.float64)
    k = torch.searchsorted(edges_t, values.double(), right=False) - 1
    return torch.where((k >= 0) & (k < len(edges) - 1), k, torch.full_like(k, -1))


def _bin_name(lo, hi) -> str:
    return f"({lo:g}, {hi:g}]" if hi != math.inf else f"> {lo:g}"


def scores_by_bin(scores: dict, key: str = "area", edges=SIZE_EDGES) -> list[dict]:
    """A small table of ``instance_scores``: per bin of ``key`` (``"area"`` or ``"hidden"``; bins
    ``(edges[k], edges[k + 1]]``), the ``count`` of objects and their ``mean`` score (NaN if none)."""
    which = _bin_of(scores[key], edges)
    rows = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = scores["score"][which == k]
        rows.append({"bin": "none (0)" if (key == "hidden" and hi == 0) else _bin_name(lo, hi),
                     "count": int(inside.numel()), "mean": float(inside.mean()) if inside.numel() else math.nan})
    return rows


def paired_bootstrap_instances(scores_a: dict, scores_b: dict, key: str = "area", edges=SIZE_EDGES,
                               samples: int = 2000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Two segmenters' ``instance_scores`` on the same objects, compared per bin by a paired
    bootstrap over images (objects of one image are not independent: they cover each other).

    Each resample draws the N images with replacement, the SAME images for both models, and takes
    each bin's mean score difference (a - b) over the objects of the drawn images. Per bin: ``bin``,
    ``count``, the observed ``difference``, the percentile interval ``low``..``high`` at ``level``
    and a two-sided ``p`` as in ``paired_bootstrap_miou`` (NaN where the bin is empty).
    """
    same = all(torch.equal(scores_a[k], scores_b[k]) for k in ("image", "area", "visible"))
    if not same:
        raise ValueError("expected the instance_scores of two models on the same objects (image, area and "
                         "visible differ)")
    n = int(scores_a["image"].max()) + 1 if scores_a["image"].numel() else 0
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, max(n, 1), (samples, max(n, 1)), generator=g)
    weights = torch.zeros(samples, max(n, 1), dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(samples, max(n, 1), dtype=torch.float64))      # [S, N]: how often each image is drawn
    which, diff = _bin_of(scores_a[key], edges), scores_a["score"] - scores_b["score"]
    tail, rows = (1 - level) / 2, []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = which == k
        row = {"bin": "none (0)" if (key == "hidden" and hi == 0) else _bin_name(lo, hi), "count": int(inside.sum())}
        if not inside.any():
            rows.append({**row, "difference": math.nan, "low": math.nan, "high": math.nan, "p": math.nan})
            continue
        image = scores_a["image"][inside]
        per_image = torch.zeros(max(n, 1), dtype=torch.float64).index_add_(0, image, diff[inside])
        counts = torch.zeros(max(n, 1), dtype=torch.float64).index_add_(0, image, torch.ones_like(diff[inside]))
        total = weights @ counts
        means = (weights @ per_image)[total > 0] / total[total > 0]              # resamples with no object: none
        low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
        far = min((means <= 0).double().mean().item(), (means >= 0).double().mean().item())
        rows.append({**row, "difference": float(diff[inside].mean()), "low": low, "high": high,
                     "p": min(1.0, max(2 * far, 1 / samples))})
    return rows
