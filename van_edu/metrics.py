"""Dense-prediction metrics by the field's standard: a confusion matrix accumulated over the whole
test set, then per-class IoU, their mean (mIoU) and pixel accuracy.

mIoU is computed from the matrix summed over all test pixels, not averaged per image (an image
where a class is absent would otherwise count as 0 or be skipped, depending on a convention).
A class that appears neither in the labels nor in the predictions has no IoU (NaN) and is left
out of the mean; pixels labelled ``ignore_index`` count nowhere.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "segmentation_scores", "floors",
           "per_image_confusion", "paired_bootstrap_miou", "box_iou", "detection_scores", "class_agnostic", "paired_bootstrap_ap", "truths_from_rows", "detection_floor", "SIZE_EDGES",
           "OVERLAP_EDGES", "instance_scores", "detection_instance_scores", "scores_by_bin", "paired_bootstrap_instances"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts: row = true class, column = predicted class.

    ``pred`` and ``target`` are integer class maps of the same shape (any shape: [B, H, W] or
    flattened; for classification, one class per image, [N], as notebook 06 uses it). Pixels whose target is ``ignore_index`` are left out; any other target or
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


def _np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``box_iou`` in numpy (float64), for the matching loop's small arrays."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.clip(area(a)[:, None] + area(b)[None, :] - inter, 1e-12, None)


def _match(detections, truths, num_classes: int, thresholds, max_dets: int, area_range=None) -> list[dict]:
    """COCO's matching, per class, at each IoU threshold, over all images.

    Per image and class, the ``max_dets`` best detections are taken from the highest score down,
    each claiming the free true box it overlaps most if that IoU reaches the threshold; true boxes
    that count (inside ``area_range``, by box area) are preferred to those that do not. A detection
    matched to a box that does not count is ignored, and so is an unmatched one whose own area is
    outside the range (COCO's rule for AP by size). Returns per class, in COCO's order (score
    descending, ties in image order): ``scores`` [n], ``image`` [n] (each detection's image),
    ``hit`` and ``counted`` [T, n] (bool, per threshold), and ``truths`` [N]: the true boxes that
    count, per image. Only detections that overlap a true box of their class by the lowest
    threshold enter the sequential loop; the rest are false positives at once.
    """
    lo, hi = area_range if area_range is not None else (-math.inf, math.inf)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    t_count = len(thresholds)
    parts = [{"scores": [], "image": [], "hit": [], "counted": []} for _ in range(num_classes)]
    per_image = np.zeros((num_classes, len(truths)), dtype=np.float64)
    for i, (det, truth) in enumerate(zip(detections, truths)):
        d_boxes = det["boxes"].detach().cpu().double().reshape(-1, 4).numpy()
        d_scores = det["scores"].detach().cpu().double().numpy()
        d_labels = det["labels"].detach().cpu().numpy()
        g_boxes = truth["boxes"].detach().cpu().double().reshape(-1, 4).numpy()
        g_labels = truth["labels"].detach().cpu().numpy()
        g_area = np.clip(g_boxes[:, 2:] - g_boxes[:, :2], 0, None).prod(-1)
        g_counts_all = (g_area >= lo) & (g_area <= hi)
        np.add.at(per_image[:, i], g_labels[g_counts_all], 1)
        for c in np.unique(d_labels):
            mine = np.flatnonzero(d_labels == c)
            mine = mine[np.argsort(-d_scores[mine], kind="stable")][:max_dets]
            boxes = d_boxes[mine]
            area = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)
            hit = np.zeros((t_count, len(mine)), dtype=bool)
            counted = np.broadcast_to((area >= lo) & (area <= hi), hit.shape).copy()   # unmatched: own area
            gts = g_labels == c
            if gts.any():
                ious = _np_iou(boxes, g_boxes[gts])                                      # [d, g]
                g_counts = g_counts_all[gts]
                near = np.flatnonzero(ious.max(1) >= thresholds.min())
                for t, threshold in enumerate(thresholds):
                    taken = np.zeros(len(g_counts), dtype=bool)
                    for j in near:
                        for prefer in (True, False):          # boxes that count first, then the others
                            free = ~taken & (g_counts == prefer) & (ious[j] >= threshold)
                            if free.any():
                                best = int(np.argmax(np.where(free, ious[j], -1.0)))
                                taken[best], hit[t, j], counted[t, j] = True, True, prefer
                                break
            part = parts[int(c)] if 0 <= c < num_classes else None
            if part is None:
                raise ValueError(f"a detection has class {int(c)} (expected 0..{num_classes - 1})")
            part["scores"].append(d_scores[mine])
            part["image"].append(np.full(len(mine), i))
            part["hit"].append(hit)
            part["counted"].append(counted)
    matches = []
    for c, part in enumerate(parts):
        if part["scores"]:
            scores = torch.from_numpy(np.concatenate(part["scores"]))
            order = torch.argsort(-scores, stable=True)                     # stable: ties keep image order
            matches.append({"scores": scores[order], "image": torch.from_numpy(np.concatenate(part["image"]))[order],
                            "hit": torch.from_numpy(np.concatenate(part["hit"], 1))[:, order],
                            "counted": torch.from_numpy(np.concatenate(part["counted"], 1))[:, order],
                            "truths": torch.from_numpy(per_image[c])})
        else:
            matches.append({"scores": torch.zeros(0, dtype=torch.float64), "image": torch.zeros(0, dtype=torch.int64),
                            "hit": torch.zeros(t_count, 0, dtype=torch.bool),
                            "counted": torch.zeros(t_count, 0, dtype=torch.bool), "truths": torch.from_numpy(per_image[c])})
    return matches


def _average_precision(match: dict, weights: torch.Tensor, t: int = 0) -> torch.Tensor:
    """AP by COCO's 101-point rule at the ``t``-th threshold of one class's ``_match``, once
    per row of ``weights`` [S, N] (how often each image counts; a row of ones gives the plain AP).
    NaN where no true box counts."""
    counted = match["counted"][t]
    w = weights[:, match["image"][counted]]                             # [S, n]: each detection's weight
    hit = match["hit"][t][counted].double()
    tp, fp = (w * hit).cumsum(1), (w * (1 - hit)).cumsum(1)
    total = weights @ match["truths"]                                   # [S]: true boxes that count
    aps = torch.full((len(weights),), math.nan, dtype=torch.float64)
    has = total > 0
    aps[has] = 0.0                                                      # objects, and nothing found
    if tp.shape[1] == 0 or not has.any():
        return aps
    recall = tp / total.clamp(min=1e-12)[:, None]
    precision = tp / (tp + fp).clamp(min=1e-12)
    precision = precision.flip(1).cummax(1).values.flip(1)             # best precision at any higher recall
    points = torch.linspace(0, 1, RECALL_POINTS, dtype=torch.float64).expand(len(weights), -1).contiguous()
    index = torch.searchsorted(recall, points, side="left")             # first detection reaching each recall
    reached = index < recall.shape[1]
    sampled = torch.where(reached, precision.gather(1, index.clamp(max=recall.shape[1] - 1)), torch.zeros_like(points))
    aps[has] = sampled.mean(1)[has]
    return aps


def detection_scores(detections: list[dict], truths: list[dict], num_classes: int, max_dets: int = 100,
                     area_range=None) -> dict:
    """COCO's box AP, by hand: ``map50`` (IoU 0.5) and ``map`` (the mean over IoU 0.50:0.05:0.95),
    each averaged over the classes that have objects, and ``ap50`` per class (None where absent).

    ``detections``: per image, ``boxes`` [n, 4], ``scores`` [n], ``labels`` [n]; ``truths``: per
    image, ``boxes`` and ``labels``. Per class and threshold, detections (the ``max_dets`` best per
    image) are taken from the highest score down, each matching the free true box it overlaps most
    if that IoU reaches the threshold; precision is made non-increasing in recall and read at 101
    recall points (0, 0.01, ..., 1), 0 beyond the highest recall reached. ``area_range`` (lo, hi)
    scores only the true boxes whose area (pixels, w x h) lies in it, as COCO's AP by size does
    (``_match`` says which detections are then ignored).
    """
    _check_detections(detections, truths)
    ones = torch.ones(1, len(truths), dtype=torch.float64)
    aps = torch.zeros(len(COCO_IOUS), num_classes, dtype=torch.float64)      # NaN: a class without objects
    for c, match in enumerate(_match(detections, truths, num_classes, COCO_IOUS, max_dets, area_range)):
        for t in range(len(COCO_IOUS)):
            aps[t, c] = _average_precision(match, ones, t)[0]
    means = aps.nanmean(1)                                                   # NaN where no class has objects
    return {"map50": float(means[0]), "map": float(means.mean()),
            "ap50": [None if math.isnan(a) else a for a in aps[0].tolist()]}


def truths_from_rows(rows: torch.Tensor) -> list[dict]:
    """Padded box rows [N, M, 5] (x0, y0, x1, y1, class; class -1 for padding, as the detection
    splits store them) as one ``{"boxes", "labels"}`` per image."""
    out = []
    for r in rows.detach().cpu():
        r = r[r[:, 4] >= 0]
        out.append({"boxes": r[:, :4].float(), "labels": r[:, 4].long()})
    return out


def detection_floor(train_truths: list[dict], test_truths: list[dict], num_classes: int, image_size: int,
                    boxes_per_image: int = 20, seed: int = 0) -> dict:
    """What a detector scores without looking: on every test image, ``boxes_per_image`` boxes whose
    class follows the training set's class frequencies, whose size is that of a random training box
    and whose place is uniform on the image, with random scores. Returns ``detection_scores`` of
    those guesses on ``test_truths`` (``map50``, ``map``, ``ap50``)."""
    labels = torch.cat([t["labels"] for t in train_truths])
    sizes = torch.cat([t["boxes"][:, 2:] - t["boxes"][:, :2] for t in train_truths]).float()
    if len(labels) == 0:
        raise ValueError("the training set has no boxes to take a prior from")
    prior = torch.bincount(labels, minlength=num_classes).double()
    g = torch.Generator().manual_seed(seed)
    guesses = []
    for _ in test_truths:
        k = torch.multinomial(prior, boxes_per_image, replacement=True, generator=g)
        wh = sizes[torch.randint(0, len(sizes), (boxes_per_image,), generator=g)]
        xy = torch.rand(boxes_per_image, 2, generator=g) * (image_size - wh).clamp(min=0)
        guesses.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": k,
                        "scores": torch.rand(boxes_per_image, generator=g)})
    return detection_scores(guesses, test_truths, num_classes)


def _check_detections(detections, truths) -> None:
    if len(detections) != len(truths):
        raise ValueError(f"expected the detections and the truths of the same images, got {len(detections)} "
                         f"lists of detections for {len(truths)} images")


def class_agnostic(items: list[dict]) -> list[dict]:
    """Detections or truths with every label set to 0: ``detection_scores(class_agnostic(found),
    class_agnostic(truths), 1)`` scores finding the objects, whatever their class."""
    return [{**item, "labels": torch.zeros_like(item["labels"])} for item in items]


def paired_bootstrap_ap(dets_a: list[dict], dets_b: list[dict], truths: list[dict], num_classes: int,
                        threshold: float = 0.5, samples: int = 1000, seed: int = 0, level: float = 0.95,
                        max_dets: int = 100) -> dict:
    """Two detectors scored on the same test images, compared by a paired bootstrap over images.

    Matching is decided within each image, so it is done once; each of ``samples`` resamples draws
    N images with replacement, the SAME images for both detectors, and recomputes both mAPs at IoU
    ``threshold`` (AP is not a mean over images: it is recomputed from the resampled detections and
    true boxes, each image counted as often as it was drawn). Returns ``a`` and ``b`` (the observed
    mAPs), their ``difference`` (a - b), the percentile interval ``low``..``high`` at ``level`` and a
    two-sided ``p`` (twice the share of resampled differences on the far side of zero, at least
    1 / samples), as ``paired_bootstrap_miou`` does.
    """
    _check_detections(dets_a, truths)
    _check_detections(dets_b, truths)
    n = len(truths)
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n, (samples, n), generator=g)
    weights = torch.zeros(samples, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(samples, n, dtype=torch.float64))
    matches = [_match(dets, truths, num_classes, (threshold,), max_dets) for dets in (dets_a, dets_b)]

    def maps(which: int, w: torch.Tensor) -> torch.Tensor:              # [S]: the mAP of each resample
        return torch.stack([_average_precision(m, w) for m in matches[which]]).nanmean(0)
    diffs = torch.cat([maps(0, w) - maps(1, w) for w in weights.split(100)])
    ones = torch.ones(1, n, dtype=torch.float64)
    a, b = float(maps(0, ones)[0]), float(maps(1, ones)[0])
    tail = (1 - level) / 2
    low, high = torch.quantile(diffs, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    far = min((diffs <= 0).double().mean().item(), (diffs >= 0).double().mean().item())
    return {"a": a, "b": b, "difference": a - b, "low": low, "high": high,
            "p": min(1.0, max(2 * far, 1 / samples)), "samples": samples, "level": level}


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
    objects = _objects(instances, areas, weights=(pred == target).reshape(-1).double())
    return {k: objects[k] for k in ("image", "area", "visible", "hidden")} | {"score": objects["hits"] / objects["visible"]}


def _objects(instances: torch.Tensor, areas: list, weights: torch.Tensor | None = None) -> dict:
    """Every object of ``instances`` [N, H, W] (0: none; i + 1: the i-th object of its image) with
    ``areas`` (per image, per object): ``image``, ``slot`` (i), ``area``, ``visible`` and ``hidden``
    over all M objects, and ``hits``: the sum of ``weights`` (one per pixel) over each object's pixels."""
    n, most = len(instances), max((len(a) for a in areas), default=0)
    slots = most + 1                                                  # slot 0: no object
    index = (torch.arange(n)[:, None] * slots + instances.reshape(n, -1).long()).flatten()
    visible = torch.bincount(index, minlength=n * slots).reshape(n, slots)[:, 1:]
    image = torch.tensor([i for i, a in enumerate(areas) for _ in a], dtype=torch.int64)
    slot = torch.tensor([j for a in areas for j in range(len(a))], dtype=torch.int64)
    area = torch.tensor([float(x) for a in areas for x in a], dtype=torch.float64)
    seen = visible[image, slot].double()
    if (seen == 0).any():
        raise ValueError("an object listed in areas has no visible pixel in instances (expected one area per "
                         "visible object, in the order of the instance ids)")
    objects = {"image": image, "slot": slot, "area": area, "visible": seen, "hidden": (1 - seen / area).clamp(min=0)}
    if weights is not None:
        objects["hits"] = torch.bincount(index, weights=weights, minlength=n * slots).reshape(n, slots)[:, 1:][image, slot]
    return objects


def detection_instance_scores(detections: list[dict], truths: list[dict], instances: torch.Tensor, areas: list,
                              iou: float = 0.5, min_score: float = 0.3) -> dict:
    """Score every object 1 if the detector found it, else 0: a detection of its class scoring at
    least ``min_score`` overlaps its box by IoU >= ``iou`` (per image and class, detections claim
    the free box they overlap most, best score first, as COCO matches). ``truths``' boxes are the
    objects of ``instances`` in order (box i is instance i + 1, as the scattered garments store
    them). The keys are ``instance_scores``' (``image``, ``area``, ``visible``, ``hidden``, ``score``),
    so ``scores_by_bin`` and ``paired_bootstrap_instances`` take them: a recall per object, by bin."""
    _check_detections(detections, truths)
    if len(instances) != len(truths) or len(areas) != len(truths) or any(
            len(t["boxes"]) != len(a) for t, a in zip(truths, areas)):
        raise ValueError("expected one image of instances and one list of areas per truth, with one area per box")
    objects = _objects(instances, areas)
    found = []
    for det, truth in zip(detections, truths):
        hit = torch.zeros(len(truth["boxes"]), dtype=torch.bool)
        keep = det["scores"] >= min_score
        boxes, labels = det["boxes"][keep], det["labels"][keep]
        order = torch.argsort(-det["scores"][keep], stable=True)
        ious = box_iou(boxes[order], truth["boxes"])                      # [d, g]
        same = labels[order][:, None] == truth["labels"][None, :]
        for j in range(len(order)):
            free = same[j] & ~hit & (ious[j] >= iou)
            if free.any():
                hit[int(torch.where(free, ious[j], torch.full_like(ious[j], -1.0)).argmax())] = True
        found.append(hit)
    score = torch.cat(found).double() if found else torch.zeros(0, dtype=torch.float64)
    return {k: objects[k] for k in ("image", "area", "visible", "hidden")} | {"score": score}


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
