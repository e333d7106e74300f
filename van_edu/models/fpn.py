"""Semantic FPN: a segmenter on any backbone's pyramid, as the VAN authors configured it.

The authors' segmentation code (mmsegmentation) puts VAN-B0..B3 under a Semantic FPN (Kirillov et
al., "Panoptic Feature Pyramid Networks", 2019): the four stages (strides 4, 8, 16, 32, each after
its norm) go into an FPN neck with 256 channels and an FPN head with 128, dropout 0.1, trained with
a pixel-wise cross-entropy on ADE20K. Written plainly here:

    maps  = backbone(x)                       # [B, C_i, H / r_i, W / r_i], finest first
    lat_i = Conv1x1(maps_i)                   # the neck: every level to `neck_channels`
    lat_i = lat_i + up(lat_{i+1})             # top-down, coarsest first: nearest-neighbour x2, add
    p_i   = Conv3x3(lat_i)                    # smooth each sum
    s_i   = [Conv3x3 + BN + ReLU, up x2] * log2(r_i / r_0)   # the head: every level to the finest stride
    y     = Conv1x1(dropout(sum_i s_i))       # class scores at stride r_0
    logits = bilinear(y, size of x)           # [B, num_classes, H, W]

Any backbone built with ``create_model(name, features_only=True)`` plugs in (its ``feature_info``
gives the channels and strides); the course scales the channels down for the CPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VanEduError
from .registry import create_model

__all__ = ["FPN", "FPNHead", "SemanticFPN", "create_segmenter", "PAPER_SEMANTIC_FPN_ADE20K"]

# The paper's semantic segmentation with this head (and the authors' segmentation repository): VAN
# B0-B3, ImageNet-1K pre-trained, under a Semantic FPN on ADE20K's 150 classes, 40k iterations;
# single-scale mIoU (%).
PAPER_SEMANTIC_FPN_ADE20K = {"van_b0": 38.5, "van_b1": 42.9, "van_b2": 46.7, "van_b3": 48.1}


class FPN(nn.Module):
    """The FPN neck: lateral 1x1 convs, a top-down pathway (nearest-neighbour upsampling and
    addition), and a 3x3 conv on every sum. Maps in, maps out (finest first), all ``out_channels``;
    ``num_outs`` keeps only the finest that many (a head that reads one level needs no other's conv)."""

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int | None = None):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        outs = len(in_channels) if num_outs is None else num_outs
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(outs))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(maps) != len(self.lateral_convs):
            raise VanEduError(f"this FPN takes {len(self.lateral_convs)} maps, got {len(maps)}")
        laterals = [conv(m) for conv, m in zip(self.lateral_convs, maps)]     # [B, D, H_i, W_i]
        for i in range(len(laterals) - 1, 0, -1):                               # top-down, coarsest first
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        return [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]


class FPNHead(nn.Module):
    """The Semantic FPN head: each level brought to the finest level's stride by ``log2(r_i / r_0)``
    steps of (3x3 conv, BatchNorm, ReLU, bilinear x2) (one conv step, no upsampling, for the finest),
    the levels summed, dropout, and a 1x1 classifier."""

    def __init__(self, in_channels: int, channels: int, strides: list[int], num_classes: int, dropout: float = 0.1):
        super().__init__()
        finest = strides[0]
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = math.log2(stride / finest)
            if steps != int(steps) or steps < 0:
                raise VanEduError(f"the FPN head needs strides that double from level to level, finest first; "
                                  f"got {list(strides)}")
            layers, c_in = [], in_channels
            for _ in range(max(1, int(steps))):
                layers += [nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                           nn.ReLU(inplace=True)]
                if steps:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
                c_in = channels
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](maps[0])                                      # [B, channels, H_0, W_0]
        for head, m in zip(self.scale_heads[1:], maps[1:]):
            up = head(m)
            if up.shape[-2:] != out.shape[-2:]:                                 # odd sizes round differently
                up = F.interpolate(up, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + up
        return self.conv_seg(self.dropout(out))                                 # [B, num_classes, H_0, W_0]


class SemanticFPN(nn.Module):
    """A segmenter: ``backbone`` (a ``features_only`` model) -> ``FPN`` -> ``FPNHead`` -> logits
    upsampled (bilinear) to the input's size: [B, C, H, W] -> [B, num_classes, H, W]."""

    def __init__(self, backbone: nn.Module, num_classes: int, neck_channels: int = 256, head_channels: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        info = getattr(backbone, "feature_info", None)
        if not info:
            raise VanEduError(f"{type(backbone).__name__} is not a backbone: build it with "
                              "create_model(name, features_only=True), whose feature_info names its maps")
        self.backbone = backbone
        self.neck = FPN([f["num_chs"] for f in info], neck_channels)
        self.decode_head = FPNHead(neck_channels, head_channels, [f["reduction"] for f in info], num_classes,
                                   dropout)
        self.num_classes = num_classes
        for m in [*self.neck.modules(), *self.decode_head.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone(x)                                                 # finest first
        logits = self.decode_head(self.neck(maps))                              # at the finest stride
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_segmenter(backbone: str, num_classes: int, in_chans: int = 3, *, out_indices=None,
                     neck_channels: int = 256, head_channels: int = 128, dropout: float = 0.1,
                     **overrides) -> SemanticFPN:
    """A Semantic FPN on ``create_model(backbone, features_only=True, out_indices=...)``.

    The defaults are the authors' (256 and 128 channels, dropout 0.1); ``overrides`` go to the
    backbone's config (e.g. ``image_size`` for a ViT).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise VanEduError(f"a segmenter needs num_classes >= 2 (background and one more), got {num_classes!r}")
    body = create_model(backbone, in_chans=in_chans, features_only=True, out_indices=out_indices, **overrides)
    return SemanticFPN(body, num_classes, neck_channels, head_channels, dropout)
