"""A split held as uint8 tensors (``ImageData``), normalised, and cut into seeded batches.

The whole course trains on small images, so a split is decoded ONCE into one uint8 tensor
``[N, C, H, W]`` and kept on the device; batches are then indexing, not a ``DataLoader`` with
workers. This keeps CPU runs fast, makes a batch's content a pure function of ``(seed, epoch)``
(so a resumed run equals an uninterrupted one) and lets every DDP rank cut its shard from the same
global batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .augment import AugmentConfig, apply_params, as_config, draw_params
from .errors import VanEduError

__all__ = ["normalize", "ImageData", "IGNORE_INDEX", "batches", "subset_index", "check_subset_size", "check_seed"]

# A mask's "no label here" (the trimap's border of Oxford-IIIT Pet): torch's cross-entropy skips it
# by default, and the metrics leave it out (van_edu.metrics, van_edu.evaluation).
IGNORE_INDEX = -100


def normalize(images: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 ``(x/255 - 0.5)/0.5`` in [-1, 1], as the VAN authors trained."""
    if images.dtype != torch.uint8:
        raise VanEduError(f"normalize expects uint8 images (0-255), got dtype {images.dtype}")
    return images.to(torch.float32).div_(127.5).sub_(1.0)


@dataclass
class ImageData:
    """A split held as tensors: images uint8 ``[N, C, H, W]``, class names, and labels: int64, one
    class per image ``[N]`` (classification) or one per pixel ``[N, H, W]`` (a segmentation mask,
    ``IGNORE_INDEX`` where a pixel has no label); or float32 boxes ``[N, M, 5]`` (detection: up to
    M rows ``x0, y0, x1, y1, class`` per image, in pixels, rows with class -1 are padding)."""
    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise VanEduError(f"ImageData.images must be uint8 [N, C, H, W], got {self.images.dtype} "
                              f"{list(self.images.shape)}")
        n, (h, w) = len(self.images), self.images.shape[2:]
        boxes = self.labels.is_floating_point()
        if boxes and not (self.labels.dim() == 3 and len(self.labels) == n and self.labels.shape[2] == 5):
            raise VanEduError(f"ImageData boxes (float labels) must be [N, M, 5] (x0, y0, x1, y1, class) with "
                              f"N = {n}; got {list(self.labels.shape)}")
        if not boxes and not ((self.labels.dim() == 1 and len(self.labels) == n)
                              or (self.labels.dim() == 3 and tuple(self.labels.shape) == (n, h, w))):
            raise VanEduError(f"ImageData.labels must be [N] (a class per image) or [N, H, W] (a class per "
                              f"pixel) with N, H, W = {n}, {h}, {w}; got {list(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.float32 if boxes else torch.int64)
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, n={len(self)}, images=uint8{list(self.images.shape)} "
                f"on {self.images.device}, classes={self.num_classes})")

    @property
    def task(self) -> str:
        """``"classification"`` (a label per image), ``"segmentation"`` (a label per pixel) or
        ``"detection"`` (boxes and their classes)."""
        if self.labels.is_floating_point():
            return "detection"
        return "segmentation" if self.labels.dim() == 3 else "classification"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Height of the images (the course uses square images)."""
        return self.images.shape[2]

    def to(self, device) -> "ImageData":
        """The same data on ``device`` (a new ImageData; tensors already there are not copied)."""
        return ImageData(self.images.to(device), self.labels.to(device), self.classes, self.name)

    def subset(self, n: int | float, seed: int = 0) -> "ImageData":
        """A seeded random subset, kept in the original order: ``n`` a count (at most ``len(self)``)
        or a fraction in (0, 1]."""
        index = subset_index(len(self), n, seed, what=f"{self.name or 'this data'!r}").to(self.images.device)
        return ImageData(self.images[index], self.labels[index], self.classes, self.name)


def check_subset_size(n: int | float) -> None:
    """A subset size is a count (an int >= 1) or a fraction (a float in (0, 1]); else VanEduError."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise VanEduError(f"subset size must be a count (int) or a fraction (float), got {n!r}")
    if isinstance(n, float) and not 0.0 < n <= 1.0:
        raise VanEduError(f"a subset fraction must be in (0, 1], got {n}")
    if isinstance(n, int) and n < 1:
        raise VanEduError(f"a subset count must be at least 1, got {n}")


def check_seed(seed: int, what: str = "seed") -> None:
    """A seed is a whole number in [0, 2**63): what torch and numpy's generators both accept."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise VanEduError(f"{what} must be a whole number >= 0 and < 2**63, got {seed!r}")


def subset_index(total: int, n: int | float, seed: int, what: str = "the data") -> Tensor:
    """Sorted indices of a seeded random subset of ``range(total)``. A count above ``total`` is an
    error (it would silently mean "all of it"); ``what`` names the data in that message."""
    check_subset_size(n)
    check_seed(seed)
    if isinstance(n, float):
        count = max(1, round(n * total))
    elif n > total:
        raise VanEduError(f"asked for {n} samples of {what}, which has {total} (expected a count up to "
                          f"{total}, or a fraction in (0, 1] such as 0.5)")
    else:
        count = n
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:count].sort().values


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch), well mixed by SeedSequence."""
    check_seed(seed)
    if epoch < 0:
        raise VanEduError(f"epoch must be >= 0, got {epoch}")
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _shard(size: int, rank: int, world_size: int) -> slice:
    """Contiguous shard ``rank`` of ``size`` items cut into ``world_size`` near-equal parts."""
    q, r = divmod(size, world_size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (1 if rank < r else 0))


def batches(data: ImageData, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            augment: AugmentConfig | str | None = None, drop_last: bool = False,
            rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)``: x float32 normalised ``[b, C, H, W]`` on data's device, y int64 ``[b]``
    (or masks ``[b, H, W]``, cropped and flipped with their images; or boxes, not augmented).

    Order and augmentation are a pure function of ``(seed, epoch)``. With ``world_size > 1`` each
    global batch of ``batch_size`` is cut into ``world_size`` contiguous shards and rank ``r`` gets
    shard ``r``; augmentation is drawn for the whole global batch, so the shards' union is the
    single-process batch, and every rank yields the same number of batches. Shards differ in size
    by at most one; when the last global batch is smaller than ``world_size`` some ranks get an
    empty shard ``[0, C, H, W]`` (skip it in evaluation; train with ``drop_last=True``).
    ``augment`` may also be a preset name.
    """
    if batch_size < 1:
        raise VanEduError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise VanEduError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise VanEduError(f"batch_size ({batch_size}) must be divisible by world_size ({world_size}): "
                          "it is the global batch, split evenly over the ranks")
    generator = _epoch_generator(seed, epoch)                # validates seed/epoch now, not lazily
    config = as_config(augment)
    if config is not None and config != AugmentConfig() and data.task == "detection":
        raise VanEduError("augmentation moves pixels, and these boxes would have to move with them: train "
                          "detection with augment='none' (expected no augmentation)")
    if config is not None and config.erase_prob > 0 and data.task == "segmentation":
        raise VanEduError("random erasing paints over pixels whose class the mask still names: train segmentation "
                          "with crops and flips only (augment='cpu' or 'none'; expected erase_prob=0)")
    return _iterate(data, batch_size, shuffle, generator, config, drop_last, rank, world_size)


def _iterate(data, batch_size, shuffle, generator, config, drop_last, rank, world_size):
    """The batches of ``batches``, whose arguments are checked before the first one is asked for."""
    n, device = len(data), data.images.device
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    height, width = data.images.shape[2:]
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]               # the global batch
        if drop_last and len(index) < batch_size:
            break
        params = draw_params(len(index), height, width, config, generator) if config else {}
        part = _shard(len(index), rank, world_size)
        images, labels = data.images[index[part]], data.labels[index[part]]   # [b, C, H, W] uint8, labels
        if params:
            mine = {k: v[part] for k, v in params.items()}
            images = apply_params(images, mine, config)
            if labels.dim() == 3:                             # masks move with their pixels (0 pads: background)
                labels = apply_params(labels[:, None], mine, config)[:, 0]
        yield normalize(images), labels
