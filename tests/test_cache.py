"""Tests of van_edu.cache: a decoded split is served from the cache, decoded again when a source
file changes, and written atomically. Offline, CPU; tiny fixtures are built in tmp dirs."""
from __future__ import annotations

import pytest
import torch
from data_fixtures import CIFAR_NAMES, cifar_like, hf_cache, offline, rgb_images, tensor_cache, write_parquet  # noqa: F401 (fixtures)

from van_edu import cache, hub
from van_edu import data as D
from van_edu.images import ImageData
from van_edu.sources import Source


def test_tensor_cache_is_used_and_invalidated(cifar_like, monkeypatch, tmp_path):
    folder, _ = cifar_like
    monkeypatch.setenv("VAN_EDU_CACHE", str(tmp_path / "cache"))
    decoded = []
    real = hub.decode_images
    monkeypatch.setattr(hub, "decode_images", lambda *a, **k: decoded.append(1) or real(*a, **k))
    first = D.load_image_dataset(str(folder), "test")
    second = D.load_image_dataset(str(folder), "test")
    assert len(decoded) == 1 and torch.equal(first.images, second.images)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    # a changed source file (new size/mtime) is decoded again, not served stale
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR_NAMES)})
    new = rgb_images(3, 32, seed=9)
    write_parquet(folder, "plain_text", "test",
                  {"img": [Image.fromarray(a) for a in new], "label": [1, 2, 3]}, features)
    third = D.load_image_dataset(str(folder), "test")
    assert len(decoded) == 2 and len(third) == 3 and third.labels.tolist() == [1, 2, 3]


def _tiny_split() -> ImageData:
    return ImageData(torch.arange(12, dtype=torch.uint8).view(3, 1, 2, 2), torch.tensor([0, 1, 0]), ["a", "b"], "t")


def test_a_written_split_reads_back_under_its_key_only(monkeypatch, tmp_path):
    monkeypatch.setenv("VAN_EDU_CACHE", str(tmp_path / "cache"))
    source = Source("t", str(tmp_path / "t"), local=True)
    store = cache.TensorCache(source, "train", None)
    assert store.read() is None                           # no key yet: nothing is served
    store.set_key("digest-1")
    store.write(_tiny_split())
    back = store.read()
    assert torch.equal(back.images, _tiny_split().images) and back.classes == ["a", "b"]
    other = cache.TensorCache(source, "train", None)
    other.set_key("digest-2")                             # the source files changed
    assert other.read() is None
    monkeypatch.setenv("VAN_EDU_CACHE", "off")
    assert cache.TensorCache(source, "train", None).file is None


def test_a_failed_write_leaves_no_file_and_warns(monkeypatch, tmp_path):
    """The cache file is written with fileio.atomic_write: a write that fails half-way leaves
    neither a torn cache file nor a temporary one behind, and only warns."""
    monkeypatch.setenv("VAN_EDU_CACHE", str(tmp_path / "cache"))
    store = cache.TensorCache(Source("t", str(tmp_path / "t"), local=True), "train", None)
    store.set_key("digest")

    def torn_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.warns(UserWarning, match="could not write the decoded-data cache.*disk full"):
        store.write(_tiny_split())
    assert list((tmp_path / "cache").iterdir()) == []
