"""Segmentation scored per object (van_edu.metrics.instance_scores): each garment's share of visible
pixels predicted with its class, grouped by drawn size and by how much of it is hidden, and two
models compared per group by a paired bootstrap over canvases. Hand-worked cases, then the real
garments (offline)."""
from __future__ import annotations

import math

import pytest
import torch
from data_fixtures import offline, tensor_cache  # noqa: F401 (fixtures)

from van_edu.metrics import OVERLAP_EDGES, SIZE_EDGES, instance_scores, paired_bootstrap_instances, scores_by_bin


def worked_case():
    """Two 4 x 4 canvases, worked by hand.

    canvas 0: object 1 (class 4) on the top-left 2 x 2, drawn with 4 pixels (nothing hidden);
              object 2 (class 1) on the bottom row, drawn with 8 (half hidden).
    canvas 1: object 1 (class 2) on three pixels of the top row, drawn with 12 (three quarters hidden).
    The prediction gets 3 of object 1's 4 pixels, 2 of object 2's 4, all 3 of canvas 1's object, and
    paints class 4 on background pixels too (which must not raise object 1's score).
    """
    instances = torch.zeros(2, 4, 4, dtype=torch.int64)
    target = torch.zeros(2, 4, 4, dtype=torch.int64)
    instances[0, :2, :2], target[0, :2, :2] = 1, 4
    instances[0, 3, :], target[0, 3, :] = 2, 1
    instances[1, 0, :3], target[1, 0, :3] = 1, 2
    pred = target.clone()
    pred[0, 0, 0] = 0                                   # one of object 1's pixels missed
    pred[0, 3, :2] = 5                                  # half of object 2's pixels called another class
    pred[0, 2, 2:] = 4                                  # class 4 on background: no credit, no penalty here
    areas = [[4, 8], [12]]
    return pred, target, instances, areas


def test_scores_per_object_by_hand():
    s = instance_scores(*worked_case())
    assert s["image"].tolist() == [0, 0, 1]
    assert s["visible"].tolist() == [4, 4, 3] and s["area"].tolist() == [4, 8, 12]
    assert s["hidden"].tolist() == pytest.approx([0.0, 0.5, 0.75])
    assert s["score"].tolist() == pytest.approx([0.75, 0.5, 1.0])


def test_tables_by_size_and_by_overlap_by_hand():
    s = instance_scores(*worked_case())
    by_size = scores_by_bin(s, "area", (0, 5, 10, math.inf))
    assert [(r["bin"], r["count"], r["mean"]) for r in by_size] == [
        ("(0, 5]", 1, 0.75), ("(5, 10]", 1, 0.5), ("> 10", 1, 1.0)]
    by_overlap = scores_by_bin(s, "hidden", OVERLAP_EDGES)
    assert [r["bin"] for r in by_overlap] == ["none (0)", "(0, 0.25]", "(0.25, 0.5]", "(0.5, 1]"]
    assert [r["count"] for r in by_overlap] == [1, 0, 1, 1]
    assert by_overlap[0]["mean"] == 0.75 and math.isnan(by_overlap[1]["mean"])
    assert by_overlap[2]["mean"] == 0.5 and by_overlap[3]["mean"] == 1.0
    assert SIZE_EDGES[0] == 0 and SIZE_EDGES[-1] == math.inf


def test_bad_inputs_are_refused():
    pred, target, instances, areas = worked_case()
    with pytest.raises(ValueError, match="one shape"):
        instance_scores(pred[:1], target, instances, areas)
    with pytest.raises(ValueError, match="no visible pixel"):
        instance_scores(pred, target, instances, [[4, 8, 3], [12]])       # a third object that is not there


def scores(image, diff_a, diff_b=None, area=None):
    """instance_scores-like records: objects on the given images, with scores a and b."""
    n = len(image)
    base = {"image": torch.tensor(image), "area": torch.tensor(area or [100.0] * n, dtype=torch.float64),
            "visible": torch.full((n,), 10.0, dtype=torch.float64), "hidden": torch.zeros(n, dtype=torch.float64)}
    a = {**base, "score": torch.tensor(diff_a, dtype=torch.float64)}
    b = {**base, "score": torch.tensor(diff_b if diff_b is not None else [0.0] * n, dtype=torch.float64)}
    return a, b


def test_bootstrap_of_one_model_against_itself_is_zero():
    s = instance_scores(*worked_case())
    rows = paired_bootstrap_instances(s, s, "area", (0, 5, 10, math.inf), samples=500)
    for r in rows:
        assert (r["difference"], r["low"], r["high"], r["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_resamples_canvases_not_objects():
    # all four objects on one canvas: every resample draws that canvas, so there is no spread at all
    # (resampling objects would spread the mean of 1, 0, 1, 0 from 0 to 1)
    a, b = scores([0, 0, 0, 0], [1.0, 0.0, 1.0, 0.0])
    (row,) = paired_bootstrap_instances(a, b, "area", (0, math.inf), samples=500)
    assert row["count"] == 4 and row["difference"] == row["low"] == row["high"] == 0.5
    # canvas 0: three objects better by 1; canvas 1: one object, no better. Resampling the two canvases
    # gives the mean 1 (both draws canvas 0, p 1/4), 3/4 (one of each, p 1/2) or 0 (both canvas 1, p 1/4)
    a, b = scores([0, 0, 0, 1], [1.0, 1.0, 1.0, 0.0])
    (row,) = paired_bootstrap_instances(a, b, "area", (0, math.inf), samples=4000, seed=1)
    assert row["difference"] == 0.75 and (row["low"], row["high"]) == (0.0, 1.0)
    assert row["p"] == pytest.approx(2 * 0.25, abs=0.05)                # twice P(difference <= 0)


def test_bootstrap_bins_and_refusal():
    a, b = scores([0, 1, 2], [1.0, 1.0, 0.5], area=[50.0, 300.0, 900.0])
    rows = paired_bootstrap_instances(a, b, "area", SIZE_EDGES, samples=300)
    assert [(r["bin"], r["count"]) for r in rows] == [("(0, 250]", 1), ("(250, 450]", 1), ("> 450", 1)]
    assert [r["difference"] for r in rows] == [1.0, 1.0, 0.5]
    empty = paired_bootstrap_instances(a, b, "area", (1000, 2000), samples=10)[0]
    assert empty["count"] == 0 and math.isnan(empty["difference"])
    other = {**b, "area": b["area"] + 1}
    with pytest.raises(ValueError, match="same objects"):
        paired_bootstrap_instances(a, other)


def test_the_garments_objects_line_up_with_their_masks():
    from van_edu.data import garment_instances, load_image_dataset
    from van_edu.evaluation import predict_masks

    test = load_image_dataset("scattered_garments", "test", samples=40, seed=2)
    objects = garment_instances("test", samples=40, seed=2)
    assert torch.equal(objects["instances"] > 0, test.labels > 0)
    for mask, inst, labels in zip(test.labels, objects["instances"], objects["labels"]):
        for i, k in enumerate(labels):                                  # object i's pixels carry its class + 1
            assert (mask[inst == i + 1] == k + 1).all()
    perfect = instance_scores(test.labels, test.labels, objects["instances"], objects["areas"])
    assert torch.equal(perfect["score"], torch.ones_like(perfect["score"]))
    assert ((perfect["hidden"] >= 0) & (perfect["hidden"] < 1)).all() and (perfect["hidden"] == 0).any()

    class Background(torch.nn.Module):                                  # every pixel background
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 11, *x.shape[2:]) + self.w
            logits[:, 0] = 1.0
            return logits

    pred = predict_masks(Background(), test, batch_size=16)
    assert pred.shape == test.labels.shape and not pred.any()
    none = instance_scores(pred, test.labels, objects["instances"], objects["areas"])
    assert none["score"].sum() == 0


def test_detected_objects_by_hand():
    """The worked case's three objects as boxes: a detector finds object 1 of canvas 0 (its class,
    IoU 1), calls object 2 the wrong class, and finds canvas 1's object only with a score below the
    threshold; a second box on object 1 cannot find it twice."""
    from van_edu.metrics import detection_instance_scores

    _, _, instances, areas = worked_case()
    truths = [{"boxes": torch.tensor([[0.0, 0, 2, 2], [0, 3, 4, 4]]), "labels": torch.tensor([4, 1])},
              {"boxes": torch.tensor([[0.0, 0, 3, 1]]), "labels": torch.tensor([2])}]
    dets = [{"boxes": torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 3, 4, 4]]), "scores": torch.tensor([0.9, 0.8, 0.9]),
             "labels": torch.tensor([4, 4, 5])},
            {"boxes": torch.tensor([[0.0, 0, 3, 1]]), "scores": torch.tensor([0.2]), "labels": torch.tensor([2])}]
    s = detection_instance_scores(dets, truths, instances, areas, min_score=0.3)
    assert s["score"].tolist() == [1.0, 0.0, 0.0]
    assert s["visible"].tolist() == [4.0, 4.0, 3.0] and s["hidden"].tolist() == [0.0, 0.5, 0.75]
    assert detection_instance_scores(dets, truths, instances, areas, min_score=0.1)["score"].tolist() == [1.0, 0.0, 1.0]
    # a box that overlaps object 1 by IoU 0.5 (2 of its 4 pixels, nothing else) counts at 0.5, not at 0.6
    half = [{"boxes": torch.tensor([[0.0, 0, 2, 1]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([4])}, dets[1]]
    assert detection_instance_scores(half, truths, instances, areas, iou=0.5)["score"][0] == 1.0
    assert detection_instance_scores(half, truths, instances, areas, iou=0.6)["score"][0] == 0.0
    rows = scores_by_bin(s, "hidden", OVERLAP_EDGES)                   # the same tables as segmentation's
    assert [r["count"] for r in rows] == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="one area per box"):
        detection_instance_scores(dets, truths, instances, [[4], [12]])
