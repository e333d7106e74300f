"""The Visual Attention Network (VAN), built as the authors built it.

Module and parameter names follow the authors' code, so their checkpoints load with
``strict=True``: ``patch_embed{s}``, ``block{s}.{j}`` (``norm1``, ``attn.proj_1``,
``attn.spatial_gating_unit.{conv0, conv_spatial, conv1}``, ``attn.proj_2``, ``norm2``,
``mlp.fc1``, ``mlp.dwconv.dwconv``, ``mlp.fc2``, ``layer_scale_1``, ``layer_scale_2``),
``norm{s}`` and ``head`` (stages numbered from 1, blocks from 0).

One stage::

    x = OverlapPatchEmbed(x)                         # conv with stride, then BatchNorm
    for each block:
        x = x + drop_path(ls1 * Attention(BN(x)))     # Attention = proj_2(LKA(GELU(proj_1 x))) + x
        x = x + drop_path(ls2 * Mlp(BN(x)))           # Mlp = fc2(GELU(DWConv3x3(fc1 x)))
    x = LayerNorm over channels
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import VanEduError
from ..lka import LKA
from .layers import DropPath, MeanPoolHead, init_linear_and_norm, linear_drop_path_rates
from .registry import register_presets

__all__ = ["VANConfig", "VAN", "OverlapPatchEmbed", "Attention", "Mlp", "DWConv", "Block"]


@dataclass(frozen=True)
class VANConfig:
    """Everything that defines a VAN variant. ``stem_*`` is the first patch embedding."""

    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (3, 3, 5, 2)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    stem_kernel: int = 7
    stem_stride: int = 4
    kernel_size: int = 21          # K of the LKA
    dilation: int = 3              # d of the LKA
    lka_variant: str = "lka"       # Table 3 ablations, see van_edu.lka.LKA_VARIANTS
    lka_impl: str = "auto"         # how LKA computes its convs (same weights), see van_edu.lka.LKA
    drop_rate: float = 0.0         # dropout in the MLP
    drop_path_rate: float = 0.0    # stochastic depth, rising linearly over the blocks
    layer_scale_init: float = 1e-2
    in_chans: int = 3
    num_classes: int = 1000

    @property
    def total_stride(self) -> int:
        """Down-sampling from the input to the last stage."""
        return self.stem_stride * 2 ** (len(self.depths) - 1)


class DWConv(nn.Module):
    """3 x 3 depth-wise convolution inside the MLP (key ``mlp.dwconv.dwconv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """Convolutional feed-forward: 1x1 (C -> rC), 3x3 depth-wise, GELU, 1x1 (rC -> C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)                          # [B, rC, H, W]
        x = self.act(self.dwconv(x))             # local mixing before the non-linearity
        x = self.drop(x)
        return self.drop(self.fc2(x))            # [B, C, H, W]


class Attention(nn.Module):
    """The attention sub-layer: proj_1, GELU, LKA (``spatial_gating_unit``), proj_2, plus its input."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, variant: str = "lka",
                 lka_impl: str = "auto"):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim, kernel_size, dilation, variant, impl=lka_impl)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x                                          # [B, C, H, W]
        x = self.activation(self.proj_1(x))
        x = self.spatial_gating_unit(x)                       # LKA(u) = attention (x) u
        return self.proj_2(x) + shortcut


class Block(nn.Module):
    """One VAN block: attention and MLP sub-layers, each pre-normed (BatchNorm) and layer-scaled."""

    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0,
                 kernel_size: int = 21, dilation: int = 3, variant: str = "lka",
                 layer_scale_init: float = 1e-2, lka_impl: str = "auto"):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim, kernel_size, dilation, variant, lka_impl)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(layer_scale_init * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ls1 = self.layer_scale_1[:, None, None]               # [C, 1, 1], broadcast over H, W
        ls2 = self.layer_scale_2[:, None, None]
        x = x + self.drop_path(ls1 * self.attn(self.norm1(x)))
        return x + self.drop_path(ls2 * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: a strided convolution (kernel > stride) and BatchNorm."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))           # [B, C_in, H, W] -> [B, C, H/stride, W/stride]


class VAN(MeanPoolHead, nn.Module):
    """The network: ``len(depths)`` stages of patch embedding, blocks and a channel LayerNorm,
    then global average pooling and a linear head.

    ``forward_features`` returns the last stage's normalised map [B, C, H', W'] (what Grad-CAM
    looks at); ``forward_head`` pools it and classifies.
    """

    def __init__(self, config: VANConfig):
        super().__init__()
        self.config = c = config
        if not (len(c.embed_dims) == len(c.depths) == len(c.mlp_ratios)):
            raise VanEduError("embed_dims, depths and mlp_ratios need one entry per stage, got "
                              f"{len(c.embed_dims)}, {len(c.depths)} and {len(c.mlp_ratios)}")
        self.num_stages = len(c.depths)
        rates = linear_drop_path_rates(c.drop_path_rate, c.depths)
        in_dim = c.in_chans
        for s, (dim, depth, ratio) in enumerate(zip(c.embed_dims, c.depths, c.mlp_ratios), start=1):
            kernel, stride = (c.stem_kernel, c.stem_stride) if s == 1 else (3, 2)
            setattr(self, f"patch_embed{s}", OverlapPatchEmbed(in_dim, dim, kernel, stride))
            setattr(self, f"block{s}", nn.ModuleList(
                Block(dim, ratio, c.drop_rate, rates[s - 1][j], c.kernel_size, c.dilation,
                      c.lka_variant, c.layer_scale_init, c.lka_impl) for j in range(depth)))
            setattr(self, f"norm{s}", nn.LayerNorm(dim, eps=1e-6))
            in_dim = dim
        self.num_features = in_dim
        self.head = nn.Linear(in_dim, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.in_chans:
            raise VanEduError(f"expected images [B, {c.in_chans}, H, W] for in_chans={c.in_chans}, "
                              f"got shape {list(x.shape)}")
        if min(x.shape[-2:]) < c.total_stride:
            raise VanEduError(
                f"input {x.shape[-2]}x{x.shape[-1]} is too small: this VAN down-samples by "
                f"{c.total_stride}, so it needs at least {c.total_stride}x{c.total_stride} pixels "
                "(use a small-image variant such as van_mini for 28-32 px images)")

    def uses_channels_last(self, x: torch.Tensor) -> bool:
        """Whether the stages keep their activations channels-last in memory (same values).

        With ``lka_impl="auto"`` on a CPU (or ``"fast"`` anywhere): oneDNN's 1x1 and depth-wise
        convolutions then need no layout conversions, which made a van_mini training step 1.14 to
        1.29 times faster on a 2-core AMD EPYC (torch 2.13); ``"plain"`` keeps PyTorch's default.
        """
        impl = self.config.lka_impl
        return impl == "fast" or (impl == "auto" and x.device.type == "cpu")

    def forward_stage(self, x: torch.Tensor, s: int) -> torch.Tensor:
        """Stage ``s`` (1-based): patch embedding, blocks, channel LayerNorm."""
        x = getattr(self, f"patch_embed{s}")(x)              # [B, C_s, H_s, W_s]
        if self.uses_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        for blk in getattr(self, f"block{s}"):
            x = blk(x)
        x = getattr(self, f"norm{s}")(x.permute(0, 2, 3, 1))  # LayerNorm over C: [B, H_s, W_s, C_s]
        return x.permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        for s in range(1, self.num_stages + 1):
            x = self.forward_stage(x, s)
        return x                                             # [B, C_last, H', W']

    def reset_classifier(self, num_classes: int) -> None:
        """A new head for ``num_classes`` classes (initialised as the authors do)."""
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self.head)
        self.config = replace(self.config, num_classes=num_classes)


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: convs N(0, sqrt(2 / fan_out)), linears trunc-normal 0.02."""
    if init_linear_and_norm(m):
        return
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --- The paper's variants (Table 5) -----------------------------------------------------------
_WIDE = (64, 128, 320, 512)
VAN_CONFIGS = {
    "van_b0": VANConfig(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2)),
    "van_b1": VANConfig(embed_dims=_WIDE, depths=(2, 2, 4, 2)),
    "van_b2": VANConfig(embed_dims=_WIDE, depths=(3, 3, 12, 3)),
    "van_b3": VANConfig(embed_dims=_WIDE, depths=(3, 5, 27, 3)),
    "van_b4": VANConfig(embed_dims=_WIDE, depths=(3, 6, 40, 3)),
    "van_b5": VANConfig(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3)),
    "van_b6": VANConfig(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6)),
    # Small-image variants (ours, not the authors'). With the stride-4 stem a 32 px image is 8, 4, 2
    # and 1 px in the four stages, so almost every tap of the 23x23 LKA reads padding: a 3x3 stem,
    # stride 2 and three stages for the CPU demo (28 px -> 14, 7, 4), stride 1 for CIFAR-10.
    # benchmarks/stem_choice.py measures the alternatives; the README has the figures.
    "van_mini": VANConfig(embed_dims=(32, 64, 128), depths=(2, 2, 2), mlp_ratios=(4, 4, 4),
                          stem_kernel=3, stem_stride=2),
    "van_cifar": VANConfig(embed_dims=(64, 128, 256, 512), depths=(2, 2, 4, 2),
                           stem_kernel=3, stem_stride=1),
}

register_presets('van', VAN_CONFIGS, VAN, default_classes=1000)
