"""An anchor-free detector on any backbone's pyramid: CenterNet (Zhou, Wang, Krähenbühl, "Objects
as Points", 2019), written plainly.

Every object is a point, the centre of its box, on the FPN's finest map (stride ``s``):

    maps    = FPN(backbone(x))[0]                 # [B, D, H/s, W/s]
    heatmap = sigmoid(Conv(maps))                 # [B, K, H/s, W/s]: "a centre of class k here"
    size    = Conv(maps)                          # [B, 2, H/s, W/s]: the box's width and height / s
    offset  = Conv(maps)                          # [B, 2, H/s, W/s]: the centre's sub-pixel offset

Training targets put a Gaussian at each box centre on its class's heatmap (its radius from the box
size: how far a same-sized box may be shifted and still overlap the true one by IoU 0.7), and the
size and offset at the centre pixel; the loss is the focal loss on the heatmaps plus L1 on sizes
(weight 0.1) and offsets at the centres. Decoding keeps the heatmaps' 3x3 local maxima (a
max-pool, no NMS), the top ``k``, and those above a score threshold.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VanEduError
from .fpn import FPN
from .registry import create_model

__all__ = ["CenterNet", "create_detector", "gaussian_radius", "encode_targets", "focal_loss", "PAPER_COCO_DETECTION"]

HEATMAP_PRIOR = 0.1        # the heatmap's initial sigmoid: a rare "centre here", so the loss starts calm
# The paper's abstract (arXiv 2202.09741; Computational Visual Media 9(4), 2023): on COCO object
# detection, VAN-B2's box AP beside Swin-T's (the full tables, every VAN size under RetinaNet and
# Mask R-CNN, are in the paper and are not reproduced here).
PAPER_COCO_DETECTION = {"van_b2": 48.8, "swin_t": 46.2}


def gaussian_radius(width: float, height: float, min_iou: float = 0.7) -> float:
    """The largest shift r (in both x and y) of a box of this size that keeps IoU >= ``min_iou``
    with the unshifted box. Shifted by (r, r), the boxes meet in (w - r)(h - r) and their union is
    2wh minus that, so IoU >= t  <=>  (w - r)(h - r) >= 2wh t / (1 + t): the smaller root of
    r^2 - (w + h) r + wh (1 - 2t / (1 + t)) = 0."""
    w, h, t = float(width), float(height), float(min_iou)
    c = w * h * (1.0 - 2.0 * t / (1.0 + t))
    return max(0.0, ((w + h) - math.sqrt((w + h) ** 2 - 4.0 * c)) / 2.0)


def _gaussian(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """Draw exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2 radius + 1) / 6, centred on (cx, cy),
    into ``heatmap`` [h, w] where it is higher (the maximum, as overlapping objects need)."""
    h, w = heatmap.shape
    sigma = (2 * radius + 1) / 6.0
    ys = torch.arange(max(0, cy - radius), min(h, cy + radius + 1))
    xs = torch.arange(max(0, cx - radius), min(w, cx + radius + 1))
    g = torch.exp(-((ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2).float() / (2 * sigma * sigma))
    region = heatmap[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    torch.maximum(region, g, out=region)


def encode_targets(boxes, labels, num_classes: int, out_size: int, stride: int) -> dict:
    """The training targets of one image. ``boxes`` [M, 4] (x0, y0, x1, y1, input pixels),
    ``labels`` [M] (0 .. num_classes - 1). Returns ``heatmap`` [K, S, S] (1 at each centre pixel),
    ``size`` and ``offset`` [2, S, S] (set at the centres), ``centres`` [S, S] (bool), with
    S = ``out_size`` (the map's side) and ``stride`` input pixels per map pixel."""
    heatmap = torch.zeros(num_classes, out_size, out_size)
    size, offset = torch.zeros(2, out_size, out_size), torch.zeros(2, out_size, out_size)
    centres = torch.zeros(out_size, out_size, dtype=torch.bool)
    for (x0, y0, x1, y1), k in zip(torch.as_tensor(boxes, dtype=torch.float32).tolist(), torch.as_tensor(labels).tolist()):
        w, h = (x1 - x0) / stride, (y1 - y0) / stride
        cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
        px, py = min(int(cx), out_size - 1), min(int(cy), out_size - 1)
        _gaussian(heatmap[int(k)], px, py, int(gaussian_radius(w, h)))
        size[:, py, px] = torch.tensor([w, h])
        offset[:, py, px] = torch.tensor([cx - px, cy - py])
        centres[py, px] = True
    return {"heatmap": heatmap, "size": size, "offset": offset, "centres": centres}


def focal_loss(logits: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's focal loss on heatmaps (Law and Deng's variant of Lin et al.'s): at a centre
    (target 1), -(1 - p)^alpha log p; elsewhere -(1 - y)^beta p^alpha log(1 - p), where y is the
    Gaussian's value (near a centre a high p is punished less); summed, over the number of centres."""
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)          # stable log p, log (1 - p)
    centre = heatmap.eq(1.0)
    pos = -((1 - p) ** alpha * log_p)[centre].sum()
    neg = -((1 - heatmap) ** beta * p ** alpha * log_not_p)[~centre].sum()
    return (pos + neg) / centre.sum().clamp(min=1)


class CenterNet(nn.Module):
    """Backbone (``features_only``) -> FPN -> three small heads on the finest level.

    ``forward`` returns ``{"heatmap": logits [B, K, h, w], "size": [B, 2, h, w], "offset": [B, 2, h, w]}``;
    ``loss(outputs, targets)`` and ``decode(outputs)`` work on those.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, neck_channels: int = 64, head_channels: int = 64):
        super().__init__()
        info = getattr(backbone, "feature_info", None)
        if not info:
            raise VanEduError(f"{type(backbone).__name__} is not a backbone: build it with "
                              "create_model(name, features_only=True), whose feature_info names its maps")
        self.backbone, self.num_classes = backbone, num_classes
        self.stride = info[0]["reduction"]
        self.neck = FPN([f["num_chs"] for f in info], neck_channels, num_outs=1)   # the finest level only

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(neck_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(head_channels, out, 1))

        self.heatmap, self.size, self.offset = branch(num_classes), branch(2), branch(2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    def forward(self, x: torch.Tensor) -> dict:
        finest = self.neck(self.backbone(x))[0]                    # [B, D, H / s, W / s]
        return {"heatmap": self.heatmap(finest), "size": self.size(finest), "offset": self.offset(finest)}

    def targets(self, labels: torch.Tensor, out_size: int) -> dict:
        """``encode_targets`` of every image of a batch of padded boxes ``labels`` [B, M, 5]
        (x0, y0, x1, y1, class; class -1 for padding), stacked, on ``labels``' device."""
        encoded = []
        for rows in labels.detach().cpu():
            rows = rows[rows[:, 4] >= 0]
            encoded.append(encode_targets(rows[:, :4], rows[:, 4].long(), self.num_classes, out_size, self.stride))
        return {k: torch.stack([e[k] for e in encoded]).to(labels.device) for k in encoded[0]}

    def loss(self, outputs: dict, labels: torch.Tensor, size_weight: float = 0.1) -> torch.Tensor:
        """Focal loss on the heatmaps + L1 on sizes (times ``size_weight``) and offsets at the
        centres, for a batch of padded boxes ``labels`` [B, M, 5] (what ``fit`` passes; a dict of
        ``encode_targets``' tensors stacked over the batch is taken as it is)."""
        targets = labels if isinstance(labels, dict) else self.targets(labels, outputs["heatmap"].shape[-1])
        centres = targets["centres"]                                 # [B, h, w]
        n = centres.sum().clamp(min=1)
        mask = centres[:, None].float()
        l1 = lambda name: (F.l1_loss(outputs[name] * mask, targets[name] * mask, reduction="sum") / n)  # noqa: E731
        return focal_loss(outputs["heatmap"].float(), targets["heatmap"]) + size_weight * l1("size") + l1("offset")

    @torch.no_grad()
    def decode(self, outputs: dict, k: int = 20, threshold: float = 0.1) -> list[dict]:
        """Per image, ``boxes`` [n, 4] (x0, y0, x1, y1, input pixels), ``scores`` [n] and ``labels``
        [n]: the heatmaps' 3x3 local maxima, the ``k`` highest, those scoring at least ``threshold``."""
        heat = torch.sigmoid(outputs["heatmap"].float())
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # a max-pool instead of NMS
        b, classes, h, w = heat.shape
        scores, index = peaks.flatten(1).topk(min(k, classes * h * w))
        labels, pixel = index // (h * w), index % (h * w)
        ys, xs = (pixel // w).float(), (pixel % w).float()
        found = []
        for i in range(b):
            off = outputs["offset"][i].flatten(1)[:, pixel[i]]           # [2, k]
            wh = outputs["size"][i].flatten(1)[:, pixel[i]].clamp(min=0)
            cx, cy = xs[i] + off[0], ys[i] + off[1]
            boxes = torch.stack([cx - wh[0] / 2, cy - wh[1] / 2, cx + wh[0] / 2, cy + wh[1] / 2], 1) * self.stride
            keep = scores[i] >= threshold
            found.append({"boxes": boxes[keep], "scores": scores[i][keep], "labels": labels[i][keep]})
        return found


def create_detector(backbone: str, num_classes: int, in_chans: int = 3, *, out_indices=None,
                    neck_channels: int = 64, head_channels: int = 64, **overrides) -> CenterNet:
    """A CenterNet on ``create_model(backbone, features_only=True, out_indices=...)``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise VanEduError(f"a detector needs num_classes >= 1, got {num_classes!r}")
    body = create_model(backbone, in_chans=in_chans, features_only=True, out_indices=out_indices, **overrides)
    return CenterNet(body, num_classes, neck_channels, head_channels)
