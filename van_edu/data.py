"""The front door of the data: ``load_image_dataset``, and the names the notebooks import from here.

A split is loaded once into uint8 tensors on the device (``ImageData``) and cut into seeded,
augmented batches there (``batches``). Sources (``load_image_dataset``):

- ``"fashion_mnist"``: the copy bundled in ``data/fashion_mnist/`` (Hub layout, works offline),
  or ``zalando-datasets/fashion_mnist`` from the Hub when ``van_edu`` is installed without the repo.
- ``"scattered_garments"``: canvases of Fashion-MNIST garments with a class per pixel and boxes, made
  offline by ``van_edu.garments`` (a segmentation split: its labels are masks ``[N, H, W]``).
- ``"oxford_pets"``: Oxford-IIIT Pet's photos with their trimaps (a segmentation split: background,
  pet, the border ``IGNORE_INDEX``), from ``data/oxford_pets/`` in the Hub's layout, which
  ``data/build_oxford_pets.py`` writes from the authors' release.
- ``"cifar10"`` (``uoft-cs/cifar10``) and ``"imagenette"`` (``frgfm/imagenette``, 160px): from the Hub.
- Any Hub id or local folder that ``datasets.load_dataset`` reads (parquet in the Hub's layout, or an
  ``imagefolder`` of class subfolders) with an image column and a label column.

The rooms behind the door, each importing only those before it: ``augment`` (random crops, flips,
erasing), ``images`` (``ImageData``, ``normalize``, ``batches``), ``sources`` (names -> Hub ids,
the bundled folder), ``cache`` (decoded splits kept on disk, see there for ``VAN_EDU_CACHE``) and
``hub`` (opening and decoding).
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from . import garments, hub
from .augment import AUGMENT_PRESETS, AugmentConfig, augment
from .cache import TensorCache, files_digest, folder_files
from .errors import VanEduError
from .hub import hub_reachable
from .images import IGNORE_INDEX, ImageData, batches, check_seed, check_subset_size, normalize, subset_index
from .sources import BUNDLED_DIR, DATASETS, IMAGENET_CLASSES_FILE, PHOTOS_DIR, DatasetSpec, Source, known_name

__all__ = ["normalize", "ImageData", "IGNORE_INDEX", "AugmentConfig", "AUGMENT_PRESETS", "augment", "batches",
           "load_image_dataset", "garment_instances", "DatasetSpec", "DATASETS", "BUNDLED_DIR", "hub_reachable",
           "load_photos", "photo_credits", "imagenet_classes"]


def load_image_dataset(name_or_path: str = "fashion_mnist", split: str = "train", *,
                       image_size: int | None = None, samples: int | float | None = None,
                       seed: int = 0, device=None, task: str | None = None) -> ImageData:
    """Load one split as tensors: a known name (``DATASETS``), a local folder, or a Hub id.

    ``split="test"`` falls back to ``"validation"`` where there is no test split. ``image_size``
    resizes (shorter side, then a centre crop) to a square; ``samples`` keeps a seeded random
    subset (a count or a fraction), exactly ``load_image_dataset(...).subset(samples, seed)``.
    ``task`` picks the labels of a data set that has several kinds: ``"scattered_garments"`` gives
    masks (``"segmentation"``, its default) or boxes (``"detection"``: ``[N, 3, 5]`` rows of x0, y0,
    x1, y1, class, padded with class -1).
    """
    spec = DATASETS.get(known_name(name_or_path))
    if spec is not None and spec.generated:
        if image_size is not None:
            raise VanEduError("scattered_garments has its own canvas size (GarmentsConfig.size); "
                              "expected no image_size")
        if task not in (None, "segmentation", "detection"):
            raise VanEduError(f"scattered_garments serves task='segmentation' (masks) or 'detection' (boxes), "
                              f"got task={task!r}")
        data = _load_garments(split, samples, seed, boxes=task == "detection")
        return data.to(device) if device is not None else data
    tasks = spec.tasks if spec is not None else ("classification",)
    if task is not None and task not in tasks:
        has = "a class per pixel (task='segmentation')" if "segmentation" in tasks else \
            "a class per image (task='classification')"
        raise VanEduError(f"{name_or_path!r} has {has}, not {task!r} (expected scattered_garments for "
                          "detection, scattered_garments or oxford_pets for segmentation)")
    size = image_size if image_size is not None else (spec.image_size if spec else None)
    if size is not None and size < 1:
        raise VanEduError(f"image_size must be a positive number of pixels, got {image_size}")
    if samples is not None:                                  # check them now, before any decoding
        check_subset_size(samples)
        check_seed(seed)
    source = Source.resolve(name_or_path, spec)
    if spec is not None and spec.mask_values is not None:
        data = _load_masks(source, spec, split, size, samples, seed)
        return data.to(device) if device is not None else data
    data = _load_cached_or_decode(source, split, size, samples, seed)
    if data.num_classes < 2:
        named = f"one class ({data.classes[0]!r})" if data.classes else "no classes"
        raise VanEduError(f"split {split!r} of {source.name!r} has {named}; a classifier needs at least "
                          "two classes (expected labels of two or more classes)")
    if spec and spec.classes and len(spec.classes) == data.num_classes:
        data.classes = list(spec.classes)
    elif spec and spec.class_names and all(c in spec.class_names for c in data.classes):
        data.classes = [spec.class_names[c] for c in data.classes]     # WordNet ids -> words
    return data.to(device) if device is not None else data


def photo_credits(folder=None) -> list[dict]:
    """What each of the course's photographs shows and whose it is (``data/photos/credits.json``:
    ``file``, ``shows``, ``credit``, ``source``), in the order ``load_photos`` returns them."""
    import json

    folder = Path(folder) if folder is not None else PHOTOS_DIR
    try:
        return json.loads((folder / "credits.json").read_text())
    except (OSError, ValueError) as err:
        raise VanEduError(f"no photographs in {folder} ({type(err).__name__}); expected the course's data/photos "
                          "with its credits.json (python data/build_photos.py writes them)") from None


def load_photos(image_size: int = 224, crop: float = 0.9, folder=None) -> ImageData:
    """The course's photographs (``data/photos``, CC0: ``photo_credits``) as the VAN authors fed
    their ImageNet models: the shorter side resized (bicubic) to ``floor(image_size / crop)``, the
    centre ``image_size`` square cut; uint8 ``[N, 3, image_size, image_size]``. ``classes`` say what
    each photograph shows, ``labels`` are their index. Normalise with ``normalize`` (mean = std = 0.5)."""
    import math

    import numpy as np
    from PIL import Image

    if not 0 < crop <= 1 or image_size < 1:
        raise VanEduError(f"expected image_size >= 1 and 0 < crop <= 1, got {image_size} and {crop}")
    folder = Path(folder) if folder is not None else PHOTOS_DIR
    credits = photo_credits(folder)
    side = math.floor(image_size / crop)
    low = (side - image_size) // 2
    arrays = [np.asarray(hub._resize_and_centre_crop(Image.open(folder / e["file"]).convert("RGB"), side))
              for e in credits]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)[:, :, low:low + image_size, low:low + image_size]
    return ImageData(images.contiguous(), torch.arange(len(credits)), [e["shows"] for e in credits], "photos")


def imagenet_classes() -> list[str]:
    """ImageNet-1K's 1,000 class names in the order of a classifier's outputs (``data/imagenet_classes.txt``)."""
    try:
        names = IMAGENET_CLASSES_FILE.read_text().splitlines()
    except OSError:
        raise VanEduError(f"{IMAGENET_CLASSES_FILE} is missing; expected the course's data folder") from None
    if len(names) != 1000:
        raise VanEduError(f"{IMAGENET_CLASSES_FILE} has {len(names)} lines, expected 1,000 class names")
    return names


def _load_cached_or_decode(source: Source, split: str, size, samples, seed) -> ImageData:
    """Serve the full split from the tensor cache when its key matches, else decode (and cache)."""
    cache = TensorCache(source, split, size)
    what = f"the {split!r} split of {source.name!r}"
    if source.local:                         # a folder: its files are known before opening it
        files = folder_files(Path(source.path))
        source.fingerprint = files_digest(files)
        cache.set_key(source.fingerprint)
        if (data := cache.read()) is not None:
            return _subset(data, samples, seed, what)
    dataset = hub.open_split(source, split)
    if not source.local:                     # the Hub: its files are the downloaded Arrow copy
        cache.set_key(files_digest([Path(f["filename"]) for f in dataset.cache_files]))
        if (data := cache.read()) is not None:
            return _subset(data, samples, seed, what)
    if source.local and not hub.has_labels(dataset) and (why := _unlabelled_folder(source, files)):
        raise VanEduError(why)
    image_column, label_column = hub.find_columns(dataset)
    labels, classes = hub.read_labels(dataset, label_column)
    if samples is not None:                                   # decode only the rows kept
        index = subset_index(len(dataset), samples, seed, what)
        images = hub.decode_images(dataset.select(index.tolist()), image_column, size)
        return ImageData(images, labels[index], classes, source.name)
    data = ImageData(hub.decode_images(dataset, image_column, size), labels, classes, source.name)
    cache.write(data)
    return data


def _load_garments(split: str, samples, seed: int, config: garments.GarmentsConfig = garments.GARMENTS,
                   boxes: bool = False) -> ImageData:
    """Scattered garments (``van_edu.garments``): made from the bundled Fashion-MNIST through a
    ``datasets.Dataset``, decoded once and cached; the key holds the config and the source images.
    The labels are the masks, or with ``boxes`` the padded boxes (``ImageData``'s detection form)."""
    if samples is not None:
        check_subset_size(samples)
        check_seed(seed)
    if split not in ("train", "test"):
        raise VanEduError(f"scattered_garments has the splits 'train' and 'test', got {split!r}")
    source = load_image_dataset("fashion_mnist", split)
    exclude = load_image_dataset("fashion_mnist", "train") if split == "test" else None
    kind = "boxes" if boxes else "masks"
    cache = TensorCache(Source("scattered_garments", f"scattered_garments-{kind}-{config.key()}"), split, config.size)
    digest = hashlib.sha256(config.key().encode())
    for part in (source, exclude):
        if part is not None:
            digest.update(part.images.numpy().tobytes())
            digest.update(part.labels.numpy().tobytes())
    cache.set_key(digest.hexdigest())
    data = cache.read()
    if data is None:
        dataset = garments.garments_from(source, split, config, exclude)
        if boxes:                                             # [N, M, 5]: x0, y0, x1, y1, class (-1: none)
            labels = torch.full((len(dataset), config.max_garments, 5), -1.0)
            for i, (rows, classes) in enumerate(zip(dataset["boxes"], dataset["labels"])):
                for j, (box, k) in enumerate(zip(rows, classes)):
                    labels[i, j] = torch.tensor([*box, k], dtype=torch.float32)
            classes = list(garments.FASHION_MNIST_CLASSES)
        else:
            labels = hub.decode_images(dataset, "mask", None)[:, 0].to(torch.int64)      # [N, S, S]
            classes = list(garments.GARMENT_CLASSES)
        data = ImageData(hub.decode_images(dataset, "image", None), labels, classes, "scattered_garments")
        cache.write(data)
    return _subset(data, samples, seed, f"the {split!r} split of 'scattered_garments'")


def _load_masks(source: Source, spec, split: str, size, samples, seed: int) -> ImageData:
    """A segmentation set read from files (``spec.mask_values`` set): the picture and its mask, both
    cut to ``size`` (the mask with nearest, so classes never blend), the mask's stored values mapped
    to classes (``IGNORE_INDEX`` for pixels without one). Cached like any split, under its own key."""
    if not source.local:                      # the course names no Hub repository of masks yet
        raise VanEduError(f"{source.name!r} is read from a local folder, not from {source.path!r}")
    files = folder_files(Path(source.path))
    source.fingerprint = files_digest(files)
    cache = TensorCache(dataclasses.replace(source, path=f"{source.path}-masks"), split, size)
    cache.set_key(f"{source.fingerprint}|{sorted(spec.mask_values.items())}")
    what = f"the {split!r} split of {source.name!r}"
    if (data := cache.read()) is not None:
        return _subset(data, samples, seed, what)
    dataset = hub.open_split(source, split)
    image_column, mask_column = hub.find_mask_column(dataset)
    masks = hub.decode_masks(dataset, mask_column, size, spec.mask_values)
    data = ImageData(hub.decode_images(dataset, image_column, size), masks, list(spec.classes), source.name)
    cache.write(data)
    return _subset(data, samples, seed, what)


def garment_instances(split: str = "test", samples: int | float | None = None, seed: int = 0,
                      config: garments.GarmentsConfig = garments.GARMENTS) -> dict:
    """The objects behind ``load_image_dataset("scattered_garments", split, samples=..., seed=...)``,
    canvas for canvas: ``instances`` int64 [N, H, W] (0 background, i + 1 on the visible pixels of
    the canvas's i-th garment), ``labels`` and ``areas`` (per canvas, per garment: its class 0..9
    and its pixels as drawn), for ``van_edu.metrics.instance_scores``. Remade from the generator
    (a few seconds), not cached."""
    if split not in ("train", "test"):
        raise VanEduError(f"scattered_garments has the splits 'train' and 'test', got {split!r}")
    source = load_image_dataset("fashion_mnist", split)
    exclude = load_image_dataset("fashion_mnist", "train") if split == "test" else None
    dataset = garments.garments_from(source, split, config, exclude)
    index = (subset_index(len(dataset), samples, seed, f"the {split!r} split of 'scattered_garments'").tolist()
             if samples is not None else list(range(len(dataset))))
    kept = dataset.select(index)
    return {"instances": hub.decode_images(kept, "instances", None)[:, 0].to(torch.int64),
            "labels": kept["labels"], "areas": kept["areas"]}


def _subset(data: ImageData, samples, seed: int, what: str) -> ImageData:
    """``data.subset(samples, seed)`` (or all of it for None), naming the split in errors."""
    if samples is None:
        return data
    index = subset_index(len(data), samples, seed, what)
    return ImageData(data.images[index], data.labels[index], data.classes, data.name)


_SPLIT_FOLDERS = {"train", "training", "test", "testing", "eval", "valid", "validation", "val", "dev"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _unlabelled_folder(source: Source, files: list[Path]) -> str | None:
    """Why an image folder has no labels: ``datasets`` takes them from class subfolders and makes
    none from fewer than two, so say how many it found (None where that is not the reason)."""
    root = Path(source.path)
    classes = set()
    for path in files:
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            parts = [p for p in path.relative_to(root).parts[:-1] if p.lower() not in _SPLIT_FOLDERS]
            classes.add(parts[-1] if parts else "")
    named = sorted(classes - {""})
    if not classes or len(named) >= 2:
        return None
    if not named:
        found = "its images are not in class subfolders"
    elif "" in classes:
        found = f"it has one class subfolder ({named[0]!r}) and images outside it"
    else:
        found = f"its images are all in one class subfolder ({named[0]!r})"
    return (f"the image folder {source.name!r} has no labels: {found}, and a classifier needs at least "
            "two classes (expected FOLDER/<class>/<image> with two or more class subfolders, "
            "optionally under FOLDER/train/ and FOLDER/test/)")
