"""Segmentation metrics against cases worked by hand, and against torchmetrics where installed."""
import math

import pytest
import torch

from van_edu.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, segmentation_scores


def test_a_case_worked_by_hand():
    # 2 x 3 image, 3 classes.     target          pred
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(pred, target, 3)
    # rows: true 0 -> (0: 1, 1: 1); true 1 -> (1: 2); true 2 -> (0: 1, 2: 1)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # class 0: tp 1, fp 1 (the 2 predicted as 0), fn 1 -> 1/3; class 1: tp 2, fp 1, fn 0 -> 2/3;
    # class 2: tp 1, fp 0, fn 1 -> 1/2
    assert iou_per_class(cm) == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_the_matrix_is_summed_over_the_set_not_averaged_per_image():
    """Image A: all class 0, predicted right; image B: class 1 predicted as 0. Per image, A's mIoU
    is 1 and B's 0; over the set, class 0 has IoU 4/8 and class 1 has 0."""
    target = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    pred = torch.zeros_like(target)
    scores = segmentation_scores(confusion_matrix(pred, target, 2))
    assert scores["iou"] == pytest.approx([0.5, 0.0]) and scores["miou"] == pytest.approx(0.25)


def test_absent_classes_and_ignored_pixels():
    target = torch.tensor([0, 0, 255, 1])
    pred = torch.tensor([0, 0, 2, 1])                          # the ignored pixel's prediction is never seen
    cm = confusion_matrix(pred, target, 4, ignore_index=255)
    assert cm.sum() == 3
    iou = iou_per_class(cm)
    assert iou[:2] == [1.0, 1.0] and math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(cm) == 1.0                                 # the mean over classes that have one


def test_out_of_range_classes_are_errors():
    with pytest.raises(ValueError, match="target holds class 3, outside 0..2"):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="pred holds class -1"):
        confusion_matrix(torch.tensor([-1]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2), torch.zeros(3), 3)


def test_agrees_with_torchmetrics_on_random_maps():
    tm = pytest.importorskip("torchmetrics.classification", reason="torchmetrics is not installed")
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (4, 16, 16), generator=g)
    pred = torch.where(torch.rand(4, 16, 16, generator=g) < 0.6, target, torch.randint(0, 5, (4, 16, 16), generator=g))
    cm = confusion_matrix(pred, target, 5)
    theirs = tm.MulticlassJaccardIndex(num_classes=5, average=None)(pred, target)
    assert iou_per_class(cm) == pytest.approx(theirs.tolist(), abs=1e-6)


def test_floors_are_what_their_rules_score():
    from van_edu.metrics import floors

    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (6, 8, 8), generator=g)
    masks[masks == 2] = torch.randint(1, 3, (int((masks == 2).sum()),), generator=g)   # class 1 most frequent
    images = torch.where(masks > 0, torch.randint(100, 256, masks.shape, generator=g),
                         torch.randint(0, 140, masks.shape, generator=g)).to(torch.uint8)[:, None]
    f = floors(images, masks, images, masks, 3)
    # all background, computed directly
    want = confusion_matrix(torch.zeros_like(masks), masks, 3)
    assert f["background"]["miou"] == pytest.approx(mean_iou(want))
    # the rule, applied by hand with the threshold it chose
    t, k = f["threshold"]["threshold"], f["threshold"]["class"]
    pred = torch.where(images[:, 0] > t, k, 0)
    assert k == int(torch.bincount(masks[masks > 0]).argmax())
    assert f["threshold"]["miou"] == pytest.approx(mean_iou(confusion_matrix(pred, masks, 3)))
    # and no other threshold does better on these (training) canvases
    assert all(mean_iou(confusion_matrix(torch.where(images[:, 0] > u, k, 0), masks, 3)) <= f["threshold"]["miou"] + 1e-12
               for u in range(0, 256, 5))


def test_per_image_confusions_sum_to_the_sets():
    from van_edu.metrics import per_image_confusion

    g = torch.Generator().manual_seed(1)
    target, pred = torch.randint(0, 4, (5, 6, 6), generator=g), torch.randint(0, 4, (5, 6, 6), generator=g)
    per = per_image_confusion(pred, target, 4)
    assert per.shape == (5, 4, 4)
    assert torch.equal(per.sum(0), confusion_matrix(pred, target, 4))
    assert torch.equal(per[2], confusion_matrix(pred[2], target[2], 4))


def test_paired_bootstrap_sees_a_real_difference_and_not_a_false_one():
    from van_edu.metrics import paired_bootstrap_miou, per_image_confusion

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (60, 8, 8), generator=g)
    noise = torch.randint(0, 3, target.shape, generator=g)
    good = torch.where(torch.rand(target.shape, generator=g) < 0.8, target, noise)
    bad = torch.where(torch.rand(target.shape, generator=g) < 0.5, target, noise)
    a, b = per_image_confusion(good, target, 3), per_image_confusion(bad, target, 3)
    r = paired_bootstrap_miou(a, b, samples=500)
    assert r["difference"] == pytest.approx(mean_iou(a.sum(0)) - mean_iou(b.sum(0)))
    assert 0 < r["low"] < r["difference"] < r["high"] and r["p"] == pytest.approx(1 / 500)
    same = paired_bootstrap_miou(a, a, samples=200)                   # a model against itself: exactly 0
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p"] == 1.0
    # the pairing matters: models that make the same mistakes on the same images differ less noisily
    shifted = torch.where(torch.rand(target.shape, generator=g) < 0.02, noise, good)
    paired = paired_bootstrap_miou(a, per_image_confusion(shifted, target, 3), samples=500)
    assert paired["high"] - paired["low"] < r["high"] - r["low"]


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def test_average_precision_worked_by_hand():
    from van_edu.metrics import detection_scores

    truths = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])}]
    # best first: a hit, a miss (no overlap), then the second object found
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    # recall 0.5 at precision 1; recall 1 at precision 2/3 (the envelope keeps 1 up to recall 0.5)
    want = (51 * 1.0 + 50 * (2 / 3)) / 101
    r = detection_scores(dets, truths, num_classes=1)
    assert r["map50"] == pytest.approx(want) and r["map"] == pytest.approx(want)   # exact boxes: every IoU
    # a duplicate of a found object is a false positive, not a second hit
    dup = [_det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    assert detection_scores(dup, truths, 1)["map50"] == pytest.approx(51 / 101)
    # a box that overlaps by IoU 0.6 counts at 0.5 and 0.55, not above
    shifted = [_det([[0, 0, 10, 10.0 * 0.6]], [0.9], [0])]
    one = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    r = detection_scores(shifted, one, 1)
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(0.3)     # 3 of 10 thresholds
    # classes without objects are left out of the mean
    assert detection_scores(dets, truths, num_classes=3)["ap50"][1:] == [None, None]


def test_average_precision_agrees_with_pycocotools():
    pytest.importorskip("pycocotools", reason="pycocotools is not installed (the detection extra)")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from van_edu.metrics import detection_scores

    g = torch.Generator().manual_seed(0)
    truths, dets, images, anns, results = [], [], [], [], []
    for i in range(25):
        n = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 40
        wh = 8 + torch.rand(n, 2, generator=g) * 16
        boxes = torch.cat([xy, xy + wh], 1).round()
        labels = torch.randint(0, 3, (n,), generator=g)
        truths.append({"boxes": boxes, "labels": labels})
        jitter = boxes + torch.randn(boxes.shape, generator=g) * 2
        extra = torch.cat([torch.rand(2, 2, generator=g) * 40, torch.rand(2, 2, generator=g) * 40 + 45], 1)
        pred = torch.cat([jitter, extra])
        pred_labels = torch.cat([torch.where(torch.rand(n, generator=g) < 0.8, labels, (labels + 1) % 3),
                                 torch.randint(0, 3, (2,), generator=g)])
        scores = torch.rand(len(pred), generator=g)
        dets.append({"boxes": pred, "scores": scores, "labels": pred_labels})
        images.append({"id": i, "width": 64, "height": 64})
        for b, k in zip(boxes.tolist(), labels.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": k, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, k, s in zip(pred.tolist(), pred_labels.tolist(), scores.tolist()):
            results.append({"image_id": i, "category_id": k, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": k} for k in range(3)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = detection_scores(dets, truths, num_classes=3)
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-6) and ours["map50"] == pytest.approx(ev.stats[1], abs=1e-6)
    # AP by size: COCO's area ranges (here on box areas of 64..576 px), with its rule for what is ignored
    ranges = [[0, 1e10], [0, 150], [150, 300], [300, 1e10]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = ranges, ["all", "small", "medium", "large"]
        ev.evaluate(), ev.accumulate()
    for a, (lo, hi) in enumerate(ranges[1:], start=1):
        precision = ev.eval["precision"][0, :, :, a, -1]                    # IoU 0.5, all recalls and classes
        kept = [k for k in range(3) if (precision[:, k] > -1).all()]
        want = sum(precision[:, k].mean() for k in kept) / len(kept)
        assert detection_scores(dets, truths, 3, area_range=(lo, hi))["map50"] == pytest.approx(want, abs=1e-6)


def test_paired_bootstrap_of_ap_sees_a_real_difference_and_not_a_false_one():
    from van_edu.metrics import class_agnostic, detection_scores, paired_bootstrap_ap

    g = torch.Generator().manual_seed(1)
    truths, good, poor = [], [], []
    for _ in range(60):
        xy = torch.rand(2, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 12], 1)
        labels = torch.randint(0, 2, (2,), generator=g)
        truths.append({"boxes": boxes, "labels": labels})
        good.append({"boxes": boxes + torch.randn(boxes.shape, generator=g) * 0.5,
                     "scores": torch.rand(2, generator=g), "labels": labels})
        wrong = torch.where(torch.rand(2, generator=g) < 0.4, 1 - labels, labels)   # 40% of classes wrong
        poor.append({"boxes": boxes + torch.randn(boxes.shape, generator=g) * 0.5,
                     "scores": torch.rand(2, generator=g), "labels": wrong})
    result = paired_bootstrap_ap(good, poor, truths, num_classes=2, samples=300)
    assert result["a"] == pytest.approx(detection_scores(good, truths, 2)["map50"])      # the observed mAPs
    assert result["b"] == pytest.approx(detection_scores(poor, truths, 2)["map50"])
    assert result["difference"] > 0.2 and result["low"] > 0 and result["p"] < 0.01
    same = paired_bootstrap_ap(good, good, truths, num_classes=2, samples=100)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p"] == 1.0
    # finding the boxes, whatever their class: the poor detector's boxes are as good as the good one's
    assert detection_scores(class_agnostic(poor), class_agnostic(truths), 1)["map50"] == pytest.approx(
        detection_scores(class_agnostic(good), class_agnostic(truths), 1)["map50"], abs=0.05)
    with pytest.raises(ValueError, match="the same images"):
        paired_bootstrap_ap(good[:-1], poor, truths, num_classes=2)
