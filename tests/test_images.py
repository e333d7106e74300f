"""Tests of van_edu.images: ImageData, normalize, subsets, and batches (order, augmentation and DDP
shards a pure function of seed and epoch)."""
import pytest
import torch
from data_fixtures import generator, random_batch

from van_edu.augment import AUGMENT_PRESETS, augment
from van_edu.errors import VanEduError
from van_edu.images import ImageData, batches, normalize


def _indexed_data(n: int) -> ImageData:
    """Image i is filled with i (mod 256) and has label i, so batches reveal which rows they hold."""
    images = (torch.arange(n) % 256).to(torch.uint8)[:, None, None, None].expand(n, 1, 6, 6).clone()
    return ImageData(images, torch.arange(n), [str(i) for i in range(n)], "indexed")


def _collect(data, **kwargs):
    return [(x.clone(), y.clone()) for x, y in batches(data, **kwargs)]


def test_bad_arguments():
    data = _indexed_data(10)
    for bad in (0, -3, 0.0, 1.5, True, "3"):
        with pytest.raises(VanEduError):
            data.subset(bad)
    with pytest.raises(VanEduError, match="divisible"):
        batches(data, 6, shuffle=False, world_size=4)
    with pytest.raises(VanEduError, match="uint8"):
        normalize(torch.zeros(1, 1, 2, 2))


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
    kwargs = dict(batch_size=8, shuffle=True, augment=AUGMENT_PRESETS["gpu"])
    a = _collect(data, seed=1, epoch=2, **kwargs)
    b = _collect(data, seed=1, epoch=2, **kwargs)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    for other in (dict(seed=1, epoch=3), dict(seed=2, epoch=2)):
        c = _collect(data, **other, **kwargs)
        assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


@pytest.mark.parametrize("n", [64, 70, 65])
def test_rank_shards_union_equals_single_process_batch(n):
    data, world = _indexed_data(n), 4
    kwargs = dict(batch_size=16, shuffle=True, seed=7, epoch=1, augment=AUGMENT_PRESETS["gpu"])
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
    assert len(data.subset(1.0)) == 100 and len(data.subset(100)) == 100
    with pytest.raises(VanEduError, match="asked for 500 samples of 'indexed', which has 100"):
        data.subset(500)                                # not silently all of it


def test_presets_by_name():
    x = random_batch()
    by_name = augment(x, "cpu", generator(0))
    assert torch.equal(by_name, augment(x, AUGMENT_PRESETS["cpu"], generator(0)))
    data = _indexed_data(20)
    a = _collect(data, batch_size=5, shuffle=True, augment="gpu")
    b = _collect(data, batch_size=5, shuffle=True, augment=AUGMENT_PRESETS["gpu"])
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    with pytest.raises(VanEduError, match="none, cpu, gpu"):
        batches(data, 5, shuffle=True, augment="strong")
