"""Scattered garments: deterministic canvases whose masks and boxes are right, from disjoint
sources, served through datasets with typed Features, cached by their config."""
from dataclasses import replace

import numpy as np
import pytest
import torch

# the shared data fixtures: no network, a fresh tensor cache for this module
from data_fixtures import offline, tensor_cache  # noqa: F401

from van_edu import garments
from van_edu.data import load_image_dataset
from van_edu.errors import VanEduError

SMALL = replace(garments.GARMENTS, train_canvases=64, test_canvases=64)


@pytest.fixture(scope="module")
def fmnist():
    return {split: load_image_dataset("fashion_mnist", split) for split in ("train", "test")}


def test_canvases_are_a_pure_function_of_config_and_seed(fmnist):
    src = fmnist["test"]
    a = garments.make_canvases(src.images, src.labels, 20, SMALL, seed=5)
    b = garments.make_canvases(src.images, src.labels, 20, SMALL, seed=5)
    c = garments.make_canvases(src.images, src.labels, 20, SMALL, seed=6)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["masks"], b["masks"]) and a["boxes"] == b["boxes"]
    assert not torch.equal(a["images"], c["images"])


def test_masks_boxes_and_labels_agree(fmnist):
    src = fmnist["test"]
    cv = garments.make_canvases(src.images, src.labels, 200, SMALL, seed=0)
    for masks, inst, boxes, labels, areas, sources in zip(cv["masks"], cv["instances"], cv["boxes"], cv["labels"],
                                                          cv["areas"], cv["sources"]):
        assert SMALL.min_garments <= len(sources) <= SMALL.max_garments and len(boxes) <= len(sources)
        assert len(boxes) == len(labels) >= 1                          # the last garment drawn is visible
        covered = torch.zeros_like(masks, dtype=torch.bool)
        for (x0, y0, x1, y1), k in zip(boxes, labels):
            assert 0 <= x0 < x1 <= SMALL.size and 0 <= y0 < y1 <= SMALL.size
            inside = masks[y0:y1, x0:x1] == k + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
            covered[y0:y1, x0:x1] |= masks[y0:y1, x0:x1] == k + 1
        assert torch.equal(covered, masks > 0)                        # every garment pixel is in its box
        for i, (x0, y0, x1, y1) in enumerate(boxes):                  # instance i + 1 fills box i tightly
            ys, xs = torch.nonzero(inst == i + 1, as_tuple=True)
            assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (x0, y0, x1, y1)
            assert (masks[inst == i + 1] == labels[i] + 1).all() and len(ys) <= areas[i]
        assert torch.equal(inst > 0, masks > 0) and int(inst.max()) == len(boxes)
        assert len(ys) == areas[-1]                                   # the last garment drawn is not covered
        assert set(masks.unique().tolist()) == {0} | {k + 1 for k in labels}


def test_garment_pixels_come_from_the_garments_and_the_background_is_not_dark(fmnist):
    src = fmnist["test"]
    cv = garments.make_canvases(src.images, src.labels, 200, SMALL, seed=0)
    img, fg = cv["images"][:, 0].float(), cv["masks"] > 0
    assert (img[fg] > SMALL.alpha_threshold - 1).all()                 # only scaled garment pixels are masked
    # "every bright pixel is a garment" is wrong: a good share of the background is brighter than
    # a quarter of the garment pixels
    q = torch.quantile(img[fg], 0.25)
    assert (img[~fg] > q).float().mean() > 0.10


def test_test_canvases_never_use_an_image_of_the_training_split(fmnist):
    ds = garments.garments_from(fmnist["test"], "test", SMALL, exclude=fmnist["train"])
    train_bytes = {bytes(r) for r in fmnist["train"].images.flatten(1).numpy()}
    used = {i for row in ds["sources"] for i in row}
    rows = fmnist["test"].images.flatten(1).numpy()
    assert used and not any(bytes(rows[i]) in train_bytes for i in used)
    # the exclusion is real: the pool leaves out exactly the test images also in the training split
    pool = garments._pool(fmnist["test"], fmnist["train"])
    dupes = sum(bytes(r) in train_bytes for r in rows)
    assert len(pool) == len(rows) - dupes


def test_served_through_datasets_with_typed_features(fmnist):
    from datasets import ClassLabel, Image, Sequence

    ds = garments.garments_from(fmnist["train"], "train", SMALL)
    assert isinstance(ds.features["image"], Image) and isinstance(ds.features["mask"], Image)
    assert isinstance(ds.features["labels"], Sequence) and isinstance(ds.features["labels"].feature, ClassLabel)
    assert ds.features["labels"].feature.names[0] == "T-shirt/top"
    row = ds[0]
    mask = np.asarray(row["mask"])
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= set(range(11))
    assert len(row["boxes"]) == len(row["labels"])


def test_load_image_dataset_serves_masks_by_name_and_caches_them(tensor_cache):
    data = load_image_dataset("scattered_garments", "test", samples=50, seed=1)
    assert data.task == "segmentation" and data.labels.shape == (50, 64, 64)
    assert data.classes[0] == "background" and len(data.classes) == 11
    files = list(tensor_cache.glob("scattered_garments-*"))
    assert len(files) == 1 and garments.GARMENTS.key() in files[0].name
    again = load_image_dataset("scattered_garments", "test", samples=50, seed=1)
    assert torch.equal(again.labels, data.labels) and torch.equal(again.images, data.images)
    assert SMALL.key() != garments.GARMENTS.key()                      # the config is part of the key
    with pytest.raises(VanEduError, match="splits 'train' and 'test'"):
        load_image_dataset("scattered_garments", "validation")
    with pytest.raises(VanEduError, match="expected no image_size"):
        load_image_dataset("scattered_garments", "test", image_size=32)


def test_the_generator_version_is_part_of_the_key(monkeypatch):
    before = garments.GARMENTS.key()
    monkeypatch.setattr(garments, "GENERATOR_VERSION", garments.GENERATOR_VERSION + 1)
    assert garments.GARMENTS.key() != before
