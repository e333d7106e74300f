"""The tiny models, synthetic data and settings that the training tests share.

Used by tests/test_train.py, tests/test_train_state.py and tests/ddp_worker.py. The models are
tiny ones of our own (one with BatchNorm and dropout, one with LayerNorm only), so these tests do
not depend on van_edu.models. The data are synthetic 16x16 noisy textures (symmetric under
horizontal flips, so augmentation keeps the label). The fixtures `one_thread` and `data` are
imported by the test modules that use them.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from van_edu.data import ImageData
from van_edu.runtime import cpu_threads
from van_edu.train import TrainConfig

TIMING_KEYS = ("seconds", "images_per_second")


def make_data(n: int, seed: int, size: int = 16, chans: int = 1) -> ImageData:
    """n noisy images of 4 texture classes that survive crops and flips, so pooling sees them.

    Horizontal stripes, vertical stripes, an X (both diagonals) and a grid of dots.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=gen) % 4
    images = torch.randint(0, 90, (n, chans, size, size), generator=gen, dtype=torch.uint8)
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inner = lambda i: (i % 4 == 1) | (i % 4 == 2)  # noqa: E731  2 of every 4 rows or columns
    masks = torch.stack([(r % 8 == 3) | (r % 8 == 4),                               # stripes across
                         (c % 8 == 3) | (c % 8 == 4),                               # stripes down
                         ((r - c).abs() <= 1) | ((r + c - (size - 1)).abs() <= 1),  # an X
                         inner(r) & inner(c)])                                      # 2x2 dots
    images[masks[labels].unsqueeze(1).expand_as(images)] = 230
    return ImageData(images=images.contiguous(), labels=labels.long(),
                     classes=["across", "down", "cross", "dots"], name="textures")


class BatchNormNet(nn.Module):
    """Two conv + BatchNorm layers, average pooling, dropout and a linear head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] tensor."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerNormNet(nn.Module):
    """Convs with LayerNorm only (no batch statistics) and a 1-D layer scale, as VAN blocks have."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, stride=2, padding=1), ChannelLayerNorm(width))
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.layer_scale = nn.Parameter(torch.full((width,), 0.5))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.layer_scale[:, None, None] * self.mix(x)
        return self.head(x.mean(dim=(2, 3)))


def quick_config(**changes) -> TrainConfig:
    """Two short epochs on the CPU, silent."""
    base = TrainConfig(epochs=2, batch_size=32, lr=3e-3, warmup_epochs=0.5, augment="cpu",
                       device="cpu", eval_batch_size=64, progress=False)
    return replace(base, **changes)


def ddp_config() -> TrainConfig:
    return quick_config(batch_size=32, augment="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs run ~10x faster on one intra-op thread than on two busy cores; restored after."""
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def data():
    return make_data(512, seed=1), make_data(128, seed=2)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]
