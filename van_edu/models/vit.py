"""A Vision Transformer baseline for small images.

Patches of ``patch_size`` pixels become tokens (a strided convolution), a learned position
embedding is added, pre-norm transformer blocks (global multi-head self-attention and an MLP)
follow, and the tokens are averaged for the head. Global average pooling instead of a class
token keeps ``forward_features`` a map [B, D, h, w] like the convolutional models, so the same
pooling head, Grad-CAM and receptive-field code serve all three families.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import VanEduError
from .layers import DropPath, ImageClassifier, init_linear_and_norm, linear_drop_path_rates
from .registry import configure, register_variant

__all__ = ["ViTConfig", "ViT", "SelfAttention", "TransformerBlock"]


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 2.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    in_chans: int = 3
    num_classes: int = 10


class SelfAttention(nn.Module):
    """Global multi-head self-attention: every token attends to every token (O(N^2))."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise VanEduError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v)        # [B, heads, N, D/heads]
        return self.drop(self.proj(rearrange(x, "b h n e -> b n (h e)")))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop),
                                 nn.Linear(hidden, dim), nn.Dropout(drop))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))   # [B, N, D]
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a map [B, C, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li, Mao, Girshick, He, 2022): four maps from the ViT's one.

    From the last map [B, D, g, g] (stride p, the patch size): up 4x by two 2x2 transposed convs
    (D -> D/2 -> D/4, a channel LayerNorm and GELU between), up 2x by one (D -> D/2), the map
    itself, and down 2x by a 2x2 max-pool: strides p/4, p/2, p, 2p. Only the levels asked for are
    built (``levels``, indices into those four), so no parameter sits unused.
    """

    def __init__(self, dim: int, levels=(0, 1, 2, 3)):
        super().__init__()
        self.levels = tuple(levels)
        if 0 in self.levels:
            self.up4 = nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), ChannelLayerNorm(dim // 2),
                                     nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2))
        if 1 in self.levels:
            self.up2 = nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """The four levels (None for those not built): [B, D/4, 4g, 4g], [B, D/2, 2g, 2g], x, [B, D, g/2, g/2]."""
        return [self.up4(x) if 0 in self.levels else None, self.up2(x) if 1 in self.levels else None,
                x, nn.functional.max_pool2d(x, 2) if 3 in self.levels else None]


class ViT(ImageClassifier):
    """Vision Transformer; ``forward_features`` gives [B, D, h, w], ``forward_head`` pools and classifies."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = c = config
        if c.image_size % c.patch_size:
            raise VanEduError(f"image_size {c.image_size} must be a multiple of patch_size {c.patch_size} "
                              "(expected images resized to a multiple of it, e.g. --image-size "
                              f"{max(1, round(c.image_size / c.patch_size)) * c.patch_size}, or a ViT with "
                              "smaller patches)")
        self.grid = c.image_size // c.patch_size
        self.in_chans, self.total_stride, self.fixed_size = c.in_chans, c.patch_size, c.image_size
        self.patch_embed = nn.Conv2d(c.in_chans, c.embed_dim, c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, c.embed_dim))
        rates = linear_drop_path_rates(c.drop_path_rate, [c.depth])[0]
        self.blocks = nn.ModuleList(TransformerBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.drop_rate, r)
                                    for r in rates)
        self.norm = nn.LayerNorm(c.embed_dim)
        self.num_features = c.embed_dim
        self.head = self.new_head(c.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_linear_and_norm)

    def pyramid_levels(self) -> list[dict]:
        """The simple feature pyramid's four levels (ViTDet): strides p/4, p/2, p, 2p."""
        d, p = self.config.embed_dim, self.config.patch_size
        if p % 4 or d % 4:
            raise VanEduError(f"the simple feature pyramid needs a patch size and width divisible by 4 "
                              f"(strides p/4 .. 2p), got patch_size={p}, embed_dim={d}")
        return [{"num_chs": d // 4, "reduction": p // 4, "module": "simple_pyramid.up4"},
                {"num_chs": d // 2, "reduction": p // 2, "module": "simple_pyramid.up2"},
                {"num_chs": d, "reduction": p, "module": "norm"},
                {"num_chs": d, "reduction": 2 * p, "module": "simple_pyramid (max-pool)"}]

    def as_features(self, out_indices=None) -> "ViT":
        """A backbone (``ImageClassifier.as_features``) with ViTDet's simple feature pyramid over
        its last map; only the levels in ``out_indices`` are built."""
        super().as_features(out_indices)
        self.simple_pyramid = SimpleFeaturePyramid(self.config.embed_dim, self.out_indices)
        self.simple_pyramid.apply(init_linear_and_norm)
        return self

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        return self.simple_pyramid(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)                                       # [B, C, image_size, image_size]
        x = self.patch_embed(x)                                   # [B, D, h, w]
        x = rearrange(x, "b d h w -> b (h w) d") + self.pos_embed  # [B, N, D] tokens
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return rearrange(x, "b (h w) d -> b d h w", h=self.grid)  # back to a map for the shared head


# One factory per variant, its config in view above it (VIT_CONFIGS holds them by name). Each is
# sized to match a VAN's parameter count within 15% (tests/test_models.py checks).
VIT_CONFIGS: dict[str, ViTConfig] = {}


@register_variant("vit", VIT_CONFIGS, ViTConfig(image_size=28, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0))
def vit_mini(num_classes: int = 10, in_chans: int = 3, **overrides) -> ViT:
    """The CPU demo's ViT beside van_mini: 28 px images in 4 px patches (49 tokens), 4 layers of width 128."""
    return ViT(configure(VIT_CONFIGS["vit_mini"], num_classes, in_chans, overrides))


@register_variant("vit", VIT_CONFIGS, ViTConfig(image_size=32, patch_size=4, embed_dim=384, depth=9, num_heads=6, mlp_ratio=2.0))
def vit_cifar(num_classes: int = 10, in_chans: int = 3, **overrides) -> ViT:
    """The ViT beside van_cifar: 32 px images in 4 px patches (64 tokens), 9 layers of width 384."""
    return ViT(configure(VIT_CONFIGS["vit_cifar"], num_classes, in_chans, overrides))


@register_variant("vit", VIT_CONFIGS, ViTConfig(image_size=160, patch_size=16, embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0))
def vit_imagenette(num_classes: int = 10, in_chans: int = 3, **overrides) -> ViT:
    """The ViT beside van_b0 on Imagenette at 160 px: 16 px patches (100 tokens), 7 layers of width 256."""
    return ViT(configure(VIT_CONFIGS["vit_imagenette"], num_classes, in_chans, overrides))
