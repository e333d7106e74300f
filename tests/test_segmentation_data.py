"""Oxford-IIIT Pet's trimaps as a segmentation set ("oxford_pets"): read by name from a folder in the
Hub's layout (the one data/build_oxford_pets.py writes), masks mapped and resized without mixing
classes, the border ignored by training, evaluation and the floors; and the GPU comparison preset
run end to end on a tiny fake folder. Offline: every file is written by the tests."""
from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import hf_cache, offline, tensor_cache, write_card, write_parquet  # noqa: F401 (fixtures)

from van_edu import data as D
from van_edu.errors import VanEduError
from van_edu.images import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[1]
TRIMAP_TO_CLASS = {1: 1, 2: 0, 3: IGNORE_INDEX}          # pet, background, border


def blocky_trimaps(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Trimaps [n, H, W] with values 1..3, constant on aligned 2x2 blocks, so that halving them is
    exact whichever pixel of a block a nearest resize picks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(1, 4, (n, height // 2, width // 2), dtype=np.uint8)
    return blocks.repeat(2, axis=1).repeat(2, axis=2)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def write_pets_like(folder: Path, splits: dict[str, np.ndarray], seed: int = 0) -> None:
    """A folder as build_oxford_pets writes it: oxford_pets/{split}-*.parquet with image, mask,
    label, species and name, and a card whose configs name the files."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["Abyssinian", "beagle"]),
                                  "species": datasets.ClassLabel(names=["cat", "dog"]), "name": datasets.Value("string")})
    rng = np.random.default_rng(seed)
    for split, trimaps in splits.items():
        n, h, w = trimaps.shape
        photos = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        write_parquet(folder, "oxford_pets", split, {
            "image": [{"bytes": png(p), "path": None} for p in photos],
            "mask": [{"bytes": png(t), "path": None} for t in trimaps],
            "label": [i % 2 for i in range(n)], "species": [i % 2 for i in range(n)],
            "name": [f"pet_{split}_{i}" for i in range(n)]}, features)
    write_card(folder, "oxford_pets", list(splits))


@pytest.fixture
def pets(tmp_path, monkeypatch, hf_cache):  # noqa: F811 (fixture)
    """"oxford_pets" served from a tiny folder: 6 training and 4 test photos of 16 x 24 pixels."""
    folder = tmp_path / "oxford_pets"
    trimaps = {"train": blocky_trimaps(6, 16, 24, seed=1), "test": blocky_trimaps(4, 16, 24, seed=2)}
    write_pets_like(folder, trimaps)
    monkeypatch.setitem(D.DATASETS, "oxford_pets", dataclasses.replace(D.DATASETS["oxford_pets"], local=folder))
    return trimaps


def expected_masks(trimaps: np.ndarray, size: int) -> torch.Tensor:
    """Worked by hand for 16 x 24 trimaps of 2x2 blocks and size 8: the shorter side halves (8 x 12,
    one pixel per block), then the centre 8 columns are kept (columns 2..9 of the 12)."""
    assert trimaps.shape[1:] == (16, 24) and size == 8
    halved = trimaps[:, ::2, ::2]                                   # [n, 8, 12]
    mapped = np.vectorize(TRIMAP_TO_CLASS.get)(halved)
    return torch.from_numpy(mapped[:, :, 2:10].astype(np.int64))


def test_pets_by_name_give_masks_with_the_border_ignored(pets):
    train = D.load_image_dataset("oxford_pets", "train", image_size=8)
    assert train.task == "segmentation" and train.classes == ["background", "pet"]
    assert train.images.shape == (6, 3, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.shape == (6, 8, 8)
    assert torch.equal(train.labels, expected_masks(pets["train"], 8))
    assert set(train.labels.unique().tolist()) == {0, 1, IGNORE_INDEX}
    test = D.load_image_dataset("oxford_pets", "test", image_size=8, samples=2, seed=3)
    index = D.subset_index(4, 2, 3)
    assert torch.equal(test.labels, expected_masks(pets["test"], 8)[index])


def test_pets_come_back_from_the_cache_unchanged(pets, tensor_cache):  # noqa: F811 (fixture)
    first = D.load_image_dataset("oxford_pets", "train", image_size=8)
    cached = [p for p in tensor_cache.iterdir() if "masks" in p.name]
    assert cached, "the masks' split was not cached"
    again = D.load_image_dataset("oxford_pets", "train", image_size=8)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    # the same folder read as a classification set by its path is another cache entry, not these masks
    by_path = D.load_image_dataset(str(D.DATASETS["oxford_pets"].local), "train", image_size=8)
    assert by_path.task == "classification" and by_path.labels.shape == (6,)


def test_pets_refuse_other_tasks_and_unknown_mask_values(pets, tmp_path, monkeypatch):
    with pytest.raises(VanEduError, match="class per pixel.*not 'classification'"):
        D.load_image_dataset("oxford_pets", "train", task="classification")
    with pytest.raises(VanEduError, match="not 'detection'"):
        D.load_image_dataset("oxford_pets", "train", task="detection")
    bad = blocky_trimaps(2, 16, 24, seed=4)
    bad[0, 8:10, 12:14] = 7                                      # a block the centre crop keeps
    write_pets_like(tmp_path / "bad", {"train": bad, "test": bad})
    monkeypatch.setitem(D.DATASETS, "oxford_pets", dataclasses.replace(D.DATASETS["oxford_pets"], local=tmp_path / "bad"))
    with pytest.raises(VanEduError, match=r"holds the values \[7\].*expected only \[1, 2, 3\]"):
        D.load_image_dataset("oxford_pets", "train", image_size=8)


def test_missing_pets_folder_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setitem(D.DATASETS, "oxford_pets", dataclasses.replace(D.DATASETS["oxford_pets"], local=tmp_path / "no"))
    with pytest.raises(VanEduError, match=r"missing.*python data/build_oxford_pets.py"):
        D.load_image_dataset("oxford_pets", "train")


# ---------------------------------------------------------------------------------------------
# the builder, on a fake release (the authors' layout: images/, annotations/trimaps/, list files)

def _builder():
    sys.path.insert(0, str(REPO / "data"))
    try:
        import build_oxford_pets
    finally:
        sys.path.pop(0)
    return build_oxford_pets


def test_builder_writes_the_folder_the_loader_reads(tmp_path, monkeypatch, hf_cache):  # noqa: F811 (fixture)
    from PIL import Image

    release = tmp_path / "release"
    (release / "images").mkdir(parents=True)
    (release / "annotations" / "trimaps").mkdir(parents=True)
    names = {"train": ["Abyssinian_1", "beagle_1", "beagle_2"], "test": ["Abyssinian_2", "beagle_3"]}
    trimaps = {}
    rng = np.random.default_rng(0)
    for split, stems in names.items():
        lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids"]
        for stem in stems:
            cat = stem[0].isupper()
            lines.append(f"{stem} {1 if cat else 2} {1 if cat else 2} 1")
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(release / "images" / f"{stem}.jpg")
            trimaps[stem] = blocky_trimaps(1, 16, 16, seed=len(trimaps))[0]
            Image.fromarray(trimaps[stem]).save(release / "annotations" / "trimaps" / f"{stem}.png")
        (release / "annotations" / ("trainval.txt" if split == "train" else "test.txt")).write_text("\n".join(lines))
    (release / "images" / "beagle_2.jpg").write_bytes(b"not a jpeg")          # the release has a few of these
    out = tmp_path / "oxford_pets"
    results = _builder().build(release, out)
    assert [(r["split"], r["rows"], r["skipped"]) for r in results] == [("train", 2, ["beagle_2"]), ("test", 2, [])]
    assert "license: cc-by-sa-4.0" in (out / "README.md").read_text()
    monkeypatch.setitem(D.DATASETS, "oxford_pets", dataclasses.replace(D.DATASETS["oxford_pets"], local=out))
    test = D.load_image_dataset("oxford_pets", "test", image_size=16)
    want = [np.vectorize(TRIMAP_TO_CLASS.get)(trimaps[s]) for s in names["test"]]
    assert torch.equal(test.labels, torch.from_numpy(np.stack(want).astype(np.int64)))


# ---------------------------------------------------------------------------------------------
# the ignored border in training, evaluation and the floors

def test_ignored_pixels_count_nowhere_in_evaluation_and_floors():
    from van_edu.evaluation import evaluate
    from van_edu.metrics import floors

    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    masks = torch.zeros(2, 4, 4, dtype=torch.int64)
    masks[:, :, 2:] = 1                                          # right half: pet
    masks[0, 0, :] = IGNORE_INDEX                                # one row of the first image: border
    data = D.ImageData(images, masks, ["background", "pet"])

    class SaysPet(torch.nn.Module):                              # predicts "pet" everywhere
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
            logits[:, 1] = 1.0
            return logits + self.w

    result = evaluate(SaysPet(), data, batch_size=2)
    # 32 pixels, 4 ignored: 28 labelled, of which 14 are pet (right halves, less the 2 ignored there)
    assert result["accuracy"] == pytest.approx(14 / 28)
    assert result["iou"] == pytest.approx([0.0, 14 / 28])
    f = floors(images, masks, images, masks, 2)
    assert f["background"]["pixel_accuracy"] == pytest.approx(14 / 28)


def test_fit_learns_through_ignored_pixels(pets):
    from van_edu.models import build_model
    from van_edu.train import TrainConfig, fit

    train = D.load_image_dataset("oxford_pets", "train", image_size=16)
    test = D.load_image_dataset("oxford_pets", "test", image_size=16)
    torch.manual_seed(0)
    model = build_model("resnet_mini", train, neck_channels=8, head_channels=8)
    config = TrainConfig(epochs=1, batch_size=3, lr=1e-3, warmup_epochs=0.0, augment="cpu", amp="off",
                         label_smoothing=0.0, device="cpu", progress=False, eval_batch_size=4)
    result = fit(model, train, test, config)
    last = result.history[-1]
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["test_loss"])
    assert 0.0 <= last["test_miou"] <= 1.0 and len(last["test_iou"]) == 2


# ---------------------------------------------------------------------------------------------
# the GPU preset, end to end on the tiny folder (a CPU, one short epoch, smaller photos)

@pytest.mark.slow
def test_segmentation_gpu_preset_runs_on_pets(pets, tmp_path):
    import json

    from van_edu.compare import COMPARE_PRESETS, compare

    preset = COMPARE_PRESETS["segmentation_gpu"]
    assert (preset.dataset, preset.task, preset.image_size) == ("oxford_pets", "segmentation", 128)
    small = dataclasses.replace(preset, image_size=32,
                                overrides={**preset.overrides, "epochs": 1, "warmup_epochs": 0.5, "batch_size": 3,
                                           "progress": False})
    summary = compare(small, tmp_path / "out", device="cpu", log=lambda *_: None)
    runs = summary["runs"]
    assert [r["model"] for r in runs] == ["van_b0", "vit_imagenette", "resnet_imagenette"]
    params = [r["params"] for r in runs]
    assert max(params) <= 1.15 * min(params)                     # the whole segmenters, matched in size
    for r in runs:
        assert r["dataset"] == "oxford_pets" and len(r["test_iou"]) == 2 and 0.0 <= r["test_miou"] <= 1.0
    floors = summary["floors"]
    assert 0.0 <= floors["background"]["miou"] <= 1.0
    assert "mean over the 2 classes" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["setup"]["dataset"] == "oxford_pets"
    assert (tmp_path / "out" / "masks.png").stat().st_size > 1000


def test_cli_train_refuses_boxes_from_pets(pets, capsys, tmp_path):
    from van_edu.cli import main

    assert main(["train", "--dataset", "oxford_pets", "--task", "detection", "--out", str(tmp_path / "x")]) == 2
    assert "'oxford_pets' has masks only (expected --task segmentation)" in capsys.readouterr().err
