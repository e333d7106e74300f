"""Checks of exercise set 07 (dense prediction): the FPN's top-down pathway, the confusion matrix,
IoU and mIoU from it, resizing masks, logits to a mask; for detection, CenterNet's Gaussian heatmap
target, its peak decoding, and the IoU of two sets of boxes (references: the package's own, or torch's).
"""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..metrics import box_iou as ref_box_iou
from ..metrics import confusion_matrix as ref_confusion
from ..metrics import iou_per_class, mean_iou
from ..models.centernet import CenterNet, encode_targets, gaussian_radius
from ..models.fpn import FPN
from ._core import CheckFailed, draw, expect, fmt_shape, load_reference_state, randomize, task_check


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _same_list(got, want: list) -> bool:
    return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
        isinstance(g, torch.Tensor) and g.shape == w.shape and torch.allclose(g.double(), w.double(), 1e-4, 1e-5)
        for g, w in zip(got, want))


def _expect_or_hint(got, want, label: str, mistakes: dict, **tol) -> None:
    """``expect``, with the message of the first known mistake whose output ``got`` equals (once its
    kind and shape are right: a hint explains values, not a wrong shape or dtype)."""
    try:
        expect(got, want, label, **tol)
    except CheckFailed as err:
        if isinstance(want, torch.Tensor) and (not isinstance(got, torch.Tensor) or got.shape != want.shape
                                               or got.dtype.is_floating_point != want.dtype.is_floating_point):
            raise
        for message, wrong in mistakes.items():
            if _same_list(got, wrong) if isinstance(wrong, list) else (isinstance(got, torch.Tensor) and torch.equal(
                    got.long(), wrong.long())):
                raise CheckFailed(f"{err}. Hint: {message}") from None
        raise


# --- 1. the FPN's top-down pathway -----------------------------------------------------------------
def _fpn_mistakes(fpn: FPN, maps: list) -> dict:
    """What an FPN that made one known mistake returns, with the reference's weights."""
    def run(mode="nearest", accumulate=True, smooth=True, smooth_first=False):
        lat = [conv(m) for conv, m in zip(fpn.lateral_convs, maps)]
        if smooth_first:
            lat = [conv(x) for conv, x in zip(fpn.fpn_convs, lat)]
        raw = list(lat)
        for i in range(len(lat) - 1, 0, -1):
            above = (lat if accumulate else raw)[i]
            lat[i - 1] = lat[i - 1] + F.interpolate(above, size=lat[i - 1].shape[-2:], mode=mode)
        return [conv(x) for conv, x in zip(fpn.fpn_convs, lat)] if smooth and not smooth_first else lat

    return {
        "upsample with mode='nearest' (each coarse value copied), not bilinear": run(mode="bilinear"),
        "use torch's plain mode='nearest', the FPN's convention (not 'nearest-exact')": run(mode="nearest-exact"),
        "go from the coarsest level down, so that each level receives the sum of ALL the coarser ones "
        "(add the already-merged coarser map, not its bare lateral)": run(accumulate=False),
        "finish with the 3x3 conv (fpn_convs) on every merged map": run(smooth=False),
        "the 3x3 convs come after the top-down additions, not before them": run(smooth_first=True),
    }


@task_check("fpn_top_down", "van_edu.models.fpn.FPN", "van_edu.models.fpn.SemanticFPN",
            "van_edu.models.fpn.create_segmenter")
def fpn_top_down(S, hidden: bool, rng: random.Random):
    """``cls(in_channels, out_channels)``: ``lateral_convs``, ``fpn_convs``; maps in, maps out, finest first."""
    cases = [([4, 8, 16], 6, 16), ([3, 5, 7, 9], 4, 15)]       # (channels, out, finest side): 15 -> 8 -> 4 -> 2
    if hidden:
        cases += [([2, 6], 3, 9), ([8, 8, 8], 5, 13), ([1, 2, 3, 4], 2, 20)]
        cases += [([rng.randint(1, 9) for _ in range(rng.randint(2, 4))], rng.randint(1, 8), rng.randint(5, 24))]
    g = torch.Generator().manual_seed(draw(rng, hidden, 70))
    for chans, out, side in cases:
        label = f"FPN({chans}, {out})"
        mine = S.call(chans, out, _name="FPN", _seed=7)
        reference = randomize(FPN(chans, out), g)
        load_reference_state(S, mine, reference, label, signature=True)
        sides = [side]
        for _ in chans[1:]:
            sides.append((sides[-1] + 1) // 2)                  # a stride-2 conv with padding 1, as the stages
        maps = [torch.randn(2, c, s, s, generator=g) for c, s in zip(chans, sides)]
        what = f"{label} on maps {[list(m.shape[1:]) for m in maps]}"
        try:
            got = S.forward(mine, [m.clone() for m in maps], label=what)
        except CheckFailed as err:
            if "must match the size" in str(err) and side % 2:
                raise CheckFailed(f"{err}. Hint: an odd side halves rounding up (15 -> 8): upsample each coarser "
                                  "map to the finer one's own size (size=...), not by scale_factor=2") from None
            raise
        with torch.no_grad():
            _expect_or_hint(got, reference(maps), what, _fpn_mistakes(reference, maps), atol=1e-4, rtol=1e-4)
    return f"{len(cases)} pyramids match the reference FPN"


# --- 2. the confusion matrix ------------------------------------------------------------------------
def _labels(g, shape, k: int, ignore, absent=()) -> torch.Tensor:
    keep = [c for c in range(k) if c not in absent]
    out = torch.tensor(keep)[torch.randint(len(keep), shape, generator=g)]
    if ignore is not None:
        out[torch.rand(shape, generator=g) < 0.15] = ignore
    return out


@task_check("confusion_matrix", "van_edu.metrics.confusion_matrix", "van_edu.metrics.per_image_confusion")
def confusion_matrix(S, hidden: bool, rng: random.Random):
    """``fn(pred, target, num_classes, ignore_index=None)`` -> [K, K] counts, row = truth, column = prediction."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 71))
    cases = [(torch.tensor([[0, 1, 1], [2, 2, 0]]), torch.tensor([[0, 1, 2], [2, 0, 0]]), 3, None)]
    cases.append((_labels(g, (2, 5, 5), 4, None), _labels(g, (2, 5, 5), 4, 255), 4, 255))
    if hidden:
        for k, ignore in ((2, 255), (6, -1), (9, None), (rng.randint(2, 12), 255), (5, 5)):
            shape = (rng.randint(1, 3), rng.randint(1, 12), rng.randint(1, 12))
            absent = {rng.randrange(k)} if k > 2 else set()
            cases.append((_labels(g, shape, k, None, absent), _labels(g, shape, k, ignore, absent), k, ignore))
    for pred, target, k, ignore in cases:
        label = f"confusion_matrix(pred {fmt_shape(pred)}, target {fmt_shape(target)}, {k}, ignore_index={ignore})"
        try:
            got = S.call(pred.clone(), target.clone(), k, ignore_index=ignore)
        except CheckFailed as err:
            if ignore is None:
                raise
            raise CheckFailed(f"{err}. Hint: {int((target == ignore).sum())} pixels of this target are labelled "
                              f"ignore_index={ignore}: leave them out before counting") from None
        want = ref_confusion(pred, target, k, ignore)
        _expect_or_hint(got, want, label, {"rows are the TRUE classes, columns the predicted ones (you have the "
                                           "transpose)": want.T}, atol=0, rtol=0)
    return f"{len(cases)} confusion matrices match"


# --- 3. IoU and mIoU --------------------------------------------------------------------------------
def _confusion_case(g, k: int, absent: int, missed: int) -> torch.Tensor:
    c = torch.randint(0, 6, (k, k), generator=g)
    c += torch.diag(torch.randint(3, 20, (k,), generator=g))
    order = torch.randperm(k, generator=g).tolist()
    for cls in order[:absent]:                     # in neither the truth nor the prediction
        c[cls, :], c[:, cls] = 0, 0
    for cls in order[absent:absent + missed]:      # in the truth (or predicted), never right
        c[cls, cls] = 0
    return c


def _iou_hint(got, conf: torch.Tensor, ious: list) -> str:
    """Which known mistake a wrong ``iou_scores`` answer made, if one is recognised."""
    if not isinstance(got, dict) or not isinstance(got.get("iou"), (list, tuple)) or len(got["iou"]) != len(ious):
        return ""
    for cls, (have, want) in enumerate(zip(got["iou"], ious)):
        if (want is None) != (have is None):
            return (f". Hint: class {cls} " + ("has no pixel in the truth nor in the prediction: its IoU is None"
                                               if want is None else "has pixels in the truth or the prediction: its "
                                               "IoU is a number (0 when none of them is right)"))
    def near(value, target) -> bool:   # numbers only: a learner's value may be anything
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value - target) < 1e-6

    tp, union = conf.diag().double(), (conf.sum(0) + conf.sum(1)).double()
    scored = [v for v in ious if v]
    for message, iou, miou in (
            ("the union counts the right pixels once: TP + FP + FN = row + column - diagonal", tp / union, None),
            ("that is the Dice score 2 TP / (row + column), not IoU", 2 * tp / union, None),
            ("average only the classes that have an IoU (an absent class is not a 0)", None,
             sum(v or 0.0 for v in ious) / len(ious)),
            ("a class that is present but never right has IoU 0, and it counts in the mean", None,
             sum(scored) / max(len(scored), 1))):
        if (all(v is None or near(v, t) for v, t in zip(got["iou"], iou.tolist())) if miou is None
                else near(got.get("miou"), miou)):
            return f". Hint: {message}"
    return ""


@task_check("iou_scores", "van_edu.metrics.iou_per_class", "van_edu.metrics.mean_iou",
            "van_edu.metrics.segmentation_scores")
def iou_scores(S, hidden: bool, rng: random.Random):
    """``fn(confusion)`` -> ``{"iou": [K floats or None], "miou": float}``."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 72))
    cases = [torch.tensor([[5, 1, 0, 0], [2, 3, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]), _confusion_case(g, 5, 1, 1)]
    if hidden:
        cases += [_confusion_case(g, k, a, m) for k, a, m in ((2, 0, 0), (8, 3, 1), (12, 2, 2), (6, 5, 0))]
        # at least 3 classes, so that one absent and one missed class leave a class with pixels: an
        # all-zero matrix (no pixel at all) has no mean IoU to ask for
        cases.append(_confusion_case(g, rng.randint(3, 15), rng.randint(0, 1), rng.randint(0, 1)))
    for conf in cases:
        label = f"iou_scores(confusion {fmt_shape(conf)} = {conf.tolist()!s:.80})"
        try:
            got = S.call(conf.clone())
        except CheckFailed as err:
            raise CheckFailed(f"{err}" + (". Hint: a class with no pixel in the truth nor in the prediction has no "
                                          "IoU: report None for it (not NaN) and leave it out of the mean"
                                          if "NaN" in str(err) else "")) from None
        ious = [None if math.isnan(v) else v for v in iou_per_class(conf)]
        try:
            expect(got, {"iou": ious, "miou": mean_iou(conf)}, label, rel=1e-6)
        except CheckFailed as err:
            raise CheckFailed(f"{err}{_iou_hint(got, conf, ious)}") from None
    return f"{len(cases)} confusion matrices give the reference IoUs and mIoU"


# --- 4. resizing masks ------------------------------------------------------------------------------
@task_check("resize_mask")
def resize_mask(S, hidden: bool, rng: random.Random):
    """``fn(mask, size)`` -> [B, H, W] of the mask's dtype: every label taken from one input pixel (nearest-exact)."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 73))
    sparse = torch.tensor([0, 3, 9, 255], dtype=torch.uint8)
    cases = [(sparse[torch.randint(4, (2, 5, 5), generator=g)], (12, 9)), (torch.arange(16).reshape(1, 4, 4), 2)]
    if hidden:
        cases += [(torch.randint(0, 11, (3, 8, 6), generator=g), (5, 3)), (torch.tensor([[[0, 7], [7, 0]]]), 5),
                  (sparse[torch.randint(4, (1, 9, 9), generator=g)], 4),
                  (torch.randint(0, 21, (2, rng.randint(1, 30), rng.randint(1, 30)), generator=g),
                   (rng.randint(1, 40), rng.randint(1, 40)))]
    for mask, size in cases:
        label = f"resize_mask(mask {fmt_shape(mask)} {str(mask.dtype).removeprefix('torch.')}, size={size})"
        got = S.call(mask.clone(), size)
        want = F.interpolate(mask[:, None].float(), size=_pair(size), mode="nearest-exact")[:, 0].to(mask.dtype)
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            if got.dtype != mask.dtype:
                raise CheckFailed(f"{label}: expected the mask's own dtype {mask.dtype}, got {got.dtype}")
            new = sorted(set(got.unique().tolist()) - set(mask.unique().tolist()))
            if new:
                raise CheckFailed(f"{label}: labels {new[:6]} appear in no pixel of the input: the resize "
                                  "averages neighbouring labels (as bilinear does; rounding does not undo it): "
                                  "take each output pixel's label from one input pixel (mode='nearest-exact')")
        smooth = F.interpolate(mask[:, None].float(), size=_pair(size), mode="bilinear")[:, 0]
        mixed = "bilinear interpolation averages neighbouring labels (3 and 9 make 6), and {} does not undo it: " \
                "take each label from one input pixel (mode='nearest-exact')"
        _expect_or_hint(got, want, label, {
            mixed.format("rounding"): smooth.round(), mixed.format("truncating (.long())"): smooth.floor(),
            "torch's mode='nearest' takes the top-left source pixel (floor(i * scale)), which moves the mask "
            "up to half a pixel against its image: use mode='nearest-exact' (pixel centres)":
            F.interpolate(mask[:, None].float(), size=_pair(size), mode="nearest")[:, 0]}, atol=0, rtol=0)
    return f"{len(cases)} masks resized with their labels intact"


# --- 5. logits to a mask ----------------------------------------------------------------------------
@task_check("predict_mask")
def predict_mask(S, hidden: bool, rng: random.Random):
    """``fn(logits, size)`` -> [B, H, W] int64: logits upsampled bilinearly (align_corners=False), then argmax."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 74))
    cases = [(torch.randn(2, 3, 4, 4, generator=g), 16), (torch.randn(1, 5, 6, 5, generator=g), (24, 20))]
    if hidden:
        cases += [(torch.randn(3, 11, 7, 7, generator=g), (28, 28)), (torch.randn(1, 2, 1, 1, generator=g), 3),
                  (torch.randn(2, rng.randint(2, 12), rng.randint(1, 9), rng.randint(1, 9), generator=g),
                   (rng.randint(1, 40), rng.randint(1, 40)))]
    for logits, size in cases:
        label = f"predict_mask(logits {fmt_shape(logits)}, size={size})"
        got = S.call(logits.clone(), size)
        scores = F.interpolate(logits, size=_pair(size), mode="bilinear", align_corners=False)
        want = scores.argmax(1)
        if (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
                and got.min() >= 0 and got.max() < scores.shape[1]
                and (scores.gather(1, got[:, None])[:, 0] >= scores.amax(1) - 1e-5).all()):
            got = want                                 # the same classes, up to near-ties of the scores
        _expect_or_hint(got, want, label, {
            "upsample the scores first, then take the argmax (a class map cannot be interpolated)":
            F.interpolate(logits.argmax(1, keepdim=True).float(), size=_pair(size), mode="nearest")[:, 0],
            "use align_corners=False (pixel centres, as the image was resized)":
            F.interpolate(logits, size=_pair(size), mode="bilinear", align_corners=True).argmax(1),
        }, atol=0, rtol=0)
    return f"{len(cases)} class maps match the upsampled argmax"


# --- 6. a Gaussian heatmap target -------------------------------------------------------------------
def _boxes(g, m: int, side: float, lo: float, hi: float) -> torch.Tensor:
    """``m`` boxes (x0, y0, x1, y1) centred inside a ``side``-pixel image, sides ``lo`` to ``hi`` of it
    (so a box may reach past the image's edges)."""
    centre, wh = side * torch.rand(m, 2, generator=g), side * (lo + (hi - lo) * torch.rand(m, 2, generator=g))
    return torch.cat([centre - wh / 2, centre + wh / 2], 1)


def _heat(boxes, labels, k: int, size: int, stride: int, at=math.floor, sub=False, span=1, join=torch.maximum,
          two=2.0, swap=False, rint=int) -> torch.Tensor:
    """``encode_targets``' heatmap drawn again, with a knob for each known mistake."""
    out, grid = torch.zeros(k, size, size), torch.arange(size, dtype=torch.float64)
    for (x0, y0, x1, y1), c in zip(boxes.tolist(), labels.tolist()):
        exact = rint(gaussian_radius((x1 - x0) / stride, (y1 - y0) / stride))
        r, cx, cy = int(exact), (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        px, py = min(at(cx), size - 1), min(at(cy), size - 1)
        win = [((grid - p >= -r) & (grid - p < r + span)).double() for p in (py, px)]
        d2 = (grid[:, None] - (cy if sub else py)) ** 2 + (grid[None] - (cx if sub else px)) ** 2
        g = torch.exp(-d2 / (two * ((2 * exact + 1) / 6) ** 2)) * win[0][:, None] * win[1][None]
        out[c] = join(out[c], (g.T if swap else g).float())
    return out


@task_check("heatmap_target", "van_edu.models.centernet.encode_targets", "van_edu.models.centernet._gaussian")
def heatmap_target(S, hidden: bool, rng: random.Random):
    """``fn(boxes, labels, num_classes, out_size, stride)`` -> [num_classes, out_size, out_size] float."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 75))
    cases = [(torch.tensor([[4.0, 6.0, 60.0, 58.0], [16.0, 14.0, 64.0, 62.0], [-24.0, 10.0, 26.0, 60.0],
                            [30.0, 4.0, 39.0, 11.0]]), torch.tensor([0, 0, 1, 1]), 2, 16, 4),
             (_boxes(g, 5, 64, 0.2, 0.7), torch.randint(3, (5,), generator=g), 3, 32, 2)]
    if hidden:
        crowd = torch.tensor([[8.0, 8.0, 56.0, 56.0], [12.0, 10.0, 62.0, 59.0], [3.0, 14.0, 53.0, 60.0]])
        cases += [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 2, 8, 4),
                  (crowd + 4 * rng.randint(0, 3), torch.tensor([0, 0, 0]), 1, 20, 4),
                  (_boxes(g, 6, 40, 0.3, 0.9), torch.zeros(6, dtype=torch.int64), 1, 40, 1)]
        for _ in range(2):
            k, size, stride, m = rng.randint(1, 4), rng.randint(8, 40), rng.choice([1, 2, 4]), rng.randint(1, 7)
            cases.append((_boxes(g, m, size * stride, 0.1, 0.9), torch.randint(k, (m,), generator=g), k, size, stride))
    for boxes, labels, k, size, stride in cases:
        shown = [[round(v, 2) for v in b] for b in boxes.tolist()]
        label = (f"heatmap_target(boxes={shown!s:.110}, labels={labels.tolist()}, num_classes={k}, "
                 f"out_size={size}, stride={stride})")
        try:
            got = S.call(boxes.clone(), labels.clone(), k, size, stride)
        except CheckFailed as err:
            hint = (". Hint: clip the window at the map's border (a box may reach past the image's edges): rows "
                    "max(0, cy - r) to min(out_size, cy + r + 1)") if "must match the size" in str(err) else ""
            raise CheckFailed(f"{err}{hint}") from None
        args = (boxes, labels, k, size, stride)
        expect(got, encode_targets(*args)["heatmap"], label, atol=1e-5, rtol=1e-4, hints={
            "overlapping Gaussians of one class combine by the maximum, not the sum": _heat(*args, join=torch.add),
            "the window spans 2r + 1 pixels, from centre - r to centre + r included": _heat(*args, span=0),
            "the centre pixel is the centre on the map floored (int(cx)), not rounded":
            _heat(*args, at=lambda v: math.floor(v + 0.5)),
            "measure dx, dy from the centre pixel, not from the exact sub-pixel centre (the centre pixel is "
            "exactly 1)": _heat(*args, sub=True),
            "the Gaussian is exp(-(dx^2 + dy^2) / (2 sigma^2)): the 2 is missing": _heat(*args, two=1.0),
            "rows are y and columns x: the centre is heatmap[label, cy, cx]": _heat(*args, swap=True),
            "r = int(gaussian_radius(...)), a whole number, in the window and in sigma": _heat(*args, rint=float)})
    return f"{len(cases)} heatmaps match encode_targets'"


# --- 7. peaks, with a max-pool ----------------------------------------------------------------------
def _hills(g, b: int, k: int, h: int, w: int) -> torch.Tensor:
    """Smooth random hills in (0, 1), every value distinct (no ties, no plateaus)."""
    v = F.avg_pool2d(torch.rand(b * k, 1, h + 2, w + 2, generator=g), 3, stride=1).reshape(b, k, h, w)
    rank = v.flatten().argsort().argsort()
    return ((rank + 1).float() / (rank.numel() + 1)).reshape(v.shape)


@task_check("find_peaks", "van_edu.models.centernet.CenterNet")
def find_peaks(S, hidden: bool, rng: random.Random):
    """``fn(heat, k)`` -> (scores, classes, ys, xs), each [B, k]: the top k 3x3 local maxima, highest first."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 76))
    shapes = [((2, 3, 8, 8), 5), ((1, 2, 6, 11), 4)]
    if hidden:
        shapes += [((3, 1, 5, 5), 2), ((2, 4, 12, 9), 12), ((1, 1, 1, 1), 1),
                   ((rng.randint(1, 3), rng.randint(1, 6), rng.randint(3, 16), rng.randint(3, 16)), rng.randint(1, 20))]
    names = ("scores", "classes", "ys", "xs")
    for shape, k in shapes:
        heat = _hills(g, *shape)
        peaks = (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).flatten(1).sum(1)
        k = min(k, int(peaks.min()))                    # no more than each image has: every answer is a peak
        label = f"find_peaks(heat {fmt_shape(heat)}, k={k})"
        try:
            got = S.call(heat.clone(), k)
        except CheckFailed as err:
            hint = ". Hint: F.max_pool2d(heat, 3, stride=1, padding=1) keeps the map's size"
            raise CheckFailed(f"{err}{hint if 'must match the size' in str(err) else ''}") from None
        if not isinstance(got, (list, tuple)) or len(got) != 4:
            what = f"a {type(got).__name__} of {len(got)}" if isinstance(got, (list, tuple)) else fmt_shape(got)
            raise CheckFailed(f"{label}: expected 4 tensors (scores, classes, ys, xs), got {what}")
        fake = SimpleNamespace(stride=1)                # CenterNet.decode with boxes of size 0 at the peaks
        zero = torch.zeros(shape[0], 2, *shape[2:])
        found = CenterNet.decode(fake, {"heatmap": torch.logit(heat.double()), "size": zero, "offset": zero}, k, 0.0)
        ref = [torch.stack([f["scores"] for f in found]).float(), torch.stack([f["labels"] for f in found]),
               *(torch.stack([f["boxes"][:, i] for f in found]).long() for i in (1, 0))]
        plain = heat.flatten(1).topk(k).values
        expect(dict(zip(names, got)), dict(zip(names, ref)), label, hints={
            "keep only the 3x3 local maxima (a pixel equal to the 3x3 max-pool of its map), then take the top k":
            plain, "heat is already a probability: do not apply sigmoid again": torch.sigmoid(ref[0]),
            "the flat index of (y, x) is y * w + x: y = pixel // w, x = pixel % w (ys and xs are swapped)": ref[3]})
    return f"{len(shapes)} heatmaps give the reference's peaks"


# --- 8. IoU of two sets of boxes --------------------------------------------------------------------
def _iou(a, b, clamp=True, minus=True, plus=0.0) -> torch.Tensor:
    """IoU with a known mistake: no clamp of the overlap, a union that counts it twice, widths + 1."""
    a, b = a.double(), b.double()
    side = torch.minimum(a[:, None, 2:], b[None, :, 2:]) - torch.maximum(a[:, None, :2], b[None, :, :2]) + plus
    inter = (side.clamp(min=0) if clamp else side).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2] + plus).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter * minus)


@task_check("box_iou", "van_edu.metrics.box_iou")
def box_iou(S, hidden: bool, rng: random.Random):
    """``fn(a, b)`` -> [n, m]: the IoU of every box of ``a`` [n, 4] with every box of ``b`` [m, 4]."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 77))
    cases = [(torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]]),
              torch.tensor([[1.0, 1.0, 3.0, 4.0], [4.0, 4.0, 5.0, 6.0], [2.0, 0.0, 4.0, 2.0], [0.5, 0.5, 1.5, 1.5]])),
             (_boxes(g, 3, 20, 0.1, 0.5), _boxes(g, 5, 20, 0.1, 0.5))]
    if hidden:
        cases += [(_boxes(g, n, 30, 0.05, 0.6), _boxes(g, m, 30, 0.05, 0.6)) for n, m in ((0, 3), (4, 0), (0, 0))]
        cases += [(_boxes(g, rng.randint(1, 12), 30, 0.05, 0.6), _boxes(g, rng.randint(1, 12), 30, 0.05, 0.6))]
    for a, b in cases:
        show = lambda t: [[round(v, 2) for v in r] for r in t.tolist()]  # noqa: E731
        label = f"box_iou(a={show(a)!s:.100}, b={show(b)!s:.100})"
        try:
            got = S.call(a.clone(), b.clone())
        except CheckFailed as err:
            hint = (". Hint: with no boxes on a side the IoUs are an empty [n, m] tensor" if not (len(a) and len(b))
                    else ". Hint: pair every box of a with every box of b by broadcasting, a[:, None] against "
                    "b[None, :]" if "must match the size" in str(err) else "")
            raise CheckFailed(f"{err}{hint}") from None
        expect(got, ref_box_iou(a, b).float(), label, hints={
            "clamp each side of the overlap at 0 (apart boxes overlap by 0; two negative sides make a positive "
            "area)": _iou(a, b, clamp=False),
            "the union counts the overlap once: area(a) + area(b) - overlap": _iou(a, b, minus=False),
            "the coordinates are continuous: a box is x1 - x0 wide (no + 1)": _iou(a, b, plus=1.0)})
    return f"{len(cases)} pairs of box sets give the reference IoUs"
