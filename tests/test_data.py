"""Tests of van_edu.data, the front door: the bundled Fashion-MNIST, loading Hub-like local
folders, and the errors of load_image_dataset. Offline, CPU; tiny fixtures are built in tmp dirs."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CIFAR_NAMES, cifar_like, hf_cache, offline, tensor_cache  # noqa: F401 (fixtures)

from van_edu import data as D
from van_edu.errors import VanEduError

REPO = Path(__file__).resolve().parents[1]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------
# bundled Fashion-MNIST

@pytest.mark.slow
def test_bundled_fashion_mnist_loads_full_splits():
    train = D.load_image_dataset("fashion_mnist", "train")
    test = D.load_image_dataset("fashion_mnist", "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    for split in (train, test):
        assert split.images.shape[1:] == (1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        assert (split.in_chans, split.image_size, split.num_classes) == (1, 28, 10)
        assert split.classes == FASHION_CLASSES
        assert torch.equal(torch.bincount(split.labels), torch.full((10,), len(split) // 10))
    # second load comes from the tensor cache and is identical
    again = D.load_image_dataset("fashion_mnist", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_bundled_folder_has_the_hub_features_and_layout():
    import datasets

    folder = REPO / "data" / "fashion_mnist"
    assert sorted(p.name for p in (folder / "fashion_mnist").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    builder = datasets.load_dataset_builder(str(folder))
    assert builder.info.features == datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_CLASSES)})
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 60_000, "test": 10_000}
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 40e6


def test_hub_id_of_a_bundled_dataset_uses_the_bundled_copy():
    data = D.load_image_dataset("zalando-datasets/fashion_mnist", "test", samples=50, seed=1)
    assert data.name == "fashion_mnist" and len(data) == 50 and data.classes == FASHION_CLASSES


def _build_script():
    sys.path.insert(0, str(REPO / "data"))
    try:
        import build_fashion_mnist as build
    finally:
        sys.path.pop(0)
    return build


EXCERPT = REPO / "data" / "zalando_excerpt"


def _first_rows(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images [N, 28, 28] and labels of a bundled split, decoded from the parquet
    file directly (not through van_edu), so the check reads what is stored."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    path = REPO / "data" / "fashion_mnist" / "fashion_mnist" / f"{split}-00000-of-00001.parquet"
    table = pq.ParquetFile(path).read_row_group(0).slice(0, count).to_pylist()
    images = np.stack([np.asarray(Image.open(io.BytesIO(row["image"]["bytes"]))) for row in table])
    return images, np.array([row["label"] for row in table])


@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_bundled_rows_equal_the_committed_excerpt_of_zalandos_idx_files(split, prefix):
    """Runs everywhere, offline: the first 200 rows of each bundled split against the first 200 of
    Zalando's IDX files (data/zalando_excerpt/, cut from the Debian package's files)."""
    build = _build_script()
    images = build.read_idx_images(EXCERPT / f"{prefix}-images-idx3-ubyte-first200.gz")
    labels = build.read_idx_labels(EXCERPT / f"{prefix}-labels-idx1-ubyte-first200.gz")
    assert images.shape == (200, 28, 28) and labels.shape == (200,)
    assert len(set(labels.tolist())) == 10                  # not a degenerate piece: every class
    stored_images, stored_labels = _first_rows(split, 200)
    np.testing.assert_array_equal(stored_images, images)
    np.testing.assert_array_equal(stored_labels, labels)
    if split == "test":                                      # and what van_edu returns for them
        bundled = D.load_image_dataset("fashion_mnist", split)
        assert torch.equal(bundled.images[:200, 0], torch.from_numpy(images.copy()))
        assert torch.equal(bundled.labels[:200], torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.skipif(not DEBIAN_SOURCE.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_bundled_images_equal_zalandos_idx_files(tmp_path):
    import datasets

    build = _build_script()
    images = build.read_idx_images(DEBIAN_SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = build.read_idx_labels(DEBIAN_SOURCE / "t10k-labels-idx1-ubyte.gz")
    test = D.load_image_dataset("fashion_mnist", "test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(images.copy()))
    assert torch.equal(test.labels, torch.from_numpy(labels.astype(np.int64)))
    # the stored PNG bytes are what the build script writes (deterministic encoding)
    parquet = REPO / "data" / "fashion_mnist" / "fashion_mnist" / "test-00000-of-00001.parquet"
    stored = datasets.Dataset.from_parquet(str(parquet)).cast_column("image", datasets.Image(decode=False))
    assert [stored[i]["image"]["bytes"] for i in range(20)] == [build.encode_png(im) for im in images[:20]]
    # the committed excerpt is the start of these files, cut as its README says
    build.write_excerpt(DEBIAN_SOURCE, tmp_path, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in EXCERPT.glob("*.gz"))
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (EXCERPT / path.name).read_bytes(), path.name


def test_build_script_says_how_to_get_missing_sources(tmp_path):
    build = _build_script()
    with pytest.raises(SystemExit) as info:
        build.main(["--source", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# other sources: Hub-layout parquet folder, imagefolder

def test_cifar_like_parquet_folder(cifar_like):
    folder, arrays = cifar_like
    train = D.load_image_dataset(str(folder), "train")
    test = D.load_image_dataset(str(folder), "test")
    assert train.images.shape == (40, 3, 32, 32) and test.images.shape == (12, 3, 32, 32)
    assert train.classes == CIFAR_NAMES
    images, labels = arrays["train"]
    assert torch.equal(train.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert train.labels.tolist() == labels


def test_resize_and_device(cifar_like):
    folder, _ = cifar_like
    data = D.load_image_dataset(str(folder), "test", image_size=20, device="cpu")
    assert data.images.shape == (12, 3, 20, 20) and data.images.device.type == "cpu"


def test_samples_equals_subset_of_full_load(cifar_like, monkeypatch):
    folder, _ = cifar_like
    monkeypatch.setenv("VAN_EDU_CACHE", "off")
    full = D.load_image_dataset(str(folder), "train")
    for samples in (7, 0.25):
        part = D.load_image_dataset(str(folder), "train", samples=samples, seed=5)
        expected = full.subset(samples, seed=5)
        assert torch.equal(part.images, expected.images) and torch.equal(part.labels, expected.labels)


# ---------------------------------------------------------------------------------------------
# errors

def test_a_count_above_the_split_is_an_error_from_the_cache_and_from_decoding(cifar_like, monkeypatch):
    folder, _ = cifar_like
    for cache in ("off", str(folder.parent / "cache")):   # decoding, then (second pass) the cache
        monkeypatch.setenv("VAN_EDU_CACHE", cache)
        D.load_image_dataset(str(folder), "train")
        with pytest.raises(VanEduError, match=r"asked for 41 samples of the 'train' split of .*, which has 40"):
            D.load_image_dataset(str(folder), "train", samples=41)
    assert len(D.load_image_dataset(str(folder), "train", samples=40)) == 40


def test_one_class_is_not_a_classification_data_set(tmp_path, hf_cache):  # noqa: F811 (fixture)
    import datasets
    from data_fixtures import rgb_images, write_card, write_parquet
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat"])})
    for split in ("train", "test"):
        write_parquet(tmp_path / "cats", "default", split,
                      {"img": [Image.fromarray(a) for a in rgb_images(4, 8, 0)], "label": [0] * 4}, features)
    write_card(tmp_path / "cats", "default", ["train", "test"])
    with pytest.raises(VanEduError, match=r"has one class \('cat'\); a classifier needs at least two classes"):
        D.load_image_dataset(str(tmp_path / "cats"), "train")


def test_unknown_name_offline_names_the_choices():
    with pytest.raises(VanEduError) as info:
        D.load_image_dataset("no_such_dataset_xyz")
    message = str(info.value)
    for expected in ["no_such_dataset_xyz", "fashion_mnist", "cifar10", "imagenette", "offline"]:
        assert expected in message


def test_missing_bundled_folder_falls_back_to_the_hub(monkeypatch, tmp_path):
    spec = dataclasses.replace(D.DATASETS["fashion_mnist"], local=tmp_path / "missing")
    monkeypatch.setitem(D.DATASETS, "fashion_mnist", spec)
    with pytest.raises(VanEduError, match=r"zalando-datasets/fashion_mnist.*offline.*bundled folder"):
        D.load_image_dataset("fashion_mnist")


def test_imagenette_shows_the_names_people_know(monkeypatch, tmp_path, hf_cache):  # noqa: F811 (fixture)
    """A folder laid out like frgfm/imagenette (160px config, train/validation, WordNet-id labels)
    loads as "imagenette" with tench, English springer, ... in the stored order."""
    import datasets
    from data_fixtures import rgb_images, write_card, write_parquet
    from PIL import Image

    wnids = ["n03888605", "n01440764", "n02102040", "n02979186", "n03000684",
             "n03028079", "n03394916", "n03417042", "n03425413", "n03445777"]  # not sorted on purpose
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=wnids)})
    folder = tmp_path / "imagenette_like"
    for split, seed in [("train", 0), ("validation", 1)]:
        images = [Image.fromarray(a) for a in rgb_images(10, 24, seed)]
        write_parquet(folder, "160px", split, {"image": images, "label": list(range(10))}, features)
    write_card(folder, "160px", ["train", "validation"])
    monkeypatch.setitem(D.DATASETS, "imagenette", dataclasses.replace(D.DATASETS["imagenette"], local=folder))
    data = D.load_image_dataset("imagenette", "test", image_size=16)  # no test split: validation
    assert data.classes == ["parachute", "tench", "English springer", "cassette player", "chain saw",
                            "church", "French horn", "garbage truck", "gas pump", "golf ball"]
    assert data.images.shape == (10, 3, 16, 16)
    # the same folder read by its path, not as "imagenette", keeps the stored WordNet ids
    assert D.load_image_dataset(str(folder), "train").classes == wnids
