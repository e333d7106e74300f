"""The van-edu command: real jobs on tiny data, and bad input answered in one line (no traceback)."""
import json
import subprocess
import sys

import pytest

from van_edu.cli import main


def run_cli(*args, env_offline=True):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"} if env_offline else {}
    import os
    return subprocess.run([sys.executable, "-m", "van_edu", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_table_prints_the_computed_values_beside_the_papers(capsys):
    assert main(["table", "--variants", "van_b0", "--no-macs"]) == 0
    out = capsys.readouterr().out
    assert "4,105,800" in out and "4.1" in out
    assert "451,584" in out and "300,032" in out  # Table 2 at C=32 and C=512


def test_unknown_model_exits_2_naming_the_choices_without_traceback():
    r = run_cli("train", "--model", "van_b9")
    assert r.returncode == 2
    assert "unknown model 'van_b9'" in r.stderr and "van_mini" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_unknown_dataset_offline_names_the_bundled_choice(tmp_path):
    r = run_cli("train", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "Unknown dataset" in r.stderr and "fashion_mnist" in r.stderr and "bundled" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_train_writes_results_and_a_corrupt_checkpoint_on_resume_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "resnet_mini", "--epochs", "1", "--train-samples", "256",
            "--test-samples", "128", "--batch-size", "64", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("model", "params", "macs", "dataset", "epochs", "test_accuracy", "train_seconds",
                "images_per_second", "device", "seed"):
        assert key in results, key
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["params"] > 100_000
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1

    (out / "checkpoint.pt").write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args + ["--resume"]) == 2
    assert "error" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten


def test_bad_numbers_are_argument_errors():
    r = run_cli("train", "--train-samples", "lots")
    assert r.returncode == 2 and "expected a count like 5000" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_compare_writes_the_report_and_exports_assets(tmp_path):
    out, assets = tmp_path / "compare", tmp_path / "assets"
    assert main(["compare", "--train-samples", "256", "--test-samples", "128", "--epochs", "1",
                 "--out", str(out), "--export", str(assets)]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [r["family"] for r in runs] == ["van", "vit", "resnet"]
    for r in runs:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["macs"] > 0 and r["images_per_second"] > 0
    report = (out / "report.md").read_text()
    assert "van_mini" in report and "vit_mini" in report and "resnet_mini" in report
    for png in ("learning_curves.png", "accuracy_vs_params.png", "accuracy_vs_throughput.png"):
        assert (out / png).stat().st_size > 1000 and (assets / png).exists()
    import torch

    from van_edu.data import load_image_dataset
    from van_edu.models import build_model
    data = load_image_dataset("fashion_mnist", "test", samples=8)
    for r in runs:  # the exported weights load strictly into the model the notebooks build
        build_model(r["model"], data).load_state_dict(torch.load(assets / f"{r['model']}.pt", weights_only=True))


def test_compare_segmentation_refuses_a_classification_data_set(capsys, tmp_path):
    assert main(["compare", "--task", "segmentation", "--preset", "cpu", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--task segmentation needs a segmentation data set, but 'fashion_mnist' has a label per image" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_compare_segmentation_writes_miou_floors_masks_and_weights_the_notebook_can_load(tmp_path):
    import torch

    from van_edu.data import load_image_dataset
    from van_edu.models import load_bundled_model
    from van_edu.train import evaluate

    out, assets = tmp_path / "seg", tmp_path / "assets"
    assert main(["compare", "--task", "segmentation", "--train-samples", "128", "--test-samples", "64",
                 "--epochs", "1", "--out", str(out), "--export", str(assets)]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [r["family"] for r in runs] == ["van", "vit", "resnet"]
    for r in runs:
        assert 0.0 <= r["test_miou"] <= 1.0 and len(r["test_iou"]) == 11 and r["task"] == "segmentation"
        assert "examples" not in r and "history" not in r
    params = [r["params"] for r in runs]
    assert max(params) <= 1.15 * min(params)                     # the whole segmenters, matched in size
    floors = results["floors"]
    assert 0.0 < floors["background"]["miou"] < floors["threshold"]["miou"] < 1.0
    report = (out / "report.md").read_text()
    assert "floor: every pixel background" in report and "test mIoU" in report
    for png in ("learning_curves.png", "miou_vs_params.png", "masks.png"):
        assert (out / png).stat().st_size > 1000
    test = load_image_dataset("scattered_garments", "test", samples=64, seed=0)
    for run in runs:                      # the recorded options rebuild each segmenter; its mIoU is the run's
        model = load_bundled_model(run["model"], assets, test)
        assert evaluate(model, test)["miou"] == pytest.approx(run["test_miou"], abs=1e-6)
    assert isinstance(torch.load(assets / "van_mini.pt", weights_only=True), dict)


@pytest.mark.slow
def test_compare_detection_writes_map_and_boxes(tmp_path):
    out = tmp_path / "det"
    assert main(["compare", "--task", "detection", "--train-samples", "96", "--test-samples", "32",
                 "--epochs", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [r["family"] for r in runs] == ["van", "vit", "resnet"]
    for r in runs:
        assert 0.0 <= r["test_map"] <= r["test_map50"] <= 1.0 and r["task"] == "detection"
        assert r["test_accuracy"] is None and "examples" not in r
        assert 0.0 <= r["test_map50_agnostic"] <= 1.0 and len(r["test_ap50"]) == 10
    floor = results["floor"]                      # guesses from the priors: far below a trained detector's
    assert 0.0 <= floor["map"] <= floor["map50"] < 0.05
    report = (out / "report.md").read_text()
    assert "object detection" in report and "test mAP50" in report and "class-agnostic AP50" in report
    assert f"mAP50 {floor['map50']:.3f}" in report
    for png in ("learning_curves.png", "map_vs_params.png", "boxes.png"):
        assert (out / png).stat().st_size > 1000


def test_train_a_detector_and_refuse_a_task_the_data_lacks(tmp_path, capsys):
    out = tmp_path / "det"
    assert main(["train", "--dataset", "scattered_garments", "--task", "detection", "--model", "resnet_mini",
                 "--epochs", "1", "--train-samples", "64", "--test-samples", "32", "--no-progress",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test mAP50" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "detection" and result["config"]["augment"] == "none"     # det_cpu
    assert main(["train", "--task", "detection", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--task detection needs a data set with masks and boxes" in err and "Traceback" not in err
