"""The bench suite measures what it says: fast and plain LKA agree, slopes come from real timings."""
import pytest

from van_edu.bench import lka_fast_vs_plain, scaling_figures
from van_edu.cli import main


def test_lka_fast_vs_plain_row_is_consistent():
    r = lka_fast_vs_plain(batch=4, channels=8, side=9, repeat=1)
    assert r["max_abs_diff_output"] <= 1e-5 and r["max_abs_diff_grad_input"] <= 1e-5
    assert r["plain_ms"] > 0 and r["fast_ms"] > 0
    assert abs(r["speedup"] - r["plain_ms"] / r["fast_ms"]) < 1e-9


def test_scaling_fits_one_slope_per_method():
    s = scaling_figures(sizes=(8, 16), channels=4, repeats=1)
    assert set(s["slopes"]) == {"LKA", "dense 21x21 DW conv", "self-attention"}
    assert len(s["rows"]) == 6
    # the explicit attention matrix grows as pixels^2: its memory slope is well above LKA's
    assert s["slopes"]["self-attention"]["memory"] > s["slopes"]["LKA"]["memory"] + 0.5


def test_bench_rejects_a_bad_repeat(capsys):
    assert main(["bench", "--repeat", "0"]) == 2
    assert "argument --repeat: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_the_efficiency_figure_counts_six_multiply_adds_per_image_against_the_measured_matmul_rate():
    from van_edu.bench import demo_throughput, matmul_rate
    from van_edu.complexity import count_macs
    from van_edu.models import create_model

    assert matmul_rate(n=256, repeats=2) > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s
    rows = demo_throughput(batch=8, steps=1)
    assert [r["model"] for r in rows] == ["van_mini", "vit_mini", "resnet_mini"]
    van = rows[0]
    assert van["macs_per_image"] == count_macs(create_model("van_mini", num_classes=10, in_chans=1), (1, 1, 28, 28))
    for r in rows:
        flops = 6 * r["macs_per_image"] * r["train_img_per_s"]
        assert r["train_gflop_per_s"] == pytest.approx(flops / 1e9)
        assert r["fraction_of_matmul_fp32"] == pytest.approx(flops / (r["matmul_fp32_gflop_per_s"] * 1e9))
        assert 0 < r["fraction_of_matmul_fp32"] < 1.5
