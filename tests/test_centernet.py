"""CenterNet on the pyramid: the Gaussian's radius, the targets, the focal loss, decoding."""
import math

import pytest
import torch

from van_edu.models.centernet import create_detector, encode_targets, focal_loss, gaussian_radius


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("w, h", [(10, 10), (30, 8), (4, 25)])
def test_the_radius_is_the_largest_shift_that_keeps_the_iou(w, h):
    r = gaussian_radius(w, h, 0.7)
    box = (0.0, 0.0, w, h)
    assert iou(box, (r, r, w + r, h + r)) == pytest.approx(0.7)
    assert iou(box, (r + 0.1, r + 0.1, w + r + 0.1, h + r + 0.1)) < 0.7


def test_targets_put_a_peak_at_each_centre_and_the_box_there():
    t = encode_targets([[8, 8, 24, 40], [40, 0, 64, 16]], [3, 3], num_classes=5, out_size=16, stride=4)
    # box 1: centre (16, 24) px -> map (4, 6); size (16, 32) px -> (4, 8) map pixels
    assert t["heatmap"][3, 6, 4] == 1.0 and t["centres"][6, 4]
    assert t["size"][:, 6, 4].tolist() == [4.0, 8.0] and t["offset"][:, 6, 4].tolist() == [0.0, 0.0]
    # box 2: centre (52, 8) -> (13, 2) exactly
    assert t["heatmap"][3, 2, 13] == 1.0 and t["centres"].sum() == 2
    assert t["heatmap"][[0, 1, 2, 4]].sum() == 0                     # other classes' maps stay empty
    assert t["heatmap"][3, 6, 5] == 0                                 # small boxes: radius 0, a single peak
    big = encode_targets([[0, 0, 64, 64]], [0], num_classes=1, out_size=32, stride=2)   # 32 x 32 map pixels
    r = int(gaussian_radius(32, 32))
    sigma = (2 * r + 1) / 6
    assert r == 2 and big["heatmap"][0, 16, 17].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert big["heatmap"][0, 16, 16 + r + 1] == 0                     # nothing beyond the radius
    odd = encode_targets([[0, 0, 7, 7]], [0], num_classes=1, out_size=8, stride=2)   # centre 1.75 -> pixel 1
    assert odd["offset"][:, 1, 1].tolist() == pytest.approx([0.75, 0.75])


def test_focal_loss_by_hand():
    heat = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])                   # one centre, one pixel near it
    logits = torch.tensor([[[0.0, 0.0], [math.log(0.25 / 0.75), 0.0]]])   # p = .5, .5, .25, .5
    p = torch.sigmoid(logits)[0]
    pos = -(1 - 0.5) ** 2 * math.log(0.5)
    neg = (-(1 - 0.5) ** 4 * 0.5 ** 2 * math.log(0.5)
           - 0.25 ** 2 * math.log(0.75) - 0.5 ** 2 * math.log(0.5))
    assert p[1, 0].item() == pytest.approx(0.25)
    assert focal_loss(logits, heat).item() == pytest.approx(pos + neg)


def test_decoding_the_targets_gives_the_boxes_back():
    det = create_detector("resnet_mini", num_classes=4, in_chans=1)
    boxes, labels = [[8.0, 8.0, 24.0, 40.0], [30.0, 2.0, 62.0, 20.0]], [1, 2]
    t = encode_targets(boxes, labels, num_classes=4, out_size=32, stride=det.stride)
    heat = t["heatmap"].clamp(1e-4, 1 - 1e-4)
    outputs = {"heatmap": torch.log(heat / (1 - heat))[None], "size": t["size"][None], "offset": t["offset"][None]}
    found = det.decode(outputs, k=10, threshold=0.5)[0]
    got = sorted(zip(found["labels"].tolist(), found["boxes"].tolist()))
    assert [g[0] for g in got] == labels
    for (_, b), want in zip(got, boxes):
        assert b == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("backbone, kw", [("van_mini", {}), ("vit_mini", {"image_size": 64, "out_indices": (1, 2, 3)})])
def test_any_backbone_plugs_in_and_the_loss_reaches_every_parameter(backbone, kw):
    det = create_detector(backbone, num_classes=10, in_chans=1, neck_channels=16, head_channels=16, **kw)
    out = det(torch.randn(2, 1, 64, 64))
    assert out["heatmap"].shape == (2, 10, 32, 32) and out["size"].shape == (2, 2, 32, 32) and det.stride == 2
    targets = [encode_targets([[4, 4, 30, 30]], [7], 10, 32, det.stride) for _ in range(2)]
    stacked = {k: torch.stack([t[k] for t in targets]) for k in targets[0]}
    det.loss(out, stacked).backward()
    assert all(p.grad is not None for p in det.parameters())
    assert torch.sigmoid(det.heatmap[-1].bias).mean().item() == pytest.approx(0.1)   # the prior


def test_fit_trains_a_detector_on_the_garments_boxes(tmp_path, monkeypatch):
    """The same loop: fit calls the detector's own loss on the padded boxes, evaluates mAP with
    COCO's rules, and the loss falls; evaluate gives the same figures as the history."""
    from van_edu.data import load_image_dataset
    from van_edu.train import TrainConfig, evaluate, fit

    monkeypatch.setenv("VAN_EDU_CACHE", str(tmp_path / "cache"))
    train = load_image_dataset("scattered_garments", "train", task="detection", samples=256)
    test = load_image_dataset("scattered_garments", "test", task="detection", samples=64)
    assert train.task == "detection" and train.labels.shape[1:] == (3, 5)
    torch.manual_seed(0)
    det = create_detector("resnet_mini", num_classes=train.num_classes, in_chans=1, neck_channels=16, head_channels=16)
    config = TrainConfig(epochs=2, batch_size=32, lr=2e-3, warmup_epochs=0.5, augment="none", amp="off",
                         progress=False, label_smoothing=0.0)
    result = fit(det, train, test, config, out_dir=tmp_path / "run")
    first, last = result.history
    assert last["train_loss"] < first["train_loss"] and last["train_accuracy"] is None
    assert 0.0 <= last["test_map"] <= last["test_map50"] <= 1.0
    again = evaluate(result.model, test)
    assert again["map50"] == pytest.approx(last["test_map50"]) and again["loss"] == pytest.approx(last["test_loss"])
    with pytest.raises(Exception, match="augment='none'"):
        fit(det, train, test, TrainConfig(epochs=1, batch_size=32, augment="cpu", progress=False))
