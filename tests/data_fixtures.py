"""Fixtures of the data tests: no network, a fresh tensor cache, tiny datasets laid out like the
Hub's repositories, and seeded uint8 batches. Test modules import the fixtures they use by name."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch


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

def rgb_images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_card(folder: Path, config: str, splits: list[str]) -> None:
    files = "".join(f"  - split: {s}\n    path: {config}/{s}-*\n" for s in splits)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n"
                                      f"{files}  default: true\n---\n# tiny test set\n")


def write_parquet(folder: Path, config: str, split: str, columns: dict, features) -> None:
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
        images = rgb_images(n, 32, seed)
        labels = [i % 10 for i in range(n)]
        write_parquet(folder, "plain_text", split,
                      {"img": [Image.fromarray(a) for a in images], "label": labels}, features)
        arrays[split] = (images, labels)
    write_card(folder, "plain_text", ["train", "test"])
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
# seeded uint8 batches

def generator(seed: int) -> torch.Generator:
    """A CPU generator in a known state: the augmentations drawn from it are reproducible."""
    return torch.Generator().manual_seed(seed)


def random_batch(n=16, c=3, size=12) -> torch.Tensor:
    """The same random uint8 batch [n, c, size, size] at every call."""
    return torch.randint(0, 256, (n, c, size, size), generator=generator(123), dtype=torch.uint8)
