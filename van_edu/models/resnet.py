"""A ResNet baseline for small images (He et al.'s basic blocks, CIFAR-style stem).

A 3x3 stride-1 stem keeps the full resolution of 28-32 px images (the ImageNet stem's 7x7
stride 2 and max-pool would leave a 32 px image at 8x8 before the first block); stages double
the width and halve the size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import VanEduError
from .layers import ImageClassifier
from .registry import configure, register_variant

__all__ = ["ResNetConfig", "ResNet", "BasicBlock"]


@dataclass(frozen=True)
class ResNetConfig:
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    stem: str = "small"   # "small": one 3x3 conv (28-32 px); "imagenet": 7x7 stride 2 + 3x3 max-pool (stride 4)
    stem_stride: int = 1  # stride of the "small" stem (2 matches van_mini's stem)
    in_chans: int = 3
    num_classes: int = 10


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_dim: int, dim: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_dim != dim:
            self.shortcut = nn.Sequential(nn.Conv2d(in_dim, dim, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(ImageClassifier):
    """ResNet; ``forward_features`` gives [B, C, h, w], ``forward_head`` pools and classifies."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = c = config
        if c.stem not in ("small", "imagenet"):
            raise VanEduError(f"unknown ResNet stem {c.stem!r}; choose 'small' or 'imagenet'")
        if c.stem == "small":
            self.stem = nn.Sequential(nn.Conv2d(c.in_chans, c.widths[0], 3, stride=c.stem_stride, padding=1,
                                                bias=False), nn.BatchNorm2d(c.widths[0]), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(c.in_chans, c.widths[0], 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(c.widths[0]), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        self.in_chans = c.in_chans
        self.total_stride = 2 ** (len(c.depths) - 1) * (4 if c.stem == "imagenet" else c.stem_stride)
        stages, in_dim = [], c.widths[0]
        for i, (dim, depth) in enumerate(zip(c.widths, c.depths)):
            blocks = [BasicBlock(in_dim if j == 0 else dim, dim, 2 if (i > 0 and j == 0) else 1)
                      for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = in_dim
        self.head = self.new_head(c.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block: blocks start as identities
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def pyramid_levels(self) -> list[dict]:
        """Each stage's output (after its last block)."""
        c, levels = self.config, []
        reduction = 4 if c.stem == "imagenet" else c.stem_stride
        for i, width in enumerate(c.widths):
            reduction *= 2 if i > 0 else 1
            levels.append({"num_chs": width, "reduction": reduction, "module": f"stages.{i}"})
        return levels

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        maps, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)                                   # [B, C_i, H / r_i, W / r_i]
        return maps

    def init_head(self, head: nn.Module) -> None:
        """PyTorch's default for a linear layer, as the ResNet's head starts."""
        if isinstance(head, nn.Linear):
            head.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.stages(self.stem(x))                   # [B, C_last, H/total_stride, W/total_stride]


# One factory per variant, its config in view above it (RESNET_CONFIGS holds them by name). Each
# is sized to match a VAN's parameter count within 15% (tests/test_models.py checks).
RESNET_CONFIGS: dict[str, ResNetConfig] = {}


@register_variant("resnet", RESNET_CONFIGS, ResNetConfig(widths=(32, 64, 128), depths=(2, 2, 2), stem_stride=2))
def resnet_mini(num_classes: int = 10, in_chans: int = 3, **overrides) -> ResNet:
    """The CPU demo's ResNet beside van_mini: the same stride-2 stem, so both see 14, 7, 4 px maps."""
    return ResNet(configure(RESNET_CONFIGS["resnet_mini"], num_classes, in_chans, overrides))


@register_variant("resnet", RESNET_CONFIGS, ResNetConfig(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2)))
def resnet_cifar(num_classes: int = 10, in_chans: int = 3, **overrides) -> ResNet:
    """ResNet-18's layout with a 3x3 stride-1 stem for 32 px images (beside van_cifar)."""
    return ResNet(configure(RESNET_CONFIGS["resnet_cifar"], num_classes, in_chans, overrides))


@register_variant("resnet", RESNET_CONFIGS, ResNetConfig(widths=(36, 72, 144, 288), depths=(2, 2, 2, 2), stem="imagenet"))
def resnet_imagenette(num_classes: int = 10, in_chans: int = 3, **overrides) -> ResNet:
    """Imagenette at 160 px, beside the stride-4 van_b0: an ImageNet stem and ResNet-18 depths."""
    return ResNet(configure(RESNET_CONFIGS["resnet_imagenette"], num_classes, in_chans, overrides))
