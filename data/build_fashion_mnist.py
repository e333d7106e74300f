"""Build ``data/fashion_mnist/`` from Zalando's original IDX files, in the Hugging Face Hub's layout.

The result is a folder that ``datasets.load_dataset("data/fashion_mnist")`` reads exactly like the
Hub repository ``zalando-datasets/fashion_mnist``::

    data/fashion_mnist/
        README.md                                   dataset card; YAML `dataset_info` and `configs`
        fashion_mnist/train-00000-of-00001.parquet  60,000 rows: image (PNG), label (ClassLabel)
        fashion_mnist/test-00000-of-00001.parquet   10,000 rows

Why build it ourselves: the course must run offline on a CPU, and the Hub is not always reachable.
The IDX files come from the Debian package ``dataset-fashion-mnist`` (``apt-get install
dataset-fashion-mnist``), a byte-for-byte copy of Zalando's release.

The build is deterministic: PNGs are encoded with fixed settings, rows keep the IDX order and the
parquet writer stores no timestamps, so a rerun with the same library versions gives the same bytes
(``--check`` verifies that against the committed files).

Usage::

    python data/build_fashion_mnist.py [--source DIR] [--out DIR] [--check]
    python data/build_fashion_mnist.py --excerpt data/zalando_excerpt [--count 200]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).resolve().parent / "fashion_mnist"
CONFIG_NAME = "fashion_mnist"  # the Hub repository's one config, also its folder name

# Zalando's names, in label order (the Hub's card spells the first "T - shirt / top").
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# split -> (images file, labels file, number of examples)
SOURCES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx_images(path: Path) -> np.ndarray:
    """IDX3 file (gzip) -> uint8 array [N, 28, 28]; checks the magic number and the size."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IDX_IMAGES_MAGIC or len(raw) != 16 + n * rows * cols:
        raise SystemExit(f"{path} is not an IDX image file (magic {magic}, {len(raw)} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """IDX1 file (gzip) -> uint8 array [N]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic != IDX_LABELS_MAGIC or len(raw) != 8 + n:
        raise SystemExit(f"{path} is not an IDX label file (magic {magic}, {len(raw)} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


def write_excerpt(source: Path, out: Path, count: int) -> list[Path]:
    """The first ``count`` images and labels of each split as IDX .gz files in ``out`` (the header's
    count set to ``count``, gzip without a timestamp, so reruns give equal bytes): a small piece of
    Zalando's files that tests/test_data.py checks the bundled data against where the full files
    are not installed."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for images_name, labels_name, _ in SOURCES.values():
        images, labels = read_idx_images(source / images_name)[:count], read_idx_labels(source / labels_name)[:count]
        for name, header, body in ((images_name, struct.pack(">IIII", IDX_IMAGES_MAGIC, count, 28, 28), images),
                                   (labels_name, struct.pack(">II", IDX_LABELS_MAGIC, count), labels)):
            path = out / name.replace("-ubyte.gz", f"-ubyte-first{count}.gz")
            with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(header + body.tobytes())
            written.append(path)
    return written


def encode_png(image: np.ndarray) -> bytes:
    """One greyscale image [28, 28] -> PNG bytes (mode L), fixed settings so reruns give equal bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def features():
    """The Hub's features: ``image`` (datasets Image: struct of bytes/path) and ``label`` (ClassLabel)."""
    import datasets

    return datasets.Features({"image": datasets.Image(),
                              "label": datasets.ClassLabel(names=CLASS_NAMES)})


def build_split(source: Path, split: str, out_dir: Path) -> dict:
    """Write one split as ``<out>/fashion_mnist/<split>-00000-of-00001.parquet``; return its card entry."""
    import datasets

    datasets.disable_progress_bars()
    images_file, labels_file, expected = SOURCES[split]
    images = read_idx_images(source / images_file)
    labels = read_idx_labels(source / labels_file)
    if len(images) != expected or len(labels) != expected:
        raise SystemExit(f"{split}: expected {expected} images and labels, "
                         f"found {len(images)} and {len(labels)}")
    rows = {"image": [{"bytes": encode_png(im), "path": None} for im in images],
            "label": labels.astype(np.int64).tolist()}
    dataset = datasets.Dataset.from_dict(rows, features=features())
    path = out_dir / CONFIG_NAME / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return {"name": split, "num_bytes": int(dataset.data.nbytes), "num_examples": len(dataset),
            "parquet_bytes": path.stat().st_size}


CARD_TEMPLATE = """\
---
license: mit
task_categories:
- image-classification
language:
- en
pretty_name: Fashion-MNIST
size_categories:
- 10K<n<100K
dataset_info:
  config_name: fashion_mnist
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
{names}
  splits:
{splits}
  download_size: {download_size}
  dataset_size: {dataset_size}
configs:
- config_name: fashion_mnist
  data_files:
  - split: train
    path: fashion_mnist/train-*
  - split: test
    path: fashion_mnist/test-*
  default: true
---

# Fashion-MNIST (bundled copy)

Zalando's article images: 60,000 training and 10,000 test examples, 28x28 greyscale, 10 classes.
Laid out like the Hugging Face Hub repository `zalando-datasets/fashion_mnist` (same columns, same
features, same split names), so `datasets.load_dataset("data/fashion_mnist")` reads it offline.

- `image`: the 28x28 greyscale image, PNG-encoded (mode `L`).
- `label`: 0-9, a ClassLabel with the names {name_list}.

Rows keep the order of Zalando's IDX files. Built by `data/build_fashion_mnist.py` from the files of
the Debian package `dataset-fashion-mnist`; see `data/README.md` for provenance and checksums.

Licence: MIT, Copyright (c) 2017 Zalando SE (see `data/LICENSE-fashion-mnist`).

Citation: Han Xiao, Kashif Rasul, Roland Vollgraf. Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms. arXiv:1708.07747, 2017.
"""


def write_card(out_dir: Path, splits: list[dict]) -> None:
    """Write the dataset card whose YAML header tells ``datasets`` the features and the splits."""
    names = "\n".join(f"          '{i}': {name}" for i, name in enumerate(CLASS_NAMES))
    split_yaml = "\n".join(f"  - name: {s['name']}\n    num_bytes: {s['num_bytes']}\n"
                           f"    num_examples: {s['num_examples']}" for s in splits)
    card = CARD_TEMPLATE.format(
        names=names, splits=split_yaml,
        download_size=sum(s["parquet_bytes"] for s in splits),
        dataset_size=sum(s["num_bytes"] for s in splits),
        name_list=", ".join(CLASS_NAMES))
    (out_dir / "README.md").write_text(card, encoding="utf-8")


def check_sources(source: Path) -> None:
    """Stop with a clear message when the IDX files are missing."""
    wanted = [name for files in SOURCES.values() for name in files[:2]]
    missing = [name for name in wanted if not (source / name).is_file()]
    if missing:
        raise SystemExit(
            f"Fashion-MNIST source files missing in {source}: {', '.join(missing)}.\n"
            "Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass\n"
            "--source DIR pointing at a folder with Zalando's four *-ubyte.gz files.")


def build(source: Path, out_dir: Path) -> list[dict]:
    """Build every split and the card into ``out_dir``; return the split entries."""
    check_sources(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [build_split(source, split, out_dir) for split in SOURCES]
    write_card(out_dir, splits)
    return splits


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a folder, by relative path."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_SOURCE,
                        help=f"folder with Zalando's IDX .gz files (default {DEBIAN_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--excerpt", type=Path, metavar="DIR",
                        help="write the first --count images and labels of each split to DIR as IDX .gz; nothing else")
    parser.add_argument("--count", type=int, default=200, help="images per split of --excerpt (default 200)")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary folder and compare its bytes with --out; write nothing")
    args = parser.parse_args(argv)

    for name in sorted(n for files in SOURCES.values() for n in files[:2]):
        if (args.source / name).is_file():
            print(f"input  {sha256(args.source / name)}  {name}")
    if args.excerpt:
        for path in write_excerpt(args.source, args.excerpt, args.count):
            print(f"excerpt {sha256(path)}  {path.name}")
        return 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build(args.source, Path(tmp))
            fresh, committed = folder_digest(Path(tmp)), folder_digest(args.out)
        same = fresh == committed
        print("identical to" if same else "DIFFERS from", args.out)
        return 0 if same else 1
    splits = build(args.source, args.out)
    for s in splits:
        print(f"{s['name']:5s} {s['num_examples']:6d} examples  {s['parquet_bytes'] / 1e6:6.2f} MB")
    for rel, digest in folder_digest(args.out).items():
        print(f"output {digest}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
