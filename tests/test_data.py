"""Tests of van_edu.data: the bundled Fashion-MNIST, loaders on Hub-like local folders, errors,
augmentation, batches and subsets. Offline, CPU; tiny fixtures are built in tmp dirs."""
from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from van_edu import data as D
from van_edu.errors import VanEduError

REPO = Path(__file__).resolve().parents[1]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def tensor_cache(tmp_path_factory) -> Path:
    """One fresh van_edu tensor cache for this module: the first bundled load really decodes."""
    return tmp_path_factory.mktemp("van_edu_cache")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tensor_cache):
    """No network: the Hub is offline and internet sockets refuse to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("VAN_EDU_CACHE", str(tensor_cache))
    real_connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    """Keep the Arrow files datasets makes for tmp fixtures out of the user's cache."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


# ---------------------------------------------------------------------------------------------
# fixtures: tiny datasets laid out like the Hub repositories

def _rgb_images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_card(folder: Path, config: str, splits: list[str]) -> None:
    files = "".join(f"  - split: {s}\n    path: {config}/{s}-*\n" for s in splits)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n"
                                      f"{files}  default: true\n---\n# tiny test set\n")


def _write_parquet(folder: Path, config: str, split: str, columns: dict, features) -> None:
    import datasets

    dataset = datasets.Dataset.from_dict(columns, features=features)
    path = folder / config / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def cifar_like(tmp_path, hf_cache):
    """A folder like uoft-cs/cifar10: plain_text/{train,test}-*.parquet with columns img, label."""
    import datasets
    from PIL import Image

    folder = tmp_path / "cifar_like"
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR_NAMES)})
    arrays = {}
    for split, n, seed in [("train", 40, 0), ("test", 12, 1)]:
        images = _rgb_images(n, 32, seed)
        labels = [i % 10 for i in range(n)]
        _write_parquet(folder, "plain_text", split,
                       {"img": [Image.fromarray(a) for a in images], "label": labels}, features)
        arrays[split] = (images, labels)
    _write_card(folder, "plain_text", ["train", "test"])
    return folder, arrays


@pytest.fixture
def image_folder(tmp_path, hf_cache):
    """An imagefolder: train/ and validation/ with class subfolders of PNGs in mixed modes and sizes."""
    from PIL import Image

    root = tmp_path / "pets"
    rng = np.random.default_rng(2)
    modes = ["RGB", "L", "P", "RGBA"]
    for split in ["train", "validation"]:
        for c, name in enumerate(["cat", "dog", "fish"]):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                size = (20 + 4 * c, 24)  # (width, height): differs by class
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert(modes[i])
                image.save(root / split / name / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------
# bundled Fashion-MNIST

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


@pytest.mark.skipif(not DEBIAN_SOURCE.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_bundled_images_equal_zalandos_idx_files():
    import datasets

    sys.path.insert(0, str(REPO / "data"))
    try:
        import build_fashion_mnist as build
    finally:
        sys.path.pop(0)
    images = build.read_idx_images(DEBIAN_SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = build.read_idx_labels(DEBIAN_SOURCE / "t10k-labels-idx1-ubyte.gz")
    test = D.load_image_dataset("fashion_mnist", "test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(images.copy()))
    assert torch.equal(test.labels, torch.from_numpy(labels.astype(np.int64)))
    # the stored PNG bytes are what the build script writes (deterministic encoding)
    parquet = REPO / "data" / "fashion_mnist" / "fashion_mnist" / "test-00000-of-00001.parquet"
    stored = datasets.Dataset.from_parquet(str(parquet)).cast_column("image", datasets.Image(decode=False))
    assert [stored[i]["image"]["bytes"] for i in range(20)] == [build.encode_png(im) for im in images[:20]]


def test_build_script_says_how_to_get_missing_sources(tmp_path):
    sys.path.insert(0, str(REPO / "data"))
    try:
        import build_fashion_mnist as build
    finally:
        sys.path.pop(0)
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


def test_imagefolder_mixed_modes_sizes_and_validation_fallback(image_folder):
    data = D.load_image_dataset(str(image_folder), "train", image_size=16)
    assert data.images.shape == (12, 3, 16, 16)          # grey, palette and RGBA all become RGB
    assert data.classes == ["cat", "dog", "fish"]
    assert sorted(data.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    held_out = D.load_image_dataset(str(image_folder), "test", image_size=16)  # -> "validation"
    assert len(held_out) == 12
    with pytest.raises(VanEduError, match=r"different sizes.*image_size"):
        D.load_image_dataset(str(image_folder), "train")


def test_greyscale_folder_stays_one_channel(tmp_path, hf_cache):
    from PIL import Image

    for name in ["a", "b"]:
        (tmp_path / "g" / "train" / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "g" / "train" / name / "0.png")
    data = D.load_image_dataset(str(tmp_path / "g"))
    assert data.images.shape == (2, 1, 8, 8) and data.images.unique().tolist() == [7]


def test_samples_equals_subset_of_full_load(cifar_like, monkeypatch):
    folder, _ = cifar_like
    monkeypatch.setenv("VAN_EDU_CACHE", "off")
    full = D.load_image_dataset(str(folder), "train")
    for samples in (7, 0.25):
        part = D.load_image_dataset(str(folder), "train", samples=samples, seed=5)
        expected = full.subset(samples, seed=5)
        assert torch.equal(part.images, expected.images) and torch.equal(part.labels, expected.labels)


def test_tensor_cache_is_used_and_invalidated(cifar_like, monkeypatch, tmp_path):
    folder, _ = cifar_like
    monkeypatch.setenv("VAN_EDU_CACHE", str(tmp_path / "cache"))
    decoded = []
    real = D._decode_images
    monkeypatch.setattr(D, "_decode_images", lambda *a, **k: decoded.append(1) or real(*a, **k))
    first = D.load_image_dataset(str(folder), "test")
    second = D.load_image_dataset(str(folder), "test")
    assert len(decoded) == 1 and torch.equal(first.images, second.images)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # a changed source file (new size/mtime) is decoded again, not served stale
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR_NAMES)})
    new = _rgb_images(3, 32, seed=9)
    _write_parquet(folder, "plain_text", "test",
                   {"img": [Image.fromarray(a) for a in new], "label": [1, 2, 3]}, features)
    third = D.load_image_dataset(str(folder), "test")
    assert len(decoded) == 2 and len(third) == 3 and third.labels.tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# errors

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


def test_missing_image_column_names_the_columns(tmp_path, hf_cache):
    import datasets

    folder = tmp_path / "no_image"
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    _write_parquet(folder, "default", "train", {"text": ["x", "y"], "label": [0, 1]}, features)
    _write_card(folder, "default", ["train"])
    with pytest.raises(VanEduError, match=r"no image column.*text.*label"):
        D.load_image_dataset(str(folder))


def test_missing_label_column_names_the_columns(tmp_path, hf_cache):
    import datasets
    from PIL import Image

    folder = tmp_path / "no_label"
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    images = [Image.fromarray(a) for a in _rgb_images(2, 8, 0)]
    _write_parquet(folder, "default", "train", {"image": images, "caption": ["p", "q"]}, features)
    _write_card(folder, "default", ["train"])
    with pytest.raises(VanEduError, match=r"no label column.*image.*caption"):
        D.load_image_dataset(str(folder))


def test_unknown_split_names_the_splits(cifar_like):
    folder, _ = cifar_like
    with pytest.raises(VanEduError, match=r"no split 'validation'.*train, test"):
        D.load_image_dataset(str(folder), "validation")


def test_bad_arguments():
    data = _indexed_data(10)
    for bad in (0, -3, 0.0, 1.5, True, "3"):
        with pytest.raises(VanEduError):
            data.subset(bad)
    with pytest.raises(VanEduError, match="divisible"):
        D.batches(data, 6, shuffle=False, world_size=4)
    with pytest.raises(VanEduError, match="uint8"):
        D.normalize(torch.zeros(1, 1, 2, 2))


# ---------------------------------------------------------------------------------------------
# augmentation

def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(n=16, c=3, size=12) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=_generator(123), dtype=torch.uint8)


@pytest.mark.parametrize("preset", sorted(D.AUGMENT_PRESETS))
def test_augment_keeps_shape_dtype_and_is_seeded(preset):
    config = D.AUGMENT_PRESETS[preset]
    x = _random_batch()
    a = D.augment(x, config, _generator(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and a.device == x.device
    assert torch.equal(a, D.augment(x, config, _generator(0)))
    if preset == "none":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a, D.augment(x, config, _generator(1)))


def test_crop_shifts_content_within_the_padding():
    pad, n = 2, 64
    x = torch.zeros(n, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255                                    # one bright pixel in the centre
    out = D.augment(x, D.AugmentConfig(crop_padding=pad), _generator(0))
    assert (out == 255).flatten(1).sum(1).eq(1).all()      # the pixel survives, moved
    where = (out[:, 0] == 255).flatten(1).int().argmax(1)
    rows, cols = where // 9 - 4, where % 9 - 4
    assert rows.abs().max() <= pad and cols.abs().max() <= pad
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # many different shifts occur
    full = torch.full((n, 1, 9, 9), 255, dtype=torch.uint8)
    shifted = D.augment(full, D.AugmentConfig(crop_padding=pad), _generator(0))
    assert (shifted == 0).any() and (shifted[:, :, pad:-pad, pad:-pad] == 255).all()  # zero padding enters


def test_flip_flips():
    x = torch.zeros(32, 1, 4, 6, dtype=torch.uint8)
    x[..., :2] = 255                                       # left third bright
    out = D.augment(x, D.AugmentConfig(flip=True), _generator(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped ^ same).all() and flipped.any() and same.any()


def test_random_erasing_fills_a_box():
    x = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    out = D.augment(x, D.AugmentConfig(erase_prob=1.0), _generator(0))
    for image in out:
        box = (image == D.ERASE_VALUE).all(0)              # [H, W], same box in every channel
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert box.sum() == len(rows) * len(cols) > 0      # a filled rectangle
    assert torch.equal(D.augment(x, D.AugmentConfig(erase_prob=0.0), _generator(0)), x)


# ---------------------------------------------------------------------------------------------
# batches and subsets

def _indexed_data(n: int) -> D.ImageData:
    """Image i is filled with i (mod 256) and has label i, so batches reveal which rows they hold."""
    images = (torch.arange(n) % 256).to(torch.uint8)[:, None, None, None].expand(n, 1, 6, 6).clone()
    return D.ImageData(images, torch.arange(n), [str(i) for i in range(n)], "indexed")


def _collect(data, **kwargs):
    return [(x.clone(), y.clone()) for x, y in D.batches(data, **kwargs)]


def test_batches_cover_the_data_once_normalised():
    data = _indexed_data(50)
    out = _collect(data, batch_size=16, shuffle=True, seed=3)
    assert [len(y) for _, y in out] == [16, 16, 16, 2]
    assert sorted(torch.cat([y for _, y in out]).tolist()) == list(range(50))
    x, y = out[0]
    assert x.dtype == torch.float32 and x.shape == (16, 1, 6, 6)
    assert torch.allclose(x[:, 0, 0, 0], y.float() / 127.5 - 1)
    assert [len(y) for _, y in _collect(data, batch_size=16, shuffle=True, drop_last=True)] == [16] * 3
    assert torch.equal(torch.cat([y for _, y in _collect(data, batch_size=16, shuffle=False)]),
                       torch.arange(50))


def test_batches_are_a_function_of_seed_and_epoch():
    data = _indexed_data(40)
    kwargs = dict(batch_size=8, shuffle=True, augment=D.AUGMENT_PRESETS["gpu"])
    a = _collect(data, seed=1, epoch=2, **kwargs)
    b = _collect(data, seed=1, epoch=2, **kwargs)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    for other in (dict(seed=1, epoch=3), dict(seed=2, epoch=2)):
        c = _collect(data, **other, **kwargs)
        assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


@pytest.mark.parametrize("n", [64, 70, 65])
def test_rank_shards_union_equals_single_process_batch(n):
    data, world = _indexed_data(n), 4
    kwargs = dict(batch_size=16, shuffle=True, seed=7, epoch=1, augment=D.AUGMENT_PRESETS["gpu"])
    single = _collect(data, **kwargs)
    shards = [_collect(data, rank=r, world_size=world, **kwargs) for r in range(world)]
    assert {len(s) for s in shards} == {len(single)}      # every rank yields the same number of batches
    for b, per_rank in enumerate(zip(*shards)):
        sizes = [len(y) for _, y in per_rank]
        assert max(sizes) - min(sizes) <= 1
        assert torch.equal(torch.cat([x for x, _ in per_rank]), single[b][0])
        assert torch.equal(torch.cat([y for _, y in per_rank]), single[b][1])
    if n == 65:                                            # last global batch of 1: three empty shards
        assert [len(s[-1][1]) for s in shards] == [1, 0, 0, 0]
        assert shards[1][-1][0].shape == (0, 1, 6, 6)


def test_subset_by_count_and_fraction_is_seeded():
    data = _indexed_data(100)
    a, b, c = data.subset(10, seed=0), data.subset(10, seed=0), data.subset(10, seed=1)
    assert len(a) == 10 and torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert torch.equal(a.labels, a.labels.sort().values)   # original order kept
    assert torch.equal(a.images[:, 0, 0, 0].long(), a.labels)  # images travel with their labels
    quarter = data.subset(0.25, seed=4)
    assert len(quarter) == 25 and torch.equal(quarter.labels, data.subset(0.25, seed=4).labels)
    assert len(data.subset(1.0)) == 100 and len(data.subset(500)) == 100


def test_presets_by_name():
    x = _random_batch()
    by_name = D.augment(x, "cpu", _generator(0))
    assert torch.equal(by_name, D.augment(x, D.AUGMENT_PRESETS["cpu"], _generator(0)))
    data = _indexed_data(20)
    a = _collect(data, batch_size=5, shuffle=True, augment="gpu")
    b = _collect(data, batch_size=5, shuffle=True, augment=D.AUGMENT_PRESETS["gpu"])
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    with pytest.raises(VanEduError, match="none, cpu, gpu"):
        D.batches(data, 5, shuffle=True, augment="strong")


def test_script_only_hub_repo_is_read_from_the_parquet_export(monkeypatch):
    """frgfm/imagenette ships a loading script, which datasets>=4 refuses: read refs/convert/parquet."""
    import datasets

    calls = []

    def fake_builder(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        if len(calls) == 1:
            raise RuntimeError("Dataset scripts are no longer supported, but found imagenette.py")
        return "builder"

    monkeypatch.setattr(datasets, "load_dataset_builder", fake_builder)
    source = D._Source.resolve("imagenette", D.DATASETS["imagenette"])
    assert D._builder(source, offline=False) == "builder"
    assert calls[1] == ("frgfm/imagenette", None, {"revision": "refs/convert/parquet", "data_dir": "160px"})
    calls.clear()
    with pytest.raises(VanEduError, match="imagenette"):               # offline: no second try
        D._builder(source, offline=True)
    assert len(calls) == 1


def test_hub_reachable_honours_offline_variables_and_a_silent_host(monkeypatch):
    """Notebooks skip their download cells on hub_reachable() == False: offline variables win
    without touching the network, and a host that refuses the connection counts as unreachable."""
    D._hub_answers.cache_clear()
    assert D.hub_reachable() is False                     # HF_HUB_OFFLINE=1 from the fixture
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    attempts = []

    def refuse(address, timeout=None):
        attempts.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert D.hub_reachable() is False
    assert attempts and attempts[0][0][1] == 443 and attempts[0][1] == 3
    D._hub_answers.cache_clear()

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connection())
    assert D.hub_reachable() is True
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert D.hub_reachable() is False
    D._hub_answers.cache_clear()
