"""The GPU check (benchmarks/gpu_check.py) runs its dry run on the CPU, so it cannot rot unseen."""
import json

import pytest
from benchmark_scripts import load_benchmark


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_its_figures(tmp_path, capsys):
    gpu_check = load_benchmark("gpu_check")
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry-run", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["dry_run"] is True and report["machine"]["device"] == "cpu"
    statuses = {row["check"]: row["status"] for row in report["checks"]}
    assert set(statuses) == set(gpu_check.CHECKS)
    assert "failed" not in statuses.values()
    # What a CPU can run, it runs: only the CUDA-only scaler and the slow compile are skipped.
    assert {name for name, s in statuses.items() if s == "skipped"} == {"fp16_autocast_scaler", "compile"}
    assert report["lka"] and all(row["relative_difference"] < 1e-5 for row in report["lka"])
    assert [row["model"] for row in report["training"]] == ["van_mini", "vit_mini", "resnet_mini"]
    assert all(0.0 <= row["test_accuracy"] <= 1.0 and row["images_per_second"] > 0 for row in report["training"])
    assert "no check failed" in capsys.readouterr().out


def test_without_a_gpu_it_asks_for_the_dry_run(capsys):
    gpu_check = load_benchmark("gpu_check")
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "--dry-run" in capsys.readouterr().err
