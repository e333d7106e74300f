"""van_edu.scaling: the meters and fits behind notebooks 01 and 04 and ``van-edu bench``, on inputs
whose answer is known (fast: tiny modules, one repeat)."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from van_edu.complexity import count_macs
from van_edu.errors import VanEduError
from van_edu.scaling import (
    LiveTensorMeter,
    fit_slope,
    measure_scaling,
    peak_memory,
    plain_lka,
    scaling_modules,
    throughput,
)


def test_live_tensor_meter_counts_peak_and_frees():
    with LiveTensorMeter() as meter:
        a = torch.ones(1000, 1000)      # 4 MB
        b = a * 2                       # 8 MB live
        del a
        c = b + 1                       # 8 MB again
        view = c[:10]                   # a view: no new storage
    assert meter.peak == 8_000_000 and meter.current == 8_000_000
    del b, c, view
    assert meter.current == 0


def test_peak_memory_on_the_cpu_is_the_meters():
    peak, kind = peak_memory(lambda: torch.ones(250, 1000) * 2)   # two 1 MB tensors, one freed early
    assert peak == 2_000_000 and "live tensors" in kind


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 3.0])
def test_fit_slope_recovers_exact_powers(power):
    xs = [1, 2, 4, 8, 16]
    assert abs(fit_slope(xs, [3 * x ** power for x in xs]) - power) < 1e-12


def test_fit_slope_and_its_bad_input():
    assert abs(fit_slope([1, 2, 4, 8], [3, 12, 48, 192]) - 2.0) < 1e-12
    with pytest.raises(VanEduError, match="two different x values"):
        fit_slope([4, 4], [1, 2])


def test_scaling_modules_are_the_four_of_notebook_04():
    modules = scaling_modules(8)
    assert list(modules) == ["LKA", "dense 21x21 DW conv", "self-attention", "self-attention (fused)"]
    assert modules["LKA"].impl == "plain" and plain_lka(8, 7, 2).decomp.kernel_size == 7
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        explicit = modules["self-attention"]
        fused = modules["self-attention (fused)"]
        fused.load_state_dict(explicit.state_dict())
        torch.testing.assert_close(fused(x), explicit(x), atol=1e-5, rtol=1e-5)


def test_measure_scaling_rows_and_their_counts():
    c = 4
    modules = {"self-attention": scaling_modules(c)["self-attention"], "conv": nn.Conv2d(c, c, 3, padding=1)}
    rows = measure_scaling(modules, sizes=(4, 8), channels=c, batch=2, repeats=1)
    assert [(r["method"], r["size"], r["pixels"]) for r in rows] == [
        ("self-attention", 4, 16), ("self-attention", 8, 64), ("conv", 4, 16), ("conv", 8, 64)]
    for r in rows:
        n = r["pixels"]
        assert r["seconds"] > 0 and r["peak_bytes"] > 0
        # FLOPs of the batch = 2 per multiply-add that count_macs counts, biases included
        assert r["flops"] == 2 * 2 * count_macs(modules[r["method"]], (1, c, r["size"], r["size"]))
        if r["method"] == "self-attention":   # Q, K, V and output projections, Q K^T and A V, biases
            assert r["flops"] == 2 * 2 * (4 * n * c * c + 2 * n * n * c + 4 * n * c)
        else:                                  # 3x3 taps on all channels, plus the bias
            assert r["flops"] == 2 * 2 * n * c * (9 * c + 1)
    assert all(r["flops"] is None for r in measure_scaling(modules, (4,), c, repeats=1, count_flops_too=False))
    with pytest.raises(VanEduError, match="repeats must be at least 1"):
        measure_scaling(modules, (4,), c, repeats=0)


class TimedModel(nn.Module):
    """A model whose forward pass takes 10 ms and backward pass 30 ms on a clock the test holds,
    recording the batch shape, the mode and whether autograd was on."""

    def __init__(self, now):
        super().__init__()
        self.now, self.seen = now, []
        self.linear = nn.Linear(64, 3)
        self.linear.weight.register_hook(self._backward)

    def _backward(self, grad):
        self.now[0] += 0.03

    def forward(self, x):
        self.now[0] += 0.01
        self.seen.append((tuple(x.shape), self.training, torch.is_grad_enabled()))
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("train,seconds_per_step", [(False, 0.01), (True, 0.04)])
def test_throughput_is_timed_images_over_timed_seconds(monkeypatch, train, seconds_per_step):
    """5 timed steps of batch 4 after 2 untimed warm-ups: 20 images in 5 steps' time. Counting the
    warm-ups, forgetting the batch size or (training) skipping the backward would change it."""
    import van_edu.scaling as scaling

    now = [10.0]
    monkeypatch.setattr(scaling, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    model = TimedModel(now)
    assert throughput(model, (1, 1, 8, 8), batch_size=4, steps=5, warmup=2, train=train) == \
        pytest.approx(20 / (5 * seconds_per_step))
    assert model.seen == [((4, 1, 8, 8), train, train)] * 7      # every call: batch, mode, autograd
    assert all(p.grad is None for p in model.parameters()), "gradients are not left behind"
    with pytest.raises(VanEduError, match="steps must be at least 1"):
        throughput(model, (1, 1, 8, 8), steps=0)
