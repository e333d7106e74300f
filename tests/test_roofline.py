"""The roofline's counter against operators counted by hand, and the triad's arithmetic."""
import pytest
import torch
import torch.nn.functional as F

import van_edu.roofline as roofline
from van_edu.models import create_model
from van_edu.roofline import OpCounter, count_training_step


def counted(fn):
    with OpCounter() as counter:
        fn()
    return counter.ops


def test_a_matrix_product():
    a, b = torch.randn(64, 128), torch.randn(128, 256)
    op = counted(lambda: a @ b)["aten::mm"]
    assert op.calls == 1 and op.flops == 2 * 64 * 128 * 256
    assert op.bytes == 4 * (64 * 128 + 128 * 256 + 64 * 256)          # both inputs read, the output written


def test_a_depthwise_conv_forward_and_backward():
    """The figures the issue quotes: 28.9 MFLOP forward, 57.8 MFLOP for the input and weight
    gradients (PyTorch 2.13's FlopCounterMode says 3,728 for the backward)."""
    x = torch.randn(64, 128, 14, 14, requires_grad=True)
    w = torch.randn(128, 1, 3, 3, requires_grad=True)
    b = torch.randn(128, requires_grad=True)
    fwd = 2 * 64 * 128 * 14 * 14 * 9
    with OpCounter() as counter:
        y = F.conv2d(x, w, b, padding=1, groups=128)
        y.backward(torch.ones_like(y))
    ops = counter.ops
    assert ops["aten::convolution"].flops == fwd == 28_901_376
    assert ops["aten::convolution"].bytes == 4 * (x.numel() + w.numel() + b.numel() + y.numel())
    assert ops["aten::convolution_backward"].flops == 2 * fwd + y.numel()   # + the bias gradient's sums
    assert 2 * fwd == 57_802_752
    # the package's counter disagrees with PyTorch's, which is why it has its own formula
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as theirs:
        F.conv2d(x, w, b, padding=1, groups=128).backward(torch.ones_like(y))
    assert theirs.get_total_flops() > 10 * (3 * fwd)


def test_element_wise_views_and_in_place():
    x = torch.randn(1000)
    ops = counted(lambda: F.gelu(x))
    assert ops["aten::gelu"].flops == 1000 and ops["aten::gelu"].bytes == 2 * 4000   # read once, written once
    m = torch.randn(30, 40)
    assert counted(lambda: m.t().permute(1, 0).view(-1)) == {}           # views move nothing
    y = torch.randn(1000)
    ops = counted(lambda: y.add_(x))
    assert ops["aten::add_"].bytes == 3 * 4000                           # two read, one written (in place)


def test_the_triad_counts_three_arrays_per_run(monkeypatch):
    ticks = iter([0.0, 1.0] + [10.0, 10.5] * 3)                          # warm-up 1 s, then 0.5 s each
    monkeypatch.setattr(roofline.time, "perf_counter", lambda: next(ticks))
    bw = roofline.triad_bandwidth(megabytes=4, repeats=3)
    n = 4 * 2**20 // 4
    assert bw == pytest.approx(3 * n * 4 / 0.5)                          # b and c read, a written


def test_the_step_is_counted_on_the_path_it_runs():
    torch.manual_seed(0)
    model = create_model("van_mini", num_classes=10, in_chans=1)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    ops, unavoidable = count_training_step(model, x, y)
    lkas = model.lka_modules()
    assert all(lka.last_path == "fast" for lka in lkas)                 # the counter only counts
    assert {"aten::convolution_backward", "aten::bmm", "aten::addcdiv_"} <= set(ops)   # the fast LKA's products, AdamW
    assert all(name.startswith("aten::") for name in ops)
    params = sum(p.numel() for p in model.parameters())
    assert unavoidable["parameters"] == 6 * 4 * params
    assert unavoidable["input"] == x.numel() * 4 + y.numel() * 8
    assert sum(op.flops for op in ops.values()) > 3 * 2 * 4 * 19_600_000 * 0.9   # ~3x the forward's MACs x 2


def test_the_table_orders_by_time_lost_and_the_profiler_counts_each_op_once():
    from van_edu.roofline import OpCount, measured_op_seconds, roofline_table

    ops = {"a": OpCount("a", 1, flops=10**9, bytes=10**6), "b": OpCount("b", 1, flops=10**3, bytes=10**9)}
    rows = roofline_table(ops, {"a": 0.02, "b": 0.5}, peak=10**11, bandwidth=10**10)
    assert [r["op"] for r in rows] == ["b", "a"]                       # b loses 0.4 s, a 0.01 s
    assert rows[0]["bound"] == "memory" and rows[0]["roofline_s"] == pytest.approx(0.1)
    assert rows[1]["bound"] == "compute" and rows[1]["fraction"] == pytest.approx(0.01 / 0.02)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(8 * 26 * 26, 10))
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    ops, _ = count_training_step(model, x, y)
    seconds = measured_op_seconds(model, x, y, ops, steps=2)
    assert set(seconds) <= set(ops) and "aten::convolution" in seconds and "aten::addmm" in seconds
    assert "aten::conv2d" not in seconds and "aten::mkldnn_convolution" not in seconds   # above and inside
    assert all(t > 0 for t in seconds.values())


def test_fused_cpu_attention_is_counted_as_its_matrix_products():
    q, k, v = (torch.randn(2, 4, 49, 32, requires_grad=True) for _ in range(3))
    with OpCounter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 2 * (2 * 4 * 49 * 49 * 32) * 2                               # Q K^T, then A V: 2 FLOPs per MAC
    names = {n: op.flops for n, op in counter.ops.items() if "attention" in n}
    assert sorted(names.values()) == [forward, 2 * forward], names


def test_a_steps_roofline_adds_up():
    from van_edu.roofline import step_roofline

    torch.manual_seed(0)
    model = create_model("resnet_mini", num_classes=10, in_chans=1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    r = step_roofline(model, x, y, peak=1e11, bandwidth=1e10, steps=1)
    assert r["unfused_roofline_s"] == pytest.approx(sum(row["roofline_s"] for row in r["operators"]))
    assert r["fused_bound_s"] <= r["unfused_roofline_s"]              # fusing only removes traffic
    assert r["fused_bound_s"] >= r["flops"] / 1e11                     # never below the FLOPs at peak
    assert r["fraction_of_unfused"] == pytest.approx(r["unfused_roofline_s"] / r["measured_s"])
    lost = [row["measured_s"] - row["roofline_s"] for row in r["operators"]]
    assert lost == sorted(lost, reverse=True)
