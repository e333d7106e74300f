"""The bench suite measures what it says: fast and plain LKA agree, slopes come from real timings."""
from van_edu.bench import lka_fast_vs_plain, scaling
from van_edu.cli import main


def test_lka_fast_vs_plain_row_is_consistent():
    r = lka_fast_vs_plain(batch=4, channels=8, side=9, repeat=1)
    assert r["max_abs_diff_output"] <= 1e-5 and r["max_abs_diff_grad_input"] <= 1e-5
    assert r["plain_ms"] > 0 and r["fast_ms"] > 0
    assert abs(r["speedup"] - r["plain_ms"] / r["fast_ms"]) < 1e-9


def test_scaling_fits_one_slope_per_method():
    s = scaling(sizes=(8, 16), channels=4, repeats=1)
    assert set(s["slopes"]) == {"LKA", "dense 21x21 DW conv", "self-attention"}
    assert len(s["rows"]) == 6
    # the explicit attention matrix grows as pixels^2: its memory slope is well above LKA's
    assert s["slopes"]["self-attention"]["memory"] > s["slopes"]["LKA"]["memory"] + 0.5


def test_bench_rejects_a_bad_repeat(capsys):
    assert main(["bench", "--repeat", "0"]) == 2
    assert "argument --repeat: expected a whole number >= 1, got '0'" in capsys.readouterr().err
