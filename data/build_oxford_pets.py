"""Build ``data/oxford_pets/`` from the Oxford-IIIT Pet release, in the Hugging Face Hub's layout.

The course's GPU segmentation preset (``van-edu compare --preset segmentation_gpu``) reads real
photos with real masks: the Oxford-IIIT Pet Dataset (Parkhi, Vedaldi, Zisserman and Jawahar, "Cats
and Dogs", CVPR 2012; https://www.robots.ox.ac.uk/~vgg/data/pets/), 7,349 photos of 37 cat and dog
breeds, each with a trimap. Licence: Creative Commons Attribution-ShareAlike 4.0 International;
the copyright of the images stays with their owners. The release is two archives (about 790 MB and
19 MB), too large to bundle, so this script writes the folder that ``load_image_dataset("oxford_pets")``
reads, laid out like a Hub dataset repository::

    data/oxford_pets/
        README.md                                  dataset card: licence, YAML `configs`
        oxford_pets/train-00000-of-00001.parquet   the authors' trainval list (3,680 photos)
        oxford_pets/test-00000-of-00001.parquet    the authors' test list (3,669 photos)

Columns: ``image`` (the JPEG as released), ``mask`` (the trimap PNG as released: 1 pet, 2 background,
3 the border, "not classified"), ``label`` (the breed, a ClassLabel of 37), ``species`` (cat or dog)
and ``name`` (the file's stem). Photos that PIL cannot decode are skipped and counted.

Usage::

    python data/build_oxford_pets.py --download        # fetch the two archives into data/oxford_pets_release/
    python data/build_oxford_pets.py --source DIR       # DIR holds images/ and annotations/, or the .tar.gz files
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "oxford_pets"
DEFAULT_SOURCE = HERE / "oxford_pets_release"
CONFIG_NAME = "oxford_pets"
RELEASE = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
ARCHIVES = ("images.tar.gz", "annotations.tar.gz")
SPLIT_LISTS = {"train": "trainval.txt", "test": "test.txt"}   # the authors' split


def read_list(path: Path) -> list[tuple[str, int, int]]:
    """The authors' list file: one ``name class_id species breed_id`` line per photo, ``#`` comments.
    Returns (name, breed 0..36, species 0 cat / 1 dog)."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, class_id, species = line.split()[:3]
            rows.append((name, int(class_id) - 1, int(species) - 1))
    return rows


def breed_names(rows: list[tuple[str, int, int]]) -> list[str]:
    """The 37 breed names in class-id order, from the file names (``Abyssinian_100`` -> Abyssinian)."""
    names: dict[int, str] = {}
    for name, breed, _ in rows:
        names.setdefault(breed, name.rsplit("_", 1)[0])
    return [names[i] for i in sorted(names)]


def unpack(source: Path) -> Path:
    """The folder holding ``images/`` and ``annotations/``: ``source`` itself, or the archives in
    it extracted beside them."""
    if (source / "images").is_dir() and (source / "annotations").is_dir():
        return source
    for archive in ARCHIVES:
        path = source / archive
        if not path.is_file():
            raise SystemExit(f"{source} has neither images/ and annotations/ nor {archive} "
                             "(run with --download, or point --source at the release)")
        with tarfile.open(path) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}   # Python >= 3.12 or a patched 3.10/3.11
            tar.extractall(source, **safe)
    return source


def download(dest: Path) -> None:
    """Fetch the two archives of the release into ``dest`` (skipping those already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    for archive in ARCHIVES:
        if not (dest / archive).is_file():
            print(f"downloading {RELEASE}{archive} ...")
            urllib.request.urlretrieve(RELEASE + archive, dest / f"{archive}.part")
            (dest / f"{archive}.part").rename(dest / archive)


def features(breeds: list[str]):
    from datasets import ClassLabel, Features, Image, Value

    return Features({"image": Image(), "mask": Image(), "label": ClassLabel(names=breeds),
                     "species": ClassLabel(names=["cat", "dog"]), "name": Value("string")})


def build_split(root: Path, split: str, breeds: list[str], out_dir: Path) -> dict:
    """One parquet file of the split; returns its name, row count and the photos skipped."""
    from datasets import Dataset
    from PIL import Image

    columns = {"image": [], "mask": [], "label": [], "species": [], "name": []}
    skipped = []
    for name, breed, species in read_list(root / "annotations" / SPLIT_LISTS[split]):
        photo, trimap = root / "images" / f"{name}.jpg", root / "annotations" / "trimaps" / f"{name}.png"
        try:
            with Image.open(io.BytesIO(photo.read_bytes())) as check:
                check.convert("RGB")                           # a damaged file fails here, not in training
        except (OSError, ValueError):
            skipped.append(name)
            continue
        columns["image"].append({"bytes": photo.read_bytes(), "path": None})
        columns["mask"].append({"bytes": trimap.read_bytes(), "path": None})
        columns["label"].append(breed)
        columns["species"].append(species)
        columns["name"].append(name)
    path = out_dir / CONFIG_NAME / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=features(breeds)).to_parquet(str(path))
    return {"split": split, "rows": len(columns["name"]), "skipped": skipped}


CARD = """---
license: cc-by-sa-4.0
pretty_name: Oxford-IIIT Pet (photos and trimaps)
task_categories:
- image-segmentation
configs:
- config_name: {config}
  data_files:
  - split: train
    path: {config}/train-*
  - split: test
    path: {config}/test-*
  default: true
---
# Oxford-IIIT Pet, photos and trimaps

Built by `data/build_oxford_pets.py` from the release at https://www.robots.ox.ac.uk/~vgg/data/pets/
(O. M. Parkhi, A. Vedaldi, A. Zisserman, C. V. Jawahar, "Cats and Dogs", CVPR 2012). Licence:
Creative Commons Attribution-ShareAlike 4.0 International; the copyright of the images remains with
their original owners.

Splits: the authors' trainval list as `train` ({train} photos), their test list as `test` ({test}).
`mask` is the trimap as released: 1 pet, 2 background, 3 border (not classified).
"""


def build(source: Path, out_dir: Path) -> list[dict]:
    root = unpack(source)
    breeds = breed_names(read_list(root / "annotations" / "trainval.txt") + read_list(root / "annotations" / "test.txt"))
    results = [build_split(root, split, breeds, out_dir) for split in SPLIT_LISTS]
    counts = {r["split"]: r["rows"] for r in results}
    (out_dir / "README.md").write_text(CARD.format(config=CONFIG_NAME, **counts), encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with images/ and annotations/, or with the two .tar.gz archives")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--download", action="store_true", help="fetch the release into --source first")
    args = parser.parse_args(argv)
    if args.download:
        download(args.source)
    for result in build(args.source, args.out):
        print(f"{result['split']}: {result['rows']} photos written, {len(result['skipped'])} skipped "
              f"{result['skipped'][:5] if result['skipped'] else ''}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
