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

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import VanEduError
from ..lka import LKA, LKA_IMPL_DOCS
from .layers import DropPath, ImageClassifier, init_conv_fan_out, init_linear_and_norm, linear_drop_path_rates
from .registry import configure, register_variant

__all__ = ["VANConfig", "VAN", "Stage", "OverlapPatchEmbed", "Attention", "Mlp", "DWConv", "Block",
           "van_b0", "van_b1", "van_b2", "van_b3", "van_b4", "van_b5", "van_b6", "van_mini", "van_cifar"]


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


class Stage(nn.Module):
    """One stage: a patch embedding (``patch_embed``), blocks (``blocks``) and a LayerNorm over the
    channels (``norm``). [B, C_in, H, W] -> [B, C, H / stride, W / stride].

    ``channels_last`` keeps the activations channels-last in memory (same values): VAN sets it
    where oneDNN's 1x1 and depth-wise convolutions then need no layout conversions (see
    ``VAN.uses_channels_last``).
    """

    def __init__(self, in_chans: int, dim: int, depth: int, mlp_ratio: float, kernel: int, stride: int,
                 drop_path_rates, config: VANConfig):
        super().__init__()
        c = config
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            Block(dim, mlp_ratio, c.drop_rate, drop_path_rates[j], c.kernel_size, c.dilation, c.lka_variant,
                  c.layer_scale_init, c.lka_impl) for j in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.stride = stride

    def forward(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = self.patch_embed(x)                              # [B, C, H_s, W_s]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x.permute(0, 2, 3, 1))                 # LayerNorm over C: [B, H_s, W_s, C]
        return x.permute(0, 3, 1, 2)                         # [B, C, H_s, W_s]


class VAN(ImageClassifier):
    """The network: ``len(depths)`` stages (``Stage``: patch embedding, blocks, a channel
    LayerNorm), then the mean over all positions and a linear head.

    The stages are in ``self.stages`` (a plain list, in order). Their parts are registered under the
    authors' names, ``patch_embed{s}``, ``block{s}`` and ``norm{s}`` (stages numbered from 1), which
    makes the state-dict keys of the authors' checkpoints, so their files load with
    ``strict=True`` and no key map; the list is not registered a second time, so no key appears
    twice. ``forward_features`` returns the last stage's normalised map [B, C, H', W'] (what
    Grad-CAM looks at); ``forward_head`` pools it and classifies (``ImageClassifier``).
    """

    def __init__(self, config: VANConfig):
        super().__init__()
        self.config = c = config
        if not (len(c.embed_dims) == len(c.depths) == len(c.mlp_ratios)):
            raise VanEduError("embed_dims, depths and mlp_ratios need one entry per stage, got "
                              f"{len(c.embed_dims)}, {len(c.depths)} and {len(c.mlp_ratios)}")
        self.num_stages = len(c.depths)
        self.in_chans, self.total_stride = c.in_chans, c.total_stride
        rates = linear_drop_path_rates(c.drop_path_rate, c.depths)
        stages, in_dim = [], c.in_chans
        for s, (dim, depth, ratio) in enumerate(zip(c.embed_dims, c.depths, c.mlp_ratios), start=1):
            kernel, stride = (c.stem_kernel, c.stem_stride) if s == 1 else (3, 2)
            stage = Stage(in_dim, dim, depth, ratio, kernel, stride, rates[s - 1], c)
            self.add_module(f"patch_embed{s}", stage.patch_embed)    # the authors' keys
            self.add_module(f"block{s}", stage.blocks)
            self.add_module(f"norm{s}", stage.norm)
            stages.append(stage)
            in_dim = dim
        self.stages: list[Stage] = stages            # a plain list: not registered, keys stay the authors'
        self.num_features = in_dim
        self.head = self.new_head(c.num_classes)
        self.apply(_init_weights)

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
        return self.stages[s - 1](x, channels_last=self.uses_channels_last(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for stage in self.stages:
            x = stage(x, channels_last=self.uses_channels_last(x))
        return x                                             # [B, C_last, H', W']

    def pyramid_levels(self) -> list[dict]:
        """Each stage's output after its norm (as the authors' segmentation backbone returns them)."""
        levels, reduction = [], 1
        for s, stage in enumerate(self.stages, start=1):
            reduction *= stage.stride
            levels.append({"num_chs": stage.norm.normalized_shape[0], "reduction": reduction, "module": f"norm{s}"})
        return levels

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        maps = []
        for stage in self.stages:
            x = stage(x, channels_last=self.uses_channels_last(x))
            maps.append(x)                                   # [B, C_s, H / r_s, W / r_s]
        return maps

    def reset_classifier(self, num_classes: int) -> None:
        """A new head for ``num_classes`` classes (0: none), initialised as the authors do; the
        config's ``num_classes`` follows."""
        super().reset_classifier(num_classes)
        self.config = replace(self.config, num_classes=num_classes)

    def init_head(self, head: nn.Module) -> None:
        _init_weights(head)

    def lka_modules(self) -> list[LKA]:
        """Every LKA of the network, in order."""
        return [m for m in self.modules() if isinstance(m, LKA)]

    def set_lka_impl(self, impl: str) -> None:
        """Switch how every LKA computes its convs (``"auto"``, ``"fast"``, ``"plain"``; same
        weights, same function): the config's ``lka_impl`` follows, so ``describe()`` says it."""
        for lka in self.lka_modules():
            lka.set_impl(impl)
        self.config = replace(self.config, lka_impl=impl)

    def describe(self) -> str:
        """Which code runs: the LKA implementation chosen, and which path the last forward took."""
        impl = self.config.lka_impl
        paths = [lka.last_path for lka in self.lka_modules()]
        ran = {p: paths.count(p) for p in ("fast", "plain") if p in paths}
        last = ", ".join(f"{n} of {len(paths)} LKAs {p}" for p, n in ran.items()) or "no forward yet"
        return (f"VAN {self.config.embed_dims} x {self.config.depths}: lka_impl={impl!r} "
                f"({LKA_IMPL_DOCS[impl]}); last forward: {last}; "
                f"channels-last stages on {'every device' if impl == 'fast' else 'the CPU' if impl == 'auto' else 'no device'}")

    def extra_repr(self) -> str:
        return f"lka_impl={self.config.lka_impl!r}"


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisation: convs N(0, sqrt(2 / fan_out)), linears trunc-normal 0.02."""
    if not init_linear_and_norm(m) and isinstance(m, nn.Conv2d):
        init_conv_fan_out(m)


# --- The paper's variants (Table 5) and ours --------------------------------------------------
# One factory per variant, its config in view above it (VAN_CONFIGS holds them by name; a factory
# reads its entry when called, so an edited entry takes effect). Parameter counts are for a
# 1000-class head; GFLOPs are the paper's (multiply-adds at 224 x 224).
VAN_CONFIGS: dict[str, VANConfig] = {}
_WIDE = (64, 128, 320, 512)


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2)))
def van_b0(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B0 (VAN-Tiny): 4.1 M parameters, 0.9 GFLOPs, 75.4% ImageNet-1K top-1."""
    return VAN(configure(VAN_CONFIGS["van_b0"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=_WIDE, depths=(2, 2, 4, 2)))
def van_b1(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B1 (VAN-Small): 13.9 M parameters, 2.5 GFLOPs, 81.1% ImageNet-1K top-1."""
    return VAN(configure(VAN_CONFIGS["van_b1"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=_WIDE, depths=(3, 3, 12, 3)))
def van_b2(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B2 (VAN-Base): 26.6 M parameters, 5.0 GFLOPs, 82.8% ImageNet-1K top-1."""
    return VAN(configure(VAN_CONFIGS["van_b2"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=_WIDE, depths=(3, 5, 27, 3)))
def van_b3(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B3 (VAN-Large): 44.8 M parameters, 9.0 GFLOPs, 83.9% ImageNet-1K top-1."""
    return VAN(configure(VAN_CONFIGS["van_b3"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=_WIDE, depths=(3, 6, 40, 3)))
def van_b4(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B4: 60.3 M parameters, 12.2 GFLOPs, 84.2% ImageNet-1K top-1."""
    return VAN(configure(VAN_CONFIGS["van_b4"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3)))
def van_b5(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B5: 90.0 M parameters, 17.2 GFLOPs, 86.3% top-1 (pre-trained on ImageNet-22K)."""
    return VAN(configure(VAN_CONFIGS["van_b5"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6)))
def van_b6(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """VAN-B6: 199.8 M parameters (the paper: 200 M), 38.4 GFLOPs, 86.9% top-1 (ImageNet-22K pre-trained; 87.8% at 384 px)."""
    return VAN(configure(VAN_CONFIGS["van_b6"], num_classes, in_chans, overrides))


# Small-image variants (ours, not the authors'). With the stride-4 stem a 32 px image is 8, 4, 2
# and 1 px in the four stages, so almost every tap of the 23x23 LKA reads padding: a 3x3 stem,
# stride 2 and three stages for the CPU demo (28 px -> 14, 7, 4), stride 1 for CIFAR-10.
# benchmarks/stem_choice.py measures the alternatives; the README has the figures.
@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=(32, 64, 128), depths=(2, 2, 2), mlp_ratios=(4, 4, 4), stem_kernel=3,
                    stem_stride=2))
def van_mini(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """The CPU demo's VAN for 28 px images (ours): three stages, a 3x3 stride-2 stem, 0.6 M parameters."""
    return VAN(configure(VAN_CONFIGS["van_mini"], num_classes, in_chans, overrides))


@register_variant("van", VAN_CONFIGS, VANConfig(embed_dims=(64, 128, 256, 512), depths=(2, 2, 4, 2), stem_kernel=3, stem_stride=1))
def van_cifar(num_classes: int = 1000, in_chans: int = 3, **overrides) -> VAN:
    """A VAN for 32 px CIFAR-10 images (ours): B1's stages over a 3x3 stride-1 stem."""
    return VAN(configure(VAN_CONFIGS["van_cifar"], num_classes, in_chans, overrides))
