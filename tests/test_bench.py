"""The bench suite measures what it says: fast and plain LKA agree, the figures are computed from the
timings as documented (checked with a clock whose readings the test chooses), slopes come from real
measurements."""
import pytest
import torch

import van_edu.bench as bench
import van_edu.models
import van_edu.scaling
from van_edu.bench import lka_fast_vs_plain, scaling_figures
from van_edu.cli import main


def test_lka_fast_vs_plain_agree_and_the_row_reports_the_best_times_of_each(monkeypatch):
    """best_time is replaced by a clock that runs the call once, sees which LKA ran, and answers
    that LKA's next chosen duration: the row must hold each path's own fastest run and median,
    and the ratio plain / fast of the fastest ones."""
    ran = []

    class RecordingLKA(bench.LKA):
        def forward(self, x):
            ran.append(self.impl)
            return super().forward(x)

    durations = {"plain": iter([0.004, 0.002, 0.003]), "fast": iter([0.001, 0.0015, 0.0005])}

    def chosen_clock(fn, repeats=1, device=None, warmup=0):
        ran.clear()
        fn()
        assert len(set(ran)) == 1, f"one timed call ran one LKA, got {ran}"
        return next(durations[ran[0]])

    monkeypatch.setattr(bench, "LKA", RecordingLKA)
    monkeypatch.setattr(bench, "best_time", chosen_clock)
    r = lka_fast_vs_plain(batch=4, channels=8, side=9, repeat=3)
    assert r["max_abs_diff_output"] <= 1e-5 and r["max_abs_diff_grad_input"] <= 1e-5
    assert r["max_rel_diff_grad_weights"] <= 1e-4
    assert r["plain_ms"] == pytest.approx(2.0) and r["fast_ms"] == pytest.approx(0.5)
    assert r["speedup"] == pytest.approx(4.0)
    assert r["plain_median_ms"] == pytest.approx(3.0) and r["fast_median_ms"] == pytest.approx(1.0)
    assert next(durations["plain"], None) is None and next(durations["fast"], None) is None, \
        "repeat=3 times each path three times"


def test_train_speed_turns_each_models_fastest_step_into_images_per_second(monkeypatch):
    ran = []
    real_create_model = van_edu.models.create_model

    def recording_create_model(name, **kw):
        model = real_create_model(name, **kw)
        model.register_forward_pre_hook(lambda m, args, impl=kw["lka_impl"]: ran.append(impl))
        return model

    durations = {"plain": iter([0.2, 0.1]), "auto": iter([0.05, 0.08])}

    def chosen_clock(fn, repeats=1, device=None, warmup=0):
        ran.clear()
        fn()
        assert len(set(ran)) == 1
        return next(durations[ran[0]])

    monkeypatch.setattr(van_edu.models, "create_model", recording_create_model)
    monkeypatch.setattr(bench, "best_time", chosen_clock)
    r = bench.train_speed(stem_stride=2, steps=2, batch=4)
    assert r["first_loss_diff"] < 1e-5                     # same weights, same batch, same loss
    assert r["plain_img_per_s"] == pytest.approx(4 / 0.1) and r["auto_img_per_s"] == pytest.approx(4 / 0.05)
    assert r["plain_img_per_s_median"] == pytest.approx(4 / 0.15)
    assert r["auto_img_per_s_median"] == pytest.approx(4 / 0.065)
    assert r["speedup"] == pytest.approx(2.0)


@pytest.mark.parametrize("n", [16, 64])
def test_matmul_rate_counts_two_n_cubed_flops_per_product(monkeypatch, n):
    """An n x n product is n^2 dot products of length n: n^3 multiplies and n^3 adds."""
    seen = []

    def chosen_clock(fn, repeats=5, device=None, warmup=1):
        seen.append(fn())
        return 0.25

    monkeypatch.setattr(bench, "best_time", chosen_clock)
    assert bench.matmul_rate(n=n, repeats=2) == pytest.approx(2 * n ** 3 / 0.25)
    assert seen[0].shape == (n, n) and seen[0].dtype == torch.float32


def test_the_efficiency_figure_counts_six_multiply_adds_per_image_against_the_best_matmul_rate(monkeypatch):
    """Training throughput, inference throughput and the matmul rate are chosen by the test: the
    rows must hold each model's best training step, 6 x MACs x images/s as FLOP/s, and that over
    the best matrix-product rate measured."""
    from van_edu.complexity import count_macs
    from van_edu.models import DEMO_MODELS, create_model

    train_runs = {"VAN": iter([100.0, 300.0, 200.0]), "ViT": iter([50.0, 40.0, 60.0]),
             "ResNet": iter([500.0, 700.0, 600.0])}
    inference = {"VAN": 1000.0, "ViT": 2000.0, "ResNet": 3000.0}
    best_train = {"VAN": 300.0, "ViT": 60.0, "ResNet": 700.0}

    def chosen_throughput(model, input_size, batch_size=128, train=False, steps=5, warmup=2, **kw):
        kind = type(model).__name__
        return next(train_runs[kind]) if train else inference[kind]

    rates = iter([3e10, 2e10])
    monkeypatch.setattr(van_edu.scaling, "throughput", chosen_throughput)
    monkeypatch.setattr(bench, "matmul_rate", lambda *a, **k: next(rates))
    rows = bench.demo_throughput(batch=8, steps=3)
    assert [r["model"] for r in rows] == list(DEMO_MODELS) == ["van_mini", "vit_mini", "resnet_mini"]
    for r, kind in zip(rows, ["VAN", "ViT", "ResNet"]):
        kw = {"image_size": 28} if kind == "ViT" else {}
        macs = count_macs(create_model(r["model"], num_classes=10, in_chans=1, **kw), (1, 1, 28, 28))
        assert r["macs_per_image"] == macs
        assert r["train_img_per_s"] == best_train[kind]
        assert r["inference_img_per_s"] == inference[kind]
        assert r["train_gflop_per_s"] == pytest.approx(6 * macs * best_train[kind] / 1e9)
        assert r["matmul_fp32_gflop_per_s"] == pytest.approx(30.0)
        assert r["fraction_of_matmul_fp32"] == pytest.approx(6 * macs * best_train[kind] / 3e10)


def test_scaling_fits_one_slope_per_method():
    s = scaling_figures(sizes=(8, 16), channels=4, repeats=1)
    assert set(s["slopes"]) == {"LKA", "dense 21x21 DW conv", "self-attention"}
    assert len(s["rows"]) == 6
    # the explicit attention matrix grows as pixels^2: its memory slope is well above LKA's
    assert s["slopes"]["self-attention"]["memory"] > s["slopes"]["LKA"]["memory"] + 0.5


def test_bench_rejects_a_bad_repeat(capsys):
    assert main(["bench", "--repeat", "0"]) == 2
    assert "argument --repeat: expected a whole number >= 1, got '0'" in capsys.readouterr().err
