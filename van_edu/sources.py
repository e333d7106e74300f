"""Where a dataset comes from: known names -> Hub ids, the bundled folder, class names.

``DATASETS`` names the datasets the course knows; ``Source.resolve`` turns a name, a Hub id or a
local folder into the one place ``load_image_dataset`` reads from. The bundled Fashion-MNIST in
``data/fashion_mnist/`` (the Hub's layout) is preferred to the Hub, so the course works offline.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VanEduError
from .images import IGNORE_INDEX

__all__ = ["course_root", "BUNDLED_DIR", "FASHION_MNIST_CLASSES", "IMAGENETTE_CLASSES", "DatasetSpec", "DATASETS", "known_name", "Source",
           "known_choices", "OXFORD_PETS_DIR", "TRIMAP_VALUES", "PHOTOS_DIR", "IMAGENET_CLASSES_FILE"]



def course_root() -> Path:
    """The course repository: ``$VAN_EDU_COURSE_DIR`` where the Colab set-up cell put a clone
    (van_edu is then installed in site-packages, away from the data), else the folder this
    package sits in (a clone, or an editable install of one)."""
    env = os.environ.get("VAN_EDU_COURSE_DIR", "")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1]


BUNDLED_DIR = course_root() / "data" / "fashion_mnist"
# Not bundled (about 800 MB): data/build_oxford_pets.py writes it, in the Hub's layout, from the
# authors' release.
OXFORD_PETS_DIR = course_root() / "data" / "oxford_pets"
# Two CC0 photographs and ImageNet-1K's class names, for a pretrained model (data/build_photos.py).
PHOTOS_DIR = course_root() / "data" / "photos"
IMAGENET_CLASSES_FILE = course_root() / "data" / "imagenet_classes.txt"
# Oxford-IIIT Pet's trimaps: 1 pet, 2 background, 3 the border ("not classified") -> ignored.
TRIMAP_VALUES = {1: 1, 2: 0, 3: IGNORE_INDEX}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Imagenette's labels are WordNet ids; these are the names people know them by.
IMAGENETTE_CLASSES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888605": "parachute",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset lives and how to read it."""
    hub_id: str                       # Hugging Face Hub repository
    config: str | None = None         # Hub config name (None: the default one)
    local: Path | None = None         # a bundled folder in the Hub's layout, tried first
    image_size: int | None = None     # default resize (None: keep the stored size)
    classes: tuple[str, ...] | None = None  # display names replacing the stored ClassLabel names
    class_names: dict[str, str] | None = None  # stored name -> display name (e.g. WordNet id -> word)
    description: str = ""
    generated: bool = False           # made by the course itself (van_edu.garments), not read from files
    mask_values: dict[int, int] | None = None  # a segmentation set: stored mask value -> class (or IGNORE_INDEX)

    @property
    def tasks(self) -> tuple[str, ...]:
        """What its labels serve: a class per image, masks, or (the garments) masks and boxes."""
        if self.generated:
            return ("segmentation", "detection")
        return ("segmentation",) if self.mask_values is not None else ("classification",)


DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "zalando-datasets/fashion_mnist", local=BUNDLED_DIR, classes=FASHION_MNIST_CLASSES,
        description="bundled, offline: 60k/10k 28x28 grey, 10 classes"),
    "cifar10": DatasetSpec("uoft-cs/cifar10", description="Hub: 50k/10k 32x32 RGB, 10 classes"),
    "scattered_garments": DatasetSpec(
        "", generated=True,
        description="made offline from the bundled Fashion-MNIST: 8k/2k 64x64 grey canvases, a class per "
                    "pixel (background + 10), boxes"),
    "oxford_pets": DatasetSpec(
        "", local=OXFORD_PETS_DIR, image_size=128, classes=("background", "pet"), mask_values=TRIMAP_VALUES,
        description="Oxford-IIIT Pet's trimaps (CC BY-SA 4.0; build it with data/build_oxford_pets.py): "
                    "3.7k/3.7k RGB at 128 px, a class per pixel (background, pet; the border ignored)"),
    "imagenette": DatasetSpec("frgfm/imagenette", config="160px", image_size=160, class_names=IMAGENETTE_CLASSES,
                              description="Hub: 9.5k/3.9k RGB (shorter side 160), 10 classes"),
}
_HUB_ALIASES = {spec.hub_id: name for name, spec in DATASETS.items() if spec.hub_id}


def known_name(name_or_path: str) -> str:
    """The ``DATASETS`` name of a known dataset's Hub id (``"zalando-datasets/fashion_mnist"`` ->
    ``"fashion_mnist"``); any other string unchanged."""
    return _HUB_ALIASES.get(name_or_path, name_or_path)


def known_choices() -> str:
    """The known names with their descriptions, for error messages."""
    return "; ".join(f"{name!r} ({spec.description})" for name, spec in DATASETS.items())


@dataclass
class Source:
    """A resolved place to load from: a local folder or a Hub repository (+ config)."""
    name: str                               # the name shown in ImageData.name
    path: str                               # folder path or Hub id, as given to datasets
    config: str | None = None
    local: bool = False
    note: str = ""                          # why this place was chosen, for error messages
    fingerprint: str = ""                   # digest of a local folder's files (cache.files_digest)

    @classmethod
    def resolve(cls, name_or_path: str, spec: DatasetSpec | None) -> "Source":
        """The place to read ``name_or_path`` from; ``spec`` is its ``DATASETS`` entry (None for a
        folder or a Hub id the course does not know)."""
        if spec is not None:
            name = known_name(name_or_path)
            if spec.local is not None and spec.local.is_dir():
                return cls(name, str(spec.local), local=True)
            if not spec.hub_id:
                raise VanEduError(f"{name!r} is read from the folder {spec.local}, which is missing (expected "
                                  f"it built first: python data/build_{name}.py, which downloads the release)")
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
