"""van_edu.report and van_edu.stats: the comparison's summary and report from given runs (no
training here; tests/test_cli.py runs a real comparison end to end)."""
import json

import pytest

from van_edu.errors import VanEduError
from van_edu.report import export_assets, read_assets, summarise, write_report
from van_edu.stats import mean_std


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and abs(std - (5 / 3) ** 0.5) < 1e-15    # n - 1 = 3 in the denominator
    assert mean_std(x for x in (1.0, 3.0)) == (2.0, 2 ** 0.5)   # any iterable


def _run(model, family, seed, accuracy):
    return {"model": model, "family": family, "params": 1000 if family == "van" else 1100, "macs": 2_500_000,
            "test_accuracy": accuracy, "images_per_second": 100.0 + seed, "train_seconds": 10.0,
            "latency_ms": 2.0, "seed": seed, "dataset": "fashion_mnist", "train_samples": 256,
            "test_samples": 128, "epochs": 1, "device": "cpu", "machine": "a CPU, 2 threads",
            "config": {"batch_size": 64, "lr": 0.004, "weight_decay": 0.05, "warmup_epochs": 0.5,
                       "label_smoothing": 0.1, "augment": "cpu"},
            "history": [{"epoch": 1, "test_accuracy": accuracy}]}


RUNS = [_run("van_mini", "van", 0, 0.90), _run("van_mini", "van", 1, 0.92), _run("resnet_mini", "resnet", 0, 0.89)]


def test_summarise_gives_one_row_per_model_with_the_spread_over_seeds():
    rows = summarise(RUNS)
    assert [r["model"] for r in rows] == ["van_mini", "resnet_mini"]
    van = rows[0]
    assert van["seeds"] == 2 and abs(van["accuracy"] - 91.0) < 1e-9
    assert abs(van["accuracy_std"] - 2 ** 0.5) < 1e-9 and van["images_per_second"] == 100.5
    assert van["mmacs"] == 2.5 and rows[1]["accuracy_std"] == 0.0


def test_write_report_writes_the_report_plots_and_results_without_histories(tmp_path):
    summary = {"setup": {"dataset": "fashion_mnist"}, "runs": RUNS, "wall_seconds": 90.0}
    report = write_report(summary, tmp_path)
    text = report.read_text()
    assert "| van_mini | 1,000 | 2.5 | 91.00 ± 1.41 (n=2) |" in text
    assert "| resnet_mini | 1,100 | 2.5 | 89.00 (n=1) |" in text
    assert "the largest model has 10% more parameters than the smallest" in text
    assert "Wall time of the whole comparison: 1.5 min." in text
    for png in ("learning_curves.png", "accuracy_vs_params.png", "accuracy_vs_throughput.png"):
        assert (tmp_path / png).stat().st_size > 1000
    stored = json.loads((tmp_path / "results.json").read_text())
    assert len(stored["runs"]) == 3 and not any("history" in r for r in stored["runs"])


def test_export_assets_needs_a_finished_comparison(tmp_path):
    with pytest.raises(VanEduError, match="results.json does not exist"):
        export_assets(tmp_path / "nothing", tmp_path / "assets")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    with pytest.raises(VanEduError, match="is not the results.json of a comparison"):
        export_assets(broken, tmp_path / "assets")
    (broken / "results.json").write_text('{"runs": [{"model": "van_mini"}]}')
    with pytest.raises(VanEduError, match="lacks report.md, van_mini-seed0/checkpoint.pt"):
        export_assets(broken, tmp_path / "assets")
    with pytest.raises(VanEduError, match="own folder"):
        export_assets(broken, broken)
    assert not (tmp_path / "assets").exists()


def test_read_assets_puts_seed_0s_histories_back_into_its_runs(tmp_path):
    runs = [{"model": "van_mini", "seed": 0}, {"model": "van_mini", "seed": 1}, {"model": "vit_mini", "seed": 0}]
    (tmp_path / "results.json").write_text(json.dumps({"runs": runs, "wall_seconds": 60.0}))
    (tmp_path / "history-van_mini.json").write_text('[{"epoch": 1, "test_accuracy": 0.5}]')
    results = read_assets(tmp_path)                   # vit_mini has no history file: left without one
    assert results["wall_seconds"] == 60.0
    assert [r.get("history") for r in results["runs"]] == [[{"epoch": 1, "test_accuracy": 0.5}], None, None]
    assert [r.get("history") is not None for r in read_assets(tmp_path, seed=1)["runs"]] == [False, True, False]
