"""fit and evaluate on per-pixel targets: the same loop, a pixel-wise cross-entropy, mIoU."""
import pytest
import torch
from torch import nn

from van_edu.data import ImageData, batches
from van_edu.errors import VanEduError
from van_edu.metrics import confusion_matrix, mean_iou
from van_edu.train import TrainConfig, evaluate, fit


def stripes(n: int, seed: int) -> ImageData:
    """Bright vertical bars on a noisy background; the mask is 1 under a bar, 2 under a dim bar."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 16, 16, dtype=torch.int64)
    for i in range(n):
        a, b = torch.randint(0, 14, (2,), generator=g).tolist()
        images[i, :, :, a:a + 2] = 230
        masks[i, :, a:a + 2] = 1
        images[i, :, b:b + 1, :] = 130
        masks[i, b:b + 1, :] = 2
    return ImageData(images, masks, ["background", "bar", "dim bar"], "stripes")


class TinySegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 1))

    def forward(self, x):
        return self.net(x)


def test_masks_are_labels_of_their_own_kind():
    data = stripes(4, 0)
    assert data.task == "segmentation" and data.subset(2).labels.shape == (2, 16, 16)
    with pytest.raises(VanEduError, match=r"labels must be \[N\] .* or \[N, H, W\] .*got \[4, 16, 15\]"):
        ImageData(data.images, data.labels[:, :, :15], data.classes)
    with pytest.raises(VanEduError, match="crops and flips only"):
        next(batches(data, 2, shuffle=True, augment="gpu"))            # erasing would lie about the mask
    x, y = next(batches(data, 2, shuffle=False))
    assert y.shape == (2, 16, 16) and torch.equal(y, data.labels[:2])


def test_crops_and_flips_move_the_mask_with_its_pixels():
    data = stripes(64, 3)
    x, y = next(batches(data, 64, shuffle=False, augment="cpu", seed=1))
    # every pixel of a bar (230 -> 0.80 normalised) is labelled bar, and every bar label sits on one
    assert torch.equal(x[:, 0] > 0.75, y == 1)
    changed = sum(not torch.equal(y[i], data.labels[i]) for i in range(64))
    assert changed > 32                                                 # most masks moved (crop or flip)


def test_fit_learns_masks_and_reports_miou(tmp_path):
    torch.manual_seed(0)
    train, test = stripes(256, 1), stripes(64, 2)
    config = TrainConfig(epochs=3, batch_size=32, lr=2e-2, warmup_epochs=0.5, augment="none", amp="off",
                         progress=False, label_smoothing=0.0)
    result = fit(TinySegmenter(), train, test, config, out_dir=tmp_path)
    row = result.history[-1]
    assert 0.0 <= row["test_miou"] <= 1.0 and len(row["test_iou"]) == 3
    assert result.test_miou == row["test_miou"] > 0.6            # the task is easy: a 3x3 conv sees it
    # evaluate's mIoU is the field's: one confusion matrix over all test pixels
    model = result.model
    with torch.no_grad():
        from van_edu.images import normalize
        pred = model(normalize(test.images)).argmax(1)
    want = mean_iou(confusion_matrix(pred, test.labels, 3))
    got = evaluate(model, test)
    assert got["miou"] == pytest.approx(want) and got["miou"] == pytest.approx(row["test_miou"])
    assert got["accuracy"] == pytest.approx((pred == test.labels).float().mean().item())
    assert 0.0 <= row["train_accuracy"] <= 1.0                    # a fraction of pixels, not pixels per image


def test_a_classifier_on_masks_is_a_clear_error():
    train = stripes(64, 1)
    clf = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    config = TrainConfig(epochs=1, batch_size=32, augment="none", amp="off", progress=False)
    with pytest.raises(VanEduError, match=r"logits of shape \(32, 3\).*expected \[batch, 3, 16, 16\] from a segmenter"):
        fit(clf, train, None, config)


def test_bf16_training_on_the_cpu_is_scored_in_float32(tmp_path):
    """Autocast covers the training steps only: a CPU's scores are float32 ones, equal to what
    `evaluate` finds later on any machine (the bundled weights' check depends on it)."""
    torch.manual_seed(0)
    train, test = stripes(128, 1), stripes(64, 2)
    config = TrainConfig(epochs=1, batch_size=32, lr=2e-2, warmup_epochs=0.5, augment="none", amp="bf16",
                         progress=False, label_smoothing=0.0)
    result = fit(TinySegmenter(), train, test, config, out_dir=tmp_path)
    assert result.precision == "bfloat16"
    row = result.history[-1]
    fp32 = evaluate(result.model, test)
    assert row["test_miou"] == pytest.approx(fp32["miou"], abs=1e-9)
    assert row["test_loss"] == pytest.approx(fp32["loss"], rel=1e-6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):   # what a bf16 evaluation would give
        from van_edu.images import normalize
        logits = result.model(normalize(test.images))
    bf16_loss = nn.functional.cross_entropy(logits.float(), test.labels).item()
    assert bf16_loss != pytest.approx(fp32["loss"], rel=1e-6)           # so the test above can tell them apart
