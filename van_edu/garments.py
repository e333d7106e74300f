"""Scattered garments: a segmentation (and detection) data set the course makes itself, offline.

Each canvas is a ``size`` x ``size`` grey image: a textured background (smooth noise plus a fine
grain, as bright in places as the garments, so that "every bright pixel is a garment" is not the
answer) with one to several Fashion-MNIST garments pasted at random positions and scales,
overlapping in drawing order. Its targets: a class per pixel (0 background, 1..10 the garment
classes) and, per garment still visible, its box ``[x0, y0, x1, y1]`` (pixels, x1/y1 exclusive)
and class. Canvases for the training split come from Fashion-MNIST's training split only, those
for testing from its test split only; test images identical to a training image are never used.

Generation is a pure function of the split's source images, ``GarmentsConfig`` and its seed.
``as_hf_dataset`` serves canvases as a Hugging Face ``datasets.Dataset`` with proper ``Features``
(the image and the mask as images, the boxes and labels as sequences);
``van_edu.data.load_image_dataset("scattered_garments", split)`` decodes that into an ``ImageData``
whose labels are the masks, cached like every other split (the config is part of the key).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VanEduError
from .images import ImageData
from .sources import FASHION_MNIST_CLASSES

__all__ = ["GarmentsConfig", "GARMENTS", "GARMENT_CLASSES", "make_canvases", "as_hf_dataset", "garments_from"]

GARMENT_CLASSES = ("background", *FASHION_MNIST_CLASSES)
# Part of every cache key: bump it whenever make_canvases draws differently, so that no cached
# split made by an older generator is served as if it were this one's.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class GarmentsConfig:
    """How the canvases are made; every field is part of the cache key."""

    size: int = 64                   # canvas side, pixels
    min_garments: int = 1            # garments per canvas, drawn uniformly in [min, max]
    max_garments: int = 3
    min_side: int = 20               # a garment's 28 px image is scaled to a side in [min, max]
    max_side: int = 35
    alpha_threshold: int = 30        # a scaled garment pixel brighter than this is garment (and masked)
    noise_cells: int = 4             # the smooth background: a (cells+1)^2 random grid, upsampled
    noise_max: int = 150             # its brightness reaches up to this
    grain: int = 40                  # plus uniform grain in [0, grain)
    train_canvases: int = 8000
    test_canvases: int = 2000
    seed: int = 0

    def __post_init__(self):
        problems = []
        if not 16 <= self.size <= 512:
            problems.append(f"size={self.size} (expected 16..512)")
        if not 1 <= self.min_garments <= self.max_garments:
            problems.append(f"min_garments={self.min_garments}, max_garments={self.max_garments} "
                            "(expected 1 <= min <= max)")
        if not 4 <= self.min_side <= self.max_side <= self.size:
            problems.append(f"min_side={self.min_side}, max_side={self.max_side} (expected 4 <= min <= max <= size)")
        if problems:
            raise VanEduError("bad GarmentsConfig: " + "; ".join(problems))

    def key(self) -> str:
        """A digest of every field: the cache key's part that says how canvases are made."""
        fields = {**asdict(self), "generator_version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def canvases(self, split: str) -> int:
        return self.train_canvases if split == "train" else self.test_canvases


# The course's data set: 64 px canvases, 1-3 garments of 20-35 px (the calibration).
GARMENTS = GarmentsConfig()


def make_canvases(images: torch.Tensor, labels: torch.Tensor, count: int, config: GarmentsConfig,
                  seed: int) -> dict:
    """``count`` canvases from garments ``images`` (uint8 [N, 1, 28, 28]) with ``labels`` [N].

    Returns ``images`` uint8 [count, 1, S, S], ``masks`` uint8 [count, S, S] (0 background, k + 1
    for garment class k), ``instances`` uint8 [count, S, S] (0 background, i + 1 for the i-th box of
    the canvas), and per canvas ``boxes`` (list of [x0, y0, x1, y1] of the visible pixels),
    ``labels`` (garment classes 0..9 of those boxes), ``areas`` (each boxed garment's pixels before
    anything covered it, so visible / area says how much of it is hidden) and ``sources``
    (indices into ``images`` of every garment drawn, hidden ones included). All random draws are made up front from one
    generator seeded with ``seed``, so the canvases are a pure function of the arguments.
    """
    c, g = config, torch.Generator().manual_seed(seed)
    # The background: a coarse random grid, bicubic-upsampled (smooth noise), plus a fine grain.
    coarse = torch.rand(count, 1, c.noise_cells + 1, c.noise_cells + 1, generator=g)
    smooth = F.interpolate(coarse, size=(c.size, c.size), mode="bicubic", align_corners=True).clamp(0, 1)
    canvas = (smooth[:, 0] * c.noise_max + torch.rand(count, c.size, c.size, generator=g) * c.grain).numpy()
    # Every garment's draws: which canvas, which source image, its side and its top-left corner.
    per_canvas = torch.randint(c.min_garments, c.max_garments + 1, (count,), generator=g)
    total = int(per_canvas.sum())
    canvas_of = torch.repeat_interleave(torch.arange(count), per_canvas).tolist()
    picks = torch.randint(0, len(images), (total,), generator=g)
    sides = torch.randint(c.min_side, c.max_side + 1, (total,), generator=g)
    corners = (torch.rand(total, 2, generator=g) * (c.size - sides + 1)[:, None]).long().tolist()  # (y0, x0)
    # Scaled garments, one interpolation per side length.
    scaled = [None] * total
    for side in sides.unique().tolist():
        which = torch.nonzero(sides == side)[:, 0]
        out = F.interpolate(images[picks[which]].float(), size=(side, side), mode="bilinear", align_corners=False,
                            antialias=True)[:, 0].numpy()
        for w, s in zip(which.tolist(), out):
            scaled[w] = s
    instance = np.zeros((count, c.size, c.size), dtype=np.int64)        # 0 background, g + 1 garment g
    for j in range(total):                                               # in drawing order: later covers earlier
        i, (y0, x0), s = canvas_of[j], corners[j], scaled[j]
        side = s.shape[0]
        on = s > c.alpha_threshold                                       # the garment's own pixels
        canvas[i, y0:y0 + side, x0:x0 + side][on] = s[on]
        instance[i, y0:y0 + side, x0:x0 + side][on] = j + 1
    picks_list, garment_labels = picks.tolist(), labels[picks].tolist()
    masks = np.zeros((count, c.size, c.size), dtype=np.uint8)
    instances = np.zeros((count, c.size, c.size), dtype=np.uint8)
    boxes, box_labels, sources = [[] for _ in range(count)], [[] for _ in range(count)], [[] for _ in range(count)]
    areas = [[] for _ in range(count)]
    for j in range(total):
        i = canvas_of[j]
        sources[i].append(picks_list[j])
        visible = instance[i] == j + 1
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        if len(rows):                                                    # still visible
            boxes[i].append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
            box_labels[i].append(garment_labels[j])
            areas[i].append(int((scaled[j] > c.alpha_threshold).sum()))
            masks[i][visible] = garment_labels[j] + 1
            instances[i][visible] = len(boxes[i])
    images_out = torch.from_numpy(np.clip(np.round(canvas), 0, 255).astype(np.uint8))[:, None]
    return {"images": images_out, "masks": torch.from_numpy(masks), "instances": torch.from_numpy(instances),
            "boxes": boxes, "labels": box_labels, "areas": areas, "sources": sources}


def _features():
    from datasets import ClassLabel, Features, Image, Sequence, Value

    return Features({
        "image": Image(),
        "mask": Image(),                                       # grey PNG: the class of every pixel
        "instances": Image(),                                  # grey PNG: 0 background, i + 1 for box i
        "boxes": Sequence(Sequence(Value("int32"), length=4)),
        "labels": Sequence(ClassLabel(names=list(FASHION_MNIST_CLASSES))),
        "areas": Sequence(Value("int32")),                     # each boxed garment's pixels, hidden ones too
        "sources": Sequence(Value("int32")),                   # indices into the source split
    })


def as_hf_dataset(canvases: dict):
    """The canvases of ``make_canvases`` as a ``datasets.Dataset`` with typed ``Features``."""
    from datasets import Dataset

    return Dataset.from_dict({
        "image": list(canvases["images"][:, 0].numpy()),
        "mask": list(canvases["masks"].numpy()), "instances": list(canvases["instances"].numpy()),
        "boxes": canvases["boxes"], "labels": canvases["labels"], "areas": canvases["areas"],
        "sources": canvases["sources"],
    }, features=_features())


def _pool(source: ImageData, exclude: ImageData | None) -> torch.Tensor:
    """Indices of ``source`` whose image appears nowhere in ``exclude`` (byte for byte)."""
    if exclude is None:
        return torch.arange(len(source))
    seen = {bytes(row) for row in exclude.images.flatten(1).numpy()}
    keep = [i for i, row in enumerate(source.images.flatten(1).numpy()) if bytes(row) not in seen]
    return torch.tensor(keep, dtype=torch.int64)


def garments_from(source: ImageData, split: str, config: GarmentsConfig = GARMENTS,
                  exclude: ImageData | None = None):
    """The split's canvases as a ``datasets.Dataset`` (``as_hf_dataset``), drawn from ``source`` (the
    Fashion-MNIST split of the same name), never from an image that is also in ``exclude`` (the
    training split, when making the test split). The seed differs per split."""
    if split not in ("train", "test"):
        raise VanEduError(f"scattered_garments has the splits 'train' and 'test', got {split!r}")
    if source.in_chans != 1 or source.num_classes != len(FASHION_MNIST_CLASSES):
        raise VanEduError(f"scattered garments are drawn from Fashion-MNIST (grey, 10 classes), got {source!r}")
    pool = _pool(source, exclude)
    canvases = make_canvases(source.images[pool], source.labels[pool], config.canvases(split), config,
                             seed=config.seed * 2 + (split == "test"))
    canvases["sources"] = [[int(pool[j]) for j in picks] for picks in canvases["sources"]]
    return as_hf_dataset(canvases)
