"""Random augmentation of uint8 image batches on their device: crop, flip and erasing, seeded.

Parameters are drawn on the CPU for a whole batch, in a fixed order from a ``torch.Generator``,
then applied on the images' device with no loop over images: the result is a function of the
generator's state, whatever the device. ``images.batches`` draws them for each global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import VanEduError

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "ERASE_VALUE", "augment", "as_config", "draw_params",
           "apply_params"]


@dataclass(frozen=True)
class AugmentConfig:
    """Which random augmentations to apply; all off by default."""
    crop_padding: int = 0        # random crop after zero padding by this many pixels (0 = off)
    flip: bool = False           # random horizontal flip, probability 1/2
    erase_prob: float = 0.0      # random erasing (Zhong et al. 2020): probability per image
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area as a fraction of the image
    erase_ratio: tuple[float, float] = (0.3, 3.3)    # aspect ratio (h/w) range of the erased box

    def __post_init__(self):
        if self.crop_padding < 0:
            raise VanEduError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not 0.0 <= self.erase_prob <= 1.0:
            raise VanEduError(f"erase_prob must be in [0, 1], got {self.erase_prob}")


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "cpu": AugmentConfig(crop_padding=2, flip=True),
    "gpu": AugmentConfig(crop_padding=4, flip=True, erase_prob=0.25),  # 0.25: the VAN recipe's value
}
ERASE_VALUE = 128  # grey: ~0 after normalize, like erasing with the mean


def draw_params(n: int, height: int, width: int, config: AugmentConfig,
                 generator: torch.Generator) -> dict[str, Tensor]:
    """Random parameters for ``n`` images, drawn in a fixed order from a CPU generator."""
    params: dict[str, Tensor] = {}
    if config.crop_padding > 0:
        params["offset"] = torch.randint(0, 2 * config.crop_padding + 1, (n, 2), generator=generator)
    if config.flip:
        params["flip"] = torch.rand(n, generator=generator) < 0.5
    if config.erase_prob > 0:
        params["erase"] = _draw_erase_boxes(n, height, width, config, generator)
    return params


def _draw_erase_boxes(n: int, height: int, width: int, config: AugmentConfig,
                      generator: torch.Generator) -> Tensor:
    """Boxes ``[n, 4]`` = (top, left, h, w); h = w = 0 for images left alone."""
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    lo, hi = config.erase_scale
    area = height * width * (lo + (hi - lo) * u[:, 1])
    log_lo, log_hi = np.log(config.erase_ratio[0]), np.log(config.erase_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 2])
    h = torch.sqrt(area * ratio).round().clamp(1, height).long()
    w = torch.sqrt(area / ratio).round().clamp(1, width).long()
    top = (u[:, 3] * (height - h + 1)).long()
    left = (u[:, 4] * (width - w + 1)).long()
    keep = u[:, 0] >= config.erase_prob
    h[keep], w[keep] = 0, 0
    return torch.stack([top, left, h, w], dim=1)


def apply_params(images: Tensor, params: dict[str, Tensor], config: AugmentConfig) -> Tensor:
    """Apply drawn parameters to ``[n, C, H, W]`` (uint8 images, or int64 masks as ``[n, 1, H, W]``:
    crops pad with 0) on its own device; no loop over images."""
    n, _, height, width = images.shape
    device = images.device
    if "offset" in params:
        pad = config.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad))                           # [n, C, H+2p, W+2p]
        windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # view [n, C, 2p+1, 2p+1, H, W]
        dy, dx = params["offset"].to(device).unbind(1)                         # each [n]
        images = windows[torch.arange(n, device=device), :, dy, dx]            # [n, C, H, W]
    if "flip" in params:
        flip = params["flip"].to(device)[:, None, None, None]
        images = torch.where(flip, images.flip(-1), images)
    if "erase" in params:
        top, left, h, w = params["erase"].to(device).unbind(1)                # each [n]
        r = torch.arange(height, device=device)[None, :, None]                 # [1, H, 1]
        q = torch.arange(width, device=device)[None, None, :]                  # [1, 1, W]
        inside = ((r >= top[:, None, None]) & (r < (top + h)[:, None, None])
                  & (q >= left[:, None, None]) & (q < (left + w)[:, None, None]))  # [n, H, W]
        images = images.masked_fill(inside[:, None], ERASE_VALUE)
    return images.contiguous()


def as_config(config: AugmentConfig | str | None) -> AugmentConfig | None:
    """An AugmentConfig, also from a preset name ("none", "cpu", "gpu")."""
    if isinstance(config, str):
        if config not in AUGMENT_PRESETS:
            raise VanEduError(f"unknown augmentation preset {config!r}; expected one of "
                              f"{', '.join(AUGMENT_PRESETS)} or an AugmentConfig")
        return AUGMENT_PRESETS[config]
    return config


def augment(images: Tensor, config: AugmentConfig | str, generator: torch.Generator) -> Tensor:
    """Randomly augment a batch: uint8 ``[B, C, H, W]`` in, same shape/dtype/device out.

    Parameters come from ``generator`` (a CPU ``torch.Generator``), so the result is a function of
    its state, whatever the device. ``config`` may also be a preset name.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise VanEduError(f"augment expects uint8 [B, C, H, W], got {images.dtype} {list(images.shape)}")
    config = as_config(config)
    params = draw_params(images.shape[0], images.shape[2], images.shape[3], config, generator)
    return apply_params(images, params, config)
