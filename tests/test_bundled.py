"""van_edu.models.bundled and build_model: the trained models bundled for notebooks 07 and 08 still
load into the models built for Fashion-MNIST, and a wrong file is refused with a clear error."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.models import DEMO_MODELS, build_model, load_bundled_model

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "notebooks" / "assets" / "compare"
BUNDLED_MODELS = ("van_mini", "vit_mini", "resnet_mini")


def test_build_model_reads_only_the_datas_classes_channels_and_size():
    data = SimpleNamespace(num_classes=7, in_chans=1, image_size=32)
    vit = build_model("vit_mini", data, depth=2)
    assert (vit.config.num_classes, vit.config.in_chans, vit.config.image_size, vit.config.depth) == (7, 1, 32, 2)
    van = build_model("van_mini", data)
    assert (van.config.num_classes, van.config.in_chans) == (7, 1)
    assert van(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert DEMO_MODELS == BUNDLED_MODELS


def test_load_bundled_model_refuses_a_wrong_file(tmp_path):
    from van_edu.data import load_image_dataset
    from van_edu.models import create_model

    data = load_image_dataset("fashion_mnist", "train", samples=16)
    with pytest.raises(VanEduError, match="no trained weights"):
        load_bundled_model("van_mini", tmp_path, data)
    torch.save(create_model("resnet_mini", num_classes=10, in_chans=1).state_dict(), tmp_path / "van_mini.pt")
    with pytest.raises(VanEduError, match="does not fit"):
        load_bundled_model("van_mini", tmp_path, data)
    torch.save(create_model("van_mini", num_classes=10, in_chans=1).state_dict(), tmp_path / "van_mini.pt")
    assert not load_bundled_model("van_mini", tmp_path, data).training


# --- The trained models bundled for notebooks 07 and 08 ------------------------------------------
# The repository ships them (made by `van-edu compare --seeds 0 1 2 --export notebooks/assets/compare`,
# see notebooks/assets/compare/README.md), so a missing file is a failure, not a skip.
@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_checkpoints_load_strictly_and_reproduce_their_recorded_accuracy(name):
    """Fails when notebooks/assets/compare/<name>.pt no longer fits build_model(name, Fashion-MNIST)
    (e.g. after an architecture change), or when the weights are not the ones whose test accuracy
    results.json records for seed 0 (evaluated again on the whole test split)."""
    from van_edu.data import load_image_dataset
    from van_edu.train import evaluate

    path = ASSETS / f"{name}.pt"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: notebooks 07 and 08 would train stand-ins"
    model = build_model(name, load_image_dataset("fashion_mnist", "train", samples=16))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    recorded = next(r for r in json.loads((ASSETS / "results.json").read_text())["runs"]
                    if r["model"] == name and r["seed"] == 0)
    measured = evaluate(model, load_image_dataset("fashion_mnist", "test"))["accuracy"]
    assert abs(measured - recorded["test_accuracy"]) <= 0.001, (name, measured, recorded["test_accuracy"])


def test_bundled_results_have_the_fields_the_notebooks_read_and_match_the_code():
    from van_edu.complexity import count_params
    from van_edu.data import load_image_dataset

    results = json.loads((ASSETS / "results.json").read_text())
    fields = {"model", "family", "params", "macs", "latency_ms", "test_accuracy", "train_seconds",
              "images_per_second", "seed", "epochs", "train_samples", "test_samples"}
    assert results["runs"] and all(fields <= run.keys() for run in results["runs"])
    assert {run["model"] for run in results["runs"]} == set(BUNDLED_MODELS)
    data = load_image_dataset("fashion_mnist", "train", samples=16)
    for name in BUNDLED_MODELS:
        assert {r["params"] for r in results["runs"] if r["model"] == name} == {count_params(build_model(name, data))}
        rows = json.loads((ASSETS / f"history-{name}.json").read_text())
        assert rows and {"epoch", "train_loss", "test_accuracy"} <= rows[0].keys()


# --- The segmenters bundled for notebook 10 ------------------------------------------------------
# Made by `van-edu compare --task segmentation --seeds 0 1 2 --export notebooks/assets/segmentation`
# (notebooks/assets/segmentation/README.md).
SEG_ASSETS = ROOT / "notebooks" / "assets" / "segmentation"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_segmenters_load_with_their_recorded_options_and_reproduce_their_miou(name):
    """Fails when notebooks/assets/segmentation/<name>.pt no longer fits the segmenter that
    build_model makes with the options results.json records (an FPN or backbone change), or when
    the weights are not those whose seed-0 test mIoU results.json records (all test canvases)."""
    from van_edu.data import load_image_dataset
    from van_edu.train import evaluate

    path = SEG_ASSETS / f"{name}.pt"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: notebook 10 would train stand-ins"
    model = load_bundled_model(name, SEG_ASSETS, load_image_dataset("scattered_garments", "train", samples=16))
    recorded = next(r for r in json.loads((SEG_ASSETS / "results.json").read_text())["runs"]
                    if r["model"] == name and r["seed"] == 0)
    measured = evaluate(model, load_image_dataset("scattered_garments", "test"))["miou"]
    assert abs(measured - recorded["test_miou"]) <= 0.001, (name, measured, recorded["test_miou"])


def test_bundled_segmentation_results_are_the_presets_three_seeds_and_match_the_code():
    from van_edu.compare import COMPARE_PRESETS
    from van_edu.complexity import count_params
    from van_edu.data import load_image_dataset

    setup = COMPARE_PRESETS["segmentation"]
    results = json.loads((SEG_ASSETS / "results.json").read_text())
    runs = results["runs"]
    assert {(r["model"], r["seed"]) for r in runs} == {(m, s) for m in setup.models for s in (0, 1, 2)}
    assert all(0 <= r["test_miou"] <= 1 and len(r["test_iou"]) == 11 for r in runs)
    assert all(r["config"]["epochs"] == setup.train_config(0).epochs for r in runs)
    data = load_image_dataset("scattered_garments", "train", samples=16)
    for name in setup.models:
        options = {r["model"]: r["model_options"] for r in runs}[name]
        assert options == json.loads(json.dumps(setup.model_options(name)))   # the preset's, as JSON holds it
        assert {r["params"] for r in runs if r["model"] == name} == {count_params(build_model(name, data, **options))}
        rows = json.loads((SEG_ASSETS / f"history-{name}.json").read_text())
        assert len(rows) == setup.train_config(0).epochs and "test_miou" in rows[0]
    assert results["floors"]["background"]["miou"] < 0.1


# --- The detectors bundled for notebook 11 -------------------------------------------------------
# Made by `van-edu compare --task detection --seeds 0 1 2 --export notebooks/assets/detection`
# (notebooks/assets/detection/README.md).
DET_ASSETS = ROOT / "notebooks" / "assets" / "detection"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_detectors_load_with_their_recorded_options_and_reproduce_their_map(name):
    """Fails when notebooks/assets/detection/<name>.pt no longer fits the detector that build_model
    makes with the options results.json records, or when the weights are not those whose seed-0
    test mAP50 and mAP results.json records (all test canvases)."""
    from van_edu.data import load_image_dataset
    from van_edu.train import evaluate

    path = DET_ASSETS / f"{name}.pt"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: notebook 11 would train stand-ins"
    model = load_bundled_model(name, DET_ASSETS, load_image_dataset("scattered_garments", "train", samples=16,
                                                                    task="detection"))
    recorded = next(r for r in json.loads((DET_ASSETS / "results.json").read_text())["runs"]
                    if r["model"] == name and r["seed"] == 0)
    measured = evaluate(model, load_image_dataset("scattered_garments", "test", task="detection"))
    assert abs(measured["map50"] - recorded["test_map50"]) <= 0.001, (name, measured["map50"], recorded["test_map50"])
    assert abs(measured["map"] - recorded["test_map"]) <= 0.001, (name, measured["map"], recorded["test_map"])


def test_bundled_detection_results_are_the_presets_three_seeds_and_match_the_code():
    from van_edu.compare import COMPARE_PRESETS
    from van_edu.complexity import count_params
    from van_edu.data import load_image_dataset

    setup = COMPARE_PRESETS["detection"]
    results = json.loads((DET_ASSETS / "results.json").read_text())
    runs = results["runs"]
    assert {(r["model"], r["seed"]) for r in runs} == {(m, s) for m in setup.models for s in (0, 1, 2)}
    assert all(0 <= r["test_map"] <= r["test_map50"] <= 1 and 0 <= r["test_map50_agnostic"] <= 1 for r in runs)
    assert all(r["config"]["epochs"] == setup.train_config(0).epochs for r in runs)
    data = load_image_dataset("scattered_garments", "train", samples=16, task="detection")
    for name in setup.models:
        options = {r["model"]: r["model_options"] for r in runs}[name]
        assert options == json.loads(json.dumps(setup.model_options(name)))   # the preset's, as JSON holds it
        assert {r["params"] for r in runs if r["model"] == name} == {count_params(build_model(name, data, **options))}
        rows = json.loads((DET_ASSETS / f"history-{name}.json").read_text())
        assert len(rows) == setup.train_config(0).epochs and "test_map50" in rows[0]
    assert results["floor"]["map50"] < 0.05 < min(r["test_map50"] for r in runs)
