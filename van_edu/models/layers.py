"""Small pieces shared by the architectures: drop path and its rates, the initialisation of linear
layers and norms, and ``ImageClassifier``: the API every model shares (features, the pooling head,
the input check)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VanEduError


class DropPath(nn.Module):
    """Stochastic depth: during training, drop a whole residual branch per sample with probability p.

    Kept samples are scaled by 1 / (1 - p) so the expected value is unchanged; at evaluation it is
    the identity.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # [B, 1, ...]
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


def linear_drop_path_rates(total: float, depths) -> list[list[float]]:
    """Drop-path rates rising linearly from 0 to ``total`` over all blocks, split per stage."""
    n = sum(depths)
    rates = [total * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def init_linear_and_norm(m: nn.Module) -> bool:
    """Linear: trunc-normal weights (std 0.02), zero bias; LayerNorm: 1 and 0. True if ``m`` was one."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return True
    if isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
        return True
    return False


def init_conv_fan_out(conv: nn.Conv2d) -> None:
    """The authors' convolution initialisation: weights N(0, sqrt(2 / fan_out)) with
    fan_out = k_h * k_w * out_channels / groups, biases 0."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ImageClassifier(nn.Module):
    """What every course model shares (VAN, ViT, ResNet), in the shape timm uses.

    A subclass builds its layers, sets ``in_chans``, ``num_features`` (channels of the last map),
    ``total_stride`` (input pixels per pixel of the last map) and a ``head`` (from
    ``new_head``), and defines ``forward_features(x) -> [B, num_features, h, w]`` (calling
    ``check_input`` first). This class adds:

    * ``forward_head(x, pre_logits=False)``: the mean over all positions, then the head
      (``pre_logits=True`` stops before it and returns the pooled [B, num_features]);
    * ``forward(x) = forward_head(forward_features(x))``;
    * ``reset_classifier(num_classes)``: a new head (``num_classes=0``: no head, ``forward``
      returns the pooled features, as timm's models do);
    * ``check_input(x)``: images [B, in_chans, H, W] large enough for ``total_stride``, or of
      exactly ``fixed_size`` pixels where the model needs one size (the ViT's position embedding).

    The head is the model's own ``head`` attribute, so its state-dict keys are ``head.weight`` and
    ``head.bias``, as in the authors' checkpoints.
    """

    in_chans: int
    num_features: int
    total_stride: int
    fixed_size: int | None = None
    num_classes: int
    out_indices: tuple[int, ...] | None = None   # set by as_features: forward returns these maps
    feature_info: list[dict] | None = None       # one dict per returned map (num_chs, reduction, ...)

    def new_head(self, num_classes: int) -> nn.Module:
        """A linear layer from ``num_features`` to ``num_classes`` (``nn.Identity`` for 0),
        initialised by ``init_head``."""
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        return head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a fresh one for ``num_classes`` classes (0: no head), initialised as
        the family initialises its head; the rest of the network is untouched."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise VanEduError(f"num_classes must be a whole number >= 0 (0: no head), got {num_classes!r}")
        like = next(self.parameters(), None)
        head = self.new_head(num_classes)
        self.head = head if like is None else head.to(device=like.device, dtype=like.dtype)
        self.init_head(self.head)

    def init_head(self, head: nn.Module) -> None:
        """How a new head starts: trunc-normal weights (std 0.02), zero bias (VAN's and the ViT's
        rule; the ResNet keeps PyTorch's default)."""
        init_linear_and_norm(head)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``VanEduError`` saying what was expected unless ``x`` is a batch this model takes."""
        name = type(self).__name__
        if self.fixed_size is not None:
            s = self.fixed_size
            if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (s, s):
                raise VanEduError(f"this {name} expects images [B, {self.in_chans}, {s}, {s}], got shape "
                                  f"{list(x.shape)} (set image_size/in_chans when creating it)")
            return
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise VanEduError(f"expected images [B, {self.in_chans}, H, W] for in_chans={self.in_chans}, "
                              f"got shape {list(x.shape)}")
        need = self.total_stride
        if min(x.shape[-2:]) < need:
            hint = " (use a small-image variant such as van_mini for 28-32 px images)" if name == "VAN" else ""
            raise VanEduError(f"input {x.shape[-2]}x{x.shape[-1]} is too small: this {name} down-samples by "
                              f"{need}, so it needs at least {need}x{need} pixels{hint}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pyramid_levels(self) -> list[dict]:
        """Every map ``forward_pyramid`` returns: ``num_chs``, ``reduction`` (input pixels per map
        pixel) and ``module`` (where it comes from), from the finest to the coarsest."""
        raise NotImplementedError

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of every level of ``pyramid_levels``, in that order."""
        raise NotImplementedError

    def as_features(self, out_indices=None) -> "ImageClassifier":
        """Make this model a backbone, as timm's ``features_only=True`` does: no head, and ``forward``
        returns the list of maps ``out_indices`` (indices into ``pyramid_levels``; negative ones
        count from the end; default all), described by ``feature_info``. Returns the model."""
        levels = self.pyramid_levels()
        n = len(levels)
        chosen = tuple(range(n)) if out_indices is None else tuple(out_indices)
        if not chosen or any(isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n for i in chosen):
            raise VanEduError(f"out_indices must be level indices in {-n}..{n - 1} for this "
                              f"{type(self).__name__} ({n} levels), got {out_indices!r}")
        chosen = tuple(i % n for i in chosen)
        if len(set(chosen)) != len(chosen) or list(chosen) != sorted(chosen):
            raise VanEduError(f"out_indices must name each level once, finest first, got {out_indices!r}")
        if self.num_classes:
            self.reset_classifier(0)
        self.out_indices = chosen
        self.feature_info = [dict(levels[i], index=i) for i in chosen]
        return self

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))                                    # [B, C]: mean over all positions
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.out_indices is not None:                          # a backbone (as_features)
            maps = self.forward_pyramid(x)
            return [maps[i] for i in self.out_indices]
        return self.forward_head(self.forward_features(x))

