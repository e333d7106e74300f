"""Opening datasets (the Hub, its offline copies, local folders) and decoding images and labels.

``open_split`` reads one split with ``datasets``: a Hub id (cached copies also offline), a folder
of parquet files in the Hub's layout, or an ``imagefolder`` of class subfolders. The Arrow copy
that ``datasets`` makes of a local folder goes to ``<HF_DATASETS_CACHE>/van_edu_local/<fingerprint>``,
one per version of the folder's files (``datasets`` alone would reuse a stale copy). Then
``find_columns``, ``read_labels`` and ``decode_images`` turn it into tensors.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import VanEduError
from .sources import DATASETS, Source, known_choices

__all__ = ["hub_reachable", "open_split", "has_labels", "find_columns", "read_labels", "decode_images",
           "find_mask_column", "decode_masks"]


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


def open_split(source: Source, split: str):
    """The ``datasets.Dataset`` of one split; ``test`` falls back to ``validation``."""
    import datasets

    with _offline_from_env(needs_hub=not source.local) as offline:
        builder = _builder(source, offline)
        available = [str(name) for name in builder.config.data_files or builder.info.splits or []]
        chosen = split if split in available else None
        if chosen is None and split == "test" and "validation" in available:
            chosen = "validation"
        if chosen is None:
            wanted = "a 'test' or 'validation' split" if split == "test" else f"a {split!r} split"
            folders = ("; for class subfolders of images, put them under FOLDER/train/ and FOLDER/test/"
                       if source.local else "")
            raise VanEduError(f"{source.name!r} has no split {split!r}; its splits are: "
                              f"{', '.join(available) or 'none'} (expected {wanted}{folders})")
        try:
            builder.download_and_prepare()
            dataset = builder.as_dataset(split=chosen)
        except Exception as error:                            # a damaged file, a full disk, ...
            raise VanEduError(f"could not read split {chosen!r} of {source.name!r} ({source.path}): "
                              f"{type(error).__name__}: {error} (expected readable parquet or image "
                              "files)") from error
    if not isinstance(dataset, datasets.Dataset) or len(dataset) == 0:
        raise VanEduError(f"split {chosen!r} of {source.name!r} is empty")
    return dataset


def _builder(source: Source, offline: bool):
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


def _arrow_dir(source: Source) -> str | None:
    """Where datasets keeps its Arrow copy of a local folder: one folder per fingerprint, because
    datasets alone reuses a stale copy when a file listed in the card's ``configs`` changes."""
    import datasets.config

    if not source.local:
        return None
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "van_edu_local" / source.fingerprint[:16])


def _not_found(source: Source, error: Exception, offline: bool) -> VanEduError:
    """One message: what could not be loaded, why, and which choices exist."""
    reason = f"{type(error).__name__}: {error}"
    hub = "the Hugging Face Hub" + (" (offline, or the Hub is unreachable)" if offline else "")
    choices = f"Known names: {known_choices()}."
    if source.local:
        return VanEduError(f"Could not read the dataset folder {source.path}: {reason}. Expected parquet "
                           "files in the Hub's layout, or class subfolders of images. " + choices)
    if source.name in DATASETS:
        note = f"; {source.note}" if source.note else ""
        return VanEduError(f"Could not load {source.name!r} ({source.path!r}) from {hub}{note}: "
                           f"{reason}. {choices}")
    return VanEduError(
        f"Unknown dataset {source.name!r}: not a known name, not a local folder, and not found on {hub} "
        f"({reason}). Expected a known name — {known_choices()} — or a local folder (parquet files in "
        "the Hub's layout, or class subfolders of images), or a Hub id such as 'uoft-cs/cifar10' "
        "(needs network or a cached copy).")


_IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "category", "y")


def _label_columns(features) -> list[str]:
    """The columns that can be labels: ClassLabel ones, else those with a common label name."""
    import datasets

    class_labels = [k for k, v in features.items() if isinstance(v, datasets.ClassLabel)]
    named = [k for k in features if k.lower() in _LABEL_NAMES and isinstance(features[k], datasets.Value)]
    return class_labels or named


def has_labels(dataset) -> bool:
    """Whether ``find_columns`` finds a label column."""
    return bool(_label_columns(dataset.features))


def find_columns(dataset) -> tuple[str, str]:
    """(image column, label column): images by their ``datasets.Image`` feature, labels by
    ClassLabel first, then by a common name."""
    import datasets

    features = dataset.features
    described = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
    images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
    if not images:
        raise VanEduError(f"no image column (a datasets.Image feature) in this dataset; "
                          f"its columns are: {described}")
    labels = _label_columns(features)
    if not labels:
        raise VanEduError(f"no label column (a ClassLabel, or one named {', '.join(_LABEL_NAMES)}) "
                          f"in this dataset; its columns are: {described}")
    return _prefer(images, _IMAGE_NAMES), _prefer(labels, _LABEL_NAMES)


def _prefer(columns: list[str], names: tuple[str, ...]) -> str:
    ranked = [c for name in names for c in columns if c.lower() == name]
    return (ranked or columns)[0]


def read_labels(dataset, column: str) -> tuple[Tensor, list[str]]:
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


def decode_images(dataset, column: str, size: int | None, chunk: int = 2000) -> Tensor:
    """Decode the image column to uint8 ``[N, C, H, W]``, a chunk of rows at a time.

    Grey images stay 1 channel and colour ones 3 (palette, alpha, CMYK ... converted); when both
    occur, grey images are repeated to 3 channels.
    """
    feature = dataset.features[column]
    rows = dataset.select_columns([column]).with_format("arrow")
    arrays = []
    for start in range(0, len(dataset), chunk):
        for entry in rows[start:start + chunk].column(column).to_pylist():
            arrays.append(_pil_to_array(_decode(feature, entry), size))
    return _stack(arrays)


def _decode(feature, entry):
    """One image as PIL, or a VanEduError naming the file that is not an image."""
    try:
        return feature.decode_example(entry)
    except Exception as error:                                # PIL's UnidentifiedImageError, OSError
        where = (entry or {}).get("path") or "an image of this dataset"
        raise VanEduError(f"cannot decode {where} ({type(error).__name__}: {error}); expected an image "
                          "file PIL can read (PNG, JPEG, ...): remove or replace it") from error


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


def _resize_and_centre_crop(image, size: int, nearest: bool = False):
    """Scale the shorter side to ``size`` (bicubic, as the VAN authors; ``nearest`` for a mask, whose
    values are classes and must not be blended), then cut the centre square."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.NEAREST if nearest else Image.BICUBIC)
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
                          "(--image-size on the command line) to resize them all to one square size")
    stacked = torch.from_numpy(np.stack(arrays))               # [N, H, W] or [N, H, W, 3]
    if stacked.dim() == 3:
        return stacked[:, None].contiguous()                   # [N, 1, H, W]
    return stacked.permute(0, 3, 1, 2).contiguous()             # [N, 3, H, W]


_MASK_NAMES = ("mask", "masks", "segmentation_mask", "trimap", "annotation", "semantic_segmentation", "label")


def find_mask_column(dataset) -> tuple[str, str]:
    """(image column, mask column) of a segmentation set: both ``datasets.Image`` features, the mask
    found by its name (mask, segmentation_mask, trimap, annotation, ...), the image being the other."""
    import datasets

    features = dataset.features
    images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
    masks = [k for k in images if k.lower() in _MASK_NAMES]
    if not masks or len(images) < 2:
        described = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
        raise VanEduError(f"expected two image columns, a picture and a mask named one of {', '.join(_MASK_NAMES)}; "
                          f"this dataset's columns are: {described}")
    mask = _prefer(masks, _MASK_NAMES)
    return _prefer([k for k in images if k != mask], _IMAGE_NAMES), mask


def decode_masks(dataset, column: str, size: int | None, values: dict[int, int], chunk: int = 2000) -> Tensor:
    """Decode a mask column to int64 ``[N, H, W]``, each stored value mapped through ``values``
    (stored value -> class, or IGNORE_INDEX); resized like ``decode_images`` but nearest, so a
    pixel keeps one of the stored values. A value missing from ``values`` is an error."""
    feature = dataset.features[column]
    rows = dataset.select_columns([column]).with_format("arrow")
    table = np.full(256, np.iinfo(np.int64).min, dtype=np.int64)   # unknown values stand out
    for stored, cls in values.items():
        table[stored] = cls
    masks = []
    for start in range(0, len(dataset), chunk):
        for entry in rows[start:start + chunk].column(column).to_pylist():
            image = _decode(feature, entry)
            if image.mode not in ("L", "P"):
                raise VanEduError(f"a mask of column {column!r} has mode {image.mode}; expected one value per "
                                  "pixel (a grey or palette PNG)")
            if size is not None and image.size != (size, size):
                image = _resize_and_centre_crop(image, size, nearest=True)
            masks.append(np.asarray(image, dtype=np.uint8))
    if len({m.shape for m in masks}) > 1:
        raise VanEduError("masks have different sizes; pass image_size=... to resize them all to one square size")
    stacked = np.stack(masks)                                   # [N, H, W] stored values
    unknown = sorted(set(np.unique(stacked).tolist()) - set(values))
    if unknown:
        raise VanEduError(f"mask column {column!r} holds the values {unknown[:10]}, which this data set's "
                          f"mapping does not name (expected only {sorted(values)})")
    return torch.from_numpy(table[stacked])
