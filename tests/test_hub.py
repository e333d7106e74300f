"""Tests of van_edu.hub: opening splits (the validation fallback, unknown splits, script-only Hub
repositories), finding the image and label columns, decoding images of any mode and size, and
hub_reachable. Offline, CPU; tiny fixtures are built in tmp dirs."""
from __future__ import annotations

import socket

import numpy as np
import pytest
from data_fixtures import (  # noqa: F401 (fixtures)
    cifar_like,
    hf_cache,
    image_folder,
    offline,
    rgb_images,
    tensor_cache,
    write_card,
    write_parquet,
)

from van_edu import data as D
from van_edu import hub, sources
from van_edu.errors import VanEduError

# ---------------------------------------------------------------------------------------------
# decoding: image modes and sizes

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


# ---------------------------------------------------------------------------------------------
# columns and splits

def test_missing_image_column_names_the_columns(tmp_path, hf_cache):
    import datasets

    folder = tmp_path / "no_image"
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    write_parquet(folder, "default", "train", {"text": ["x", "y"], "label": [0, 1]}, features)
    write_card(folder, "default", ["train"])
    with pytest.raises(VanEduError, match=r"no image column.*text.*label"):
        D.load_image_dataset(str(folder))


def test_missing_label_column_names_the_columns(tmp_path, hf_cache):
    import datasets
    from PIL import Image

    folder = tmp_path / "no_label"
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    images = [Image.fromarray(a) for a in rgb_images(2, 8, 0)]
    write_parquet(folder, "default", "train", {"image": images, "caption": ["p", "q"]}, features)
    write_card(folder, "default", ["train"])
    with pytest.raises(VanEduError, match=r"no label column.*image.*caption"):
        D.load_image_dataset(str(folder))


def test_unknown_split_names_the_splits(cifar_like):
    folder, _ = cifar_like
    with pytest.raises(VanEduError, match=r"no split 'validation'.*train, test"):
        D.load_image_dataset(str(folder), "validation")


# ---------------------------------------------------------------------------------------------
# the Hub

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
    source = sources.Source.resolve("imagenette", sources.DATASETS["imagenette"])
    assert hub._builder(source, offline=False) == "builder"
    assert calls[1] == ("frgfm/imagenette", None, {"revision": "refs/convert/parquet", "data_dir": "160px"})
    calls.clear()
    with pytest.raises(VanEduError, match="imagenette"):               # offline: no second try
        hub._builder(source, offline=True)
    assert len(calls) == 1


def test_hub_reachable_honours_offline_variables_and_a_silent_host(monkeypatch):
    """Notebooks skip their download cells on hub_reachable() == False: offline variables win
    without touching the network, and a host that refuses the connection counts as unreachable."""
    hub._hub_answers.cache_clear()
    assert hub.hub_reachable() is False                     # HF_HUB_OFFLINE=1 from the fixture
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    attempts = []

    def refuse(address, timeout=None):
        attempts.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub.hub_reachable() is False
    assert attempts and attempts[0][0][1] == 443 and attempts[0][1] == 3
    hub._hub_answers.cache_clear()

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connection())
    assert hub.hub_reachable() is True
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.hub_reachable() is False
    hub._hub_answers.cache_clear()
