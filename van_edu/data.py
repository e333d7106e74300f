"""Image datasets -> uint8 tensors on the device, augmentation on the device, and the bundled data.

The whole course trains on small images, so a split is decoded ONCE into one uint8 tensor
``[N, C, H, W]`` and kept on the device; batches are then indexing, not a ``DataLoader`` with
workers. This keeps CPU runs fast, makes a batch's content a pure function of ``(seed, epoch)``
(so a resumed run equals an uninterrupted one) and lets every DDP rank cut its shard from the same
global batch.

Sources (``load_image_dataset``):

- ``"fashion_mnist"``: the copy bundled in ``data/fashion_mnist/`` (Hub layout, works offline),
  or ``zalando-datasets/fashion_mnist`` from the Hub when ``van_edu`` is installed without the repo.
- ``"cifar10"`` (``uoft-cs/cifar10``) and ``"imagenette"`` (``frgfm/imagenette``, 160px): from the Hub.
- Any Hub id or local folder that ``datasets.load_dataset`` reads (parquet in the Hub's layout, or an
  ``imagefolder`` of class subfolders) with an image column and a label column.

Decoded splits are cached in ``~/.cache/van_edu`` (``VAN_EDU_CACHE`` moves it; ``VAN_EDU_CACHE=off``
turns it off), keyed by the source files' paths, sizes and modification times. The Arrow copy that
``datasets`` makes of a local folder goes to ``<HF_DATASETS_CACHE>/van_edu_local/<fingerprint>``,
one per version of the folder's files (``datasets`` alone would reuse a stale copy).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import VanEduError

__all__ = ["normalize", "ImageData", "AugmentConfig", "AUGMENT_PRESETS", "augment", "batches",
           "load_image_dataset", "DatasetSpec", "DATASETS", "BUNDLED_DIR", "hub_reachable"]

# ----------------------------------------------------------------------------------------------
# Known datasets

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "fashion_mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset lives and how to read it."""
    hub_id: str                       # Hugging Face Hub repository
    config: str | None = None         # Hub config name (None: the default one)
    local: Path | None = None         # a bundled folder in the Hub's layout, tried first
    image_size: int | None = None     # default resize (None: keep the stored size)
    classes: tuple[str, ...] | None = None  # display names replacing the stored ClassLabel names
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "zalando-datasets/fashion_mnist", local=BUNDLED_DIR, classes=FASHION_MNIST_CLASSES,
        description="bundled, offline: 60k/10k 28x28 grey, 10 classes"),
    "cifar10": DatasetSpec("uoft-cs/cifar10", description="Hub: 50k/10k 32x32 RGB, 10 classes"),
    "imagenette": DatasetSpec("frgfm/imagenette", config="160px", image_size=160,
                              description="Hub: 9.5k/3.9k RGB (shorter side 160), 10 classes"),
}
_HUB_ALIASES = {spec.hub_id: name for name, spec in DATASETS.items()}

# ----------------------------------------------------------------------------------------------
# Tensors


def normalize(images: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 ``(x/255 - 0.5)/0.5`` in [-1, 1], as the VAN authors trained."""
    if images.dtype != torch.uint8:
        raise VanEduError(f"normalize expects uint8 images (0-255), got dtype {images.dtype}")
    return images.to(torch.float32).div_(127.5).sub_(1.0)


@dataclass
class ImageData:
    """A split held as tensors: images uint8 ``[N, C, H, W]``, labels int64 ``[N]``, class names."""
    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise VanEduError(f"ImageData.images must be uint8 [N, C, H, W], got {self.images.dtype} "
                              f"{list(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise VanEduError(f"ImageData.labels must be [N] with N = {len(self.images)}, "
                              f"got {list(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, n={len(self)}, images=uint8{list(self.images.shape)} "
                f"on {self.images.device}, classes={self.num_classes})")

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
        """A seeded random subset, kept in the original order: ``n`` a count or a fraction in (0, 1]."""
        index = _subset_index(len(self), n, seed).to(self.images.device)
        return ImageData(self.images[index], self.labels[index], self.classes, self.name)


def _subset_index(total: int, n: int | float, seed: int) -> Tensor:
    """Sorted indices of a seeded random subset of ``range(total)``; a count above ``total`` gives all."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise VanEduError(f"subset size must be a count (int) or a fraction (float), got {n!r}")
    if isinstance(n, float):
        if not 0.0 < n <= 1.0:
            raise VanEduError(f"a subset fraction must be in (0, 1], got {n}")
        count = max(1, round(n * total))
    elif n < 1:
        raise VanEduError(f"a subset count must be at least 1, got {n}")
    else:
        count = min(n, total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:count].sort().values

# ----------------------------------------------------------------------------------------------
# Augmentation: parameters are drawn on the CPU for a whole batch, then applied on the device.


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


def _draw_params(n: int, height: int, width: int, config: AugmentConfig,
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


def _apply_params(images: Tensor, params: dict[str, Tensor], config: AugmentConfig) -> Tensor:
    """Apply drawn parameters to uint8 ``[n, C, H, W]`` on its own device; no loop over images."""
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


def _as_config(config: AugmentConfig | str | None) -> AugmentConfig | None:
    """An AugmentConfig, also from a preset name ("none", "cpu", "gpu")."""
    if isinstance(config, str):
        if config not in AUGMENT_PRESETS:
            raise VanEduError(f"unknown augmentation preset {config!r}; expected one of "
                              f"{', '.join(AUGMENT_PRESETS)} or an AugmentConfig")
        return AUGMENT_PRESETS[config]
    return config


def augment(images: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Randomly augment a batch: uint8 ``[B, C, H, W]`` in, same shape/dtype/device out.

    Parameters come from ``generator`` (a CPU ``torch.Generator``), so the result is a function of
    its state, whatever the device. ``config`` may also be a preset name.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise VanEduError(f"augment expects uint8 [B, C, H, W], got {images.dtype} {list(images.shape)}")
    config = _as_config(config)
    params = _draw_params(images.shape[0], images.shape[2], images.shape[3], config, generator)
    return _apply_params(images, params, config)

# ----------------------------------------------------------------------------------------------
# Batches


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, epoch), well mixed by SeedSequence."""
    if seed < 0 or epoch < 0:
        raise VanEduError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def _shard(size: int, rank: int, world_size: int) -> slice:
    """Contiguous shard ``rank`` of ``size`` items cut into ``world_size`` near-equal parts."""
    q, r = divmod(size, world_size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (1 if rank < r else 0))


def batches(data: ImageData, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            augment: AugmentConfig | None = None, drop_last: bool = False,
            rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)``: x float32 normalised ``[b, C, H, W]`` on data's device, y int64 ``[b]``.

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
    config = _as_config(augment)
    return _iterate(data, batch_size, shuffle, generator, config, drop_last, rank, world_size)


def _iterate(data, batch_size, shuffle, generator, config, drop_last, rank, world_size):
    n, device = len(data), data.images.device
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    height, width = data.images.shape[2:]
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]               # the global batch
        if drop_last and len(index) < batch_size:
            break
        params = _draw_params(len(index), height, width, config, generator) if config else {}
        part = _shard(len(index), rank, world_size)
        images = data.images[index[part]]                    # [b, C, H, W] uint8
        if params:
            images = _apply_params(images, {k: v[part] for k, v in params.items()}, config)
        yield normalize(images), data.labels[index[part]]

# ----------------------------------------------------------------------------------------------
# Loading


def load_image_dataset(name_or_path: str = "fashion_mnist", split: str = "train", *,
                       image_size: int | None = None, samples: int | float | None = None,
                       seed: int = 0, device=None) -> ImageData:
    """Load one split as tensors: a known name (``DATASETS``), a local folder, or a Hub id.

    ``split="test"`` falls back to ``"validation"`` where there is no test split. ``image_size``
    resizes (shorter side, then a centre crop) to a square; ``samples`` keeps a seeded random
    subset (a count or a fraction), exactly ``load_image_dataset(...).subset(samples, seed)``.
    """
    spec = DATASETS.get(_HUB_ALIASES.get(name_or_path, name_or_path))
    size = image_size if image_size is not None else (spec.image_size if spec else None)
    if size is not None and size < 1:
        raise VanEduError(f"image_size must be a positive number of pixels, got {image_size}")
    if samples is not None:
        _subset_index(1, samples, seed)                      # check it now, before any decoding
    source = _Source.resolve(name_or_path, spec)
    data = _load_cached_or_decode(source, split, size, samples, seed)
    if spec and spec.classes and len(spec.classes) == data.num_classes:
        data.classes = list(spec.classes)
    return data.to(device) if device is not None else data


@dataclass
class _Source:
    """A resolved place to load from: a local folder or a Hub repository (+ config)."""
    name: str                               # the name shown in ImageData.name
    path: str                               # folder path or Hub id, as given to datasets
    config: str | None = None
    local: bool = False
    note: str = ""                          # why this place was chosen, for error messages
    fingerprint: str = ""                   # digest of a local folder's files (path, size, mtime)

    @classmethod
    def resolve(cls, name_or_path: str, spec: DatasetSpec | None) -> "_Source":
        if spec is not None:
            name = _HUB_ALIASES.get(name_or_path, name_or_path)
            if spec.local is not None and spec.local.is_dir():
                return cls(name, str(spec.local), local=True)
            note = (f"the bundled folder {spec.local} is missing, so the Hub was tried"
                    if spec.local is not None else "")
            return cls(name, spec.hub_id, spec.config, note=note)
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            return cls(name_or_path, str(path.resolve()), local=True)
        if path.exists():
            raise VanEduError(f"{name_or_path!r} is a file; expected a folder (parquet files in the Hub's "
                              "layout, or class subfolders of images), a known name or a Hub id")
        return cls(name_or_path, name_or_path)


def _known_choices() -> str:
    return "; ".join(f"{name!r} ({spec.description})" for name, spec in DATASETS.items())


def _load_cached_or_decode(source: _Source, split: str, size, samples, seed) -> ImageData:
    """Serve the full split from the tensor cache when its key matches, else decode (and cache)."""
    cache = _TensorCache(source, split, size)
    if source.local:
        source.fingerprint = _files_digest(_folder_files(Path(source.path)))
        cache.set_key(source.fingerprint)
        if (data := cache.read()) is not None:
            return data.subset(samples, seed) if samples is not None else data
    dataset = _open_split(source, split)
    if not source.local:
        cache.set_key(_files_digest([Path(f["filename"]) for f in dataset.cache_files]))
        if (data := cache.read()) is not None:
            return data.subset(samples, seed) if samples is not None else data
    image_column, label_column = _find_columns(dataset)
    labels, classes = _read_labels(dataset, label_column)
    if samples is not None:                                   # decode only the rows kept
        index = _subset_index(len(dataset), samples, seed)
        images = _decode_images(dataset.select(index.tolist()), image_column, size)
        return ImageData(images, labels[index], classes, source.name)
    data = ImageData(_decode_images(dataset, image_column, size), labels, classes, source.name)
    cache.write(data)
    return data


def _offline_env() -> bool:
    """Whether HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for no network."""
    return any(os.environ.get(var, "").upper() in {"1", "ON", "YES", "TRUE"}
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub can be used from here: False when ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE`` is set, or when the Hub's host does not answer within 3 s. Notebooks
    call it before a cell that downloads, so that offline the cell is skipped at once instead of
    failing after a minute of retries. The network answer is remembered for the session."""
    return not _offline_env() and _hub_answers()


@functools.lru_cache(maxsize=1)
def _hub_answers() -> bool:
    """One 3-second TCP connection to the Hub's host (port 443)."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub_constants

    host = urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_from_env(needs_hub: bool = False):
    """Honour HF_HUB_OFFLINE / HF_DATASETS_OFFLINE even when set after ``datasets`` was imported
    (both libraries read them once, at import); with ``needs_hub``, an unreachable Hub counts as
    offline too (cached copies still load)."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    offline = _offline_env() or (needs_hub and not _hub_answers())
    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             hub_constants.HF_HUB_OFFLINE)
    if offline:
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield offline or saved[0]
    finally:
        (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
         hub_constants.HF_HUB_OFFLINE) = saved


def _open_split(source: _Source, split: str):
    """The ``datasets.Dataset`` of one split; ``test`` falls back to ``validation``."""
    import datasets

    with _offline_from_env(needs_hub=not source.local) as offline:
        builder = _builder(source, offline)
        available = list(builder.config.data_files or builder.info.splits or [])
        chosen = split if split in available else None
        if chosen is None and split == "test" and "validation" in available:
            chosen = "validation"
        if chosen is None:
            raise VanEduError(f"{source.name!r} has no split {split!r}; its splits are: "
                              f"{', '.join(available) or 'none'}")
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=chosen)
    if not isinstance(dataset, datasets.Dataset) or len(dataset) == 0:
        raise VanEduError(f"split {chosen!r} of {source.name!r} is empty")
    return dataset


def _builder(source: _Source, offline: bool):
    """``datasets.load_dataset_builder`` with errors turned into one clear VanEduError."""
    import datasets

    try:
        return datasets.load_dataset_builder(source.path, source.config, cache_dir=_arrow_dir(source))
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error) or offline:
            raise _not_found(source, error, offline) from error
    except Exception as error:                                # not found, offline, bad folder, ...
        raise _not_found(source, error, offline) from error
    try:  # a script-only Hub repo (e.g. frgfm/imagenette): read the Hub's parquet export instead
        return datasets.load_dataset_builder(source.path, revision="refs/convert/parquet",
                                             data_dir=source.config)
    except Exception as error:
        raise _not_found(source, error, offline) from error


def _arrow_dir(source: _Source) -> str | None:
    """Where datasets keeps its Arrow copy of a local folder: one folder per fingerprint, because
    datasets alone reuses a stale copy when a file listed in the card's ``configs`` changes."""
    import datasets.config

    if not source.local:
        return None
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "van_edu_local" / source.fingerprint[:16])


def _not_found(source: _Source, error: Exception, offline: bool) -> VanEduError:
    """One message: what could not be loaded, why, and which choices exist."""
    reason = f"{type(error).__name__}: {error}"
    hub = "the Hugging Face Hub" + (" (offline, or the Hub is unreachable)" if offline else "")
    choices = f"Known names: {_known_choices()}."
    if source.local:
        return VanEduError(f"Could not read the dataset folder {source.path}: {reason}. Expected parquet "
                           "files in the Hub's layout, or class subfolders of images. " + choices)
    if source.name in DATASETS:
        note = f"; {source.note}" if source.note else ""
        return VanEduError(f"Could not load {source.name!r} ({source.path!r}) from {hub}{note}: "
                           f"{reason}. {choices}")
    return VanEduError(
        f"Unknown dataset {source.name!r}: not a known name, not a local folder, and not found on {hub} "
        f"({reason}). Expected a known name — {_known_choices()} — or a local folder (parquet files in "
        "the Hub's layout, or class subfolders of images), or a Hub id such as 'uoft-cs/cifar10' "
        "(needs network or a cached copy).")


_IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "category", "y")


def _find_columns(dataset) -> tuple[str, str]:
    """(image column, label column): images by their ``datasets.Image`` feature, labels by
    ClassLabel first, then by a common name."""
    import datasets

    features = dataset.features
    described = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
    images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
    if not images:
        raise VanEduError(f"no image column (a datasets.Image feature) in this dataset; "
                          f"its columns are: {described}")
    class_labels = [k for k, v in features.items() if isinstance(v, datasets.ClassLabel)]
    named = [k for k in features if k.lower() in _LABEL_NAMES and isinstance(features[k], datasets.Value)]
    labels = class_labels or named
    if not labels:
        raise VanEduError(f"no label column (a ClassLabel, or one named {', '.join(_LABEL_NAMES)}) "
                          f"in this dataset; its columns are: {described}")
    return _prefer(images, _IMAGE_NAMES), _prefer(labels, _LABEL_NAMES)


def _prefer(columns: list[str], names: tuple[str, ...]) -> str:
    ranked = [c for name in names for c in columns if c.lower() == name]
    return (ranked or columns)[0]


def _read_labels(dataset, column: str) -> tuple[Tensor, list[str]]:
    """Labels as int64 ``[N]`` and the class names (ClassLabel names, sorted strings, or numbers)."""
    import datasets

    feature = dataset.features[column]
    values = dataset.select_columns([column]).with_format("arrow")[:].column(column).to_numpy(
        zero_copy_only=False)
    if isinstance(feature, datasets.ClassLabel):
        classes = list(feature.names)
    elif values.dtype.kind in "OUS":                            # strings: classes in sorted order
        classes = sorted(set(values.tolist()))
        values = np.searchsorted(np.array(classes, dtype=object), values)
    else:
        classes = [str(i) for i in range(int(values.max()) + 1)] if len(values) else []
    values = values.astype(np.int64)
    if len(values) and (values.min() < 0 or values.max() >= len(classes)):
        raise VanEduError(f"label column {column!r} has values outside 0..{len(classes) - 1} "
                          f"(e.g. -1 for unlabelled rows); expected a labelled split")
    return torch.from_numpy(values), classes


def _decode_images(dataset, column: str, size: int | None, chunk: int = 2000) -> Tensor:
    """Decode the image column to uint8 ``[N, C, H, W]``, a chunk of rows at a time.

    Grey images stay 1 channel and colour ones 3 (palette, alpha, CMYK ... converted); when both
    occur, grey images are repeated to 3 channels.
    """
    feature = dataset.features[column]
    rows = dataset.select_columns([column]).with_format("arrow")
    arrays = []
    for start in range(0, len(dataset), chunk):
        for entry in rows[start:start + chunk].column(column).to_pylist():
            arrays.append(_pil_to_array(feature.decode_example(entry), size))
    return _stack(arrays)


def _pil_to_array(image, size: int | None) -> np.ndarray:
    """PIL image -> ``[H, W]`` (grey) or ``[H, W, 3]`` uint8, resized when ``size`` is given."""
    if image.mode not in ("L", "RGB"):
        grey = image.mode in ("1", "LA", "I", "I;16", "F") or image.mode.startswith("I;")
        if grey:
            image = image.convert("L")
        elif image.mode in ("P", "PA"):                         # palette: transparency via RGBA
            image = image.convert("RGBA").convert("RGB")
        else:                                                  # RGBA, CMYK, YCbCr, ...
            image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = _resize_and_centre_crop(image, size)
    return np.asarray(image, dtype=np.uint8)


def _resize_and_centre_crop(image, size: int):
    """Scale the shorter side to ``size`` (bicubic, as the VAN authors), then cut the centre square."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _stack(arrays: list[np.ndarray]) -> Tensor:
    """Equal-sized ``[H, W]`` / ``[H, W, 3]`` arrays -> uint8 tensor ``[N, C, H, W]``."""
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        examples = " and ".join(f"{h}x{w}" for h, w in sorted(shapes)[:2])
        raise VanEduError(f"images have different sizes (e.g. {examples}); pass image_size=... "
                          "to resize them all to one square size")
    stacked = torch.from_numpy(np.stack(arrays))               # [N, H, W] or [N, H, W, 3]
    if stacked.dim() == 3:
        return stacked[:, None].contiguous()                   # [N, 1, H, W]
    return stacked.permute(0, 3, 1, 2).contiguous()             # [N, 3, H, W]

# ----------------------------------------------------------------------------------------------
# Tensor cache: decoded splits saved with torch.save, keyed by the source files' path/size/mtime.

_CACHE_VERSION = 1


def _cache_dir() -> Path | None:
    value = os.environ.get("VAN_EDU_CACHE", "")
    if value.lower() in {"0", "off", "false", "no"}:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "van_edu"


def _folder_files(folder: Path) -> list[Path]:
    """Every file of a local dataset folder, hidden ones excepted, in a stable order."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _files_digest(files: list[Path]) -> str:
    """sha256 over the files' resolved paths, sizes and modification times ("" for no files)."""
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class _TensorCache:
    """One cache file per (source, split, size); it holds the key of the files it was made from."""

    def __init__(self, source: _Source, split: str, size: int | None):
        self.source, self.split, self.size, self.key = source, split, size, None
        root = _cache_dir()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source.path).name or "data")
        where = hashlib.sha256(f"{source.path}|{source.config}".encode()).hexdigest()[:10]
        self.file = root / f"{slug}-{where}-{split}-{size or 'orig'}.pt" if root else None

    def set_key(self, files_digest: str) -> None:
        """Key = the source files' digest + what shapes the tensors; none when there are no files."""
        if files_digest:
            self.key = hashlib.sha256(
                f"v{_CACHE_VERSION}|{self.split}|{self.size}|{files_digest}".encode()).hexdigest()

    def read(self) -> ImageData | None:
        if self.file is None or self.key is None or not self.file.is_file():
            return None
        try:
            stored = torch.load(self.file, weights_only=True)
        except Exception:                                      # unreadable: decode again
            return None
        if stored.get("key") != self.key:
            return None
        return ImageData(stored["images"], stored["labels"], stored["classes"], self.source.name)

    def write(self, data: ImageData) -> None:
        if self.file is None or self.key is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.file.parent, suffix=".tmp", delete=False) as tmp:
                torch.save({"key": self.key, "images": data.images, "labels": data.labels,
                            "classes": data.classes}, tmp)
            os.replace(tmp.name, self.file)
        except OSError as error:
            warnings.warn(f"van_edu: could not write the decoded-data cache {self.file}: {error}")
