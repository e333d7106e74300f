"""Tests of van_edu.augment: seeded random crops, flips and erasing on uint8 batches, on their device."""
import pytest
import torch
from data_fixtures import generator, random_batch

from van_edu.augment import AUGMENT_PRESETS, ERASE_VALUE, AugmentConfig, augment


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
def test_augment_keeps_shape_dtype_and_is_seeded(preset):
    config = AUGMENT_PRESETS[preset]
    x = random_batch()
    a = augment(x, config, generator(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and a.device == x.device
    assert torch.equal(a, augment(x, config, generator(0)))
    if preset == "none":
        assert torch.equal(a, x)
    else:
        assert not torch.equal(a, augment(x, config, generator(1)))


def test_crop_shifts_content_within_the_padding():
    pad, n = 2, 64
    x = torch.zeros(n, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 4, 4] = 255                                    # one bright pixel in the centre
    out = augment(x, AugmentConfig(crop_padding=pad), generator(0))
    assert (out == 255).flatten(1).sum(1).eq(1).all()      # the pixel survives, moved
    where = (out[:, 0] == 255).flatten(1).int().argmax(1)
    rows, cols = where // 9 - 4, where % 9 - 4
    assert rows.abs().max() <= pad and cols.abs().max() <= pad
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # many different shifts occur
    full = torch.full((n, 1, 9, 9), 255, dtype=torch.uint8)
    shifted = augment(full, AugmentConfig(crop_padding=pad), generator(0))
    assert (shifted == 0).any() and (shifted[:, :, pad:-pad, pad:-pad] == 255).all()  # zero padding enters


def test_flip_flips():
    x = torch.zeros(32, 1, 4, 6, dtype=torch.uint8)
    x[..., :2] = 255                                       # left third bright
    out = augment(x, AugmentConfig(flip=True), generator(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped ^ same).all() and flipped.any() and same.any()


def test_random_erasing_fills_a_box():
    x = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    out = augment(x, AugmentConfig(erase_prob=1.0), generator(0))
    for image in out:
        box = (image == ERASE_VALUE).all(0)              # [H, W], same box in every channel
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert box.sum() == len(rows) * len(cols) > 0      # a filled rectangle
    assert torch.equal(augment(x, AugmentConfig(erase_prob=0.0), generator(0)), x)
