"""benchmarks/block_alternatives.py: its rewrites compute the package's block (so its timings
compare the same function), and the script runs end to end on tiny sizes."""
import copy
import re

import pytest
import torch
from benchmark_scripts import load_benchmark

from van_edu.models import create_model

alt = load_benchmark("block_alternatives")


@pytest.mark.parametrize("variant", ["folded", "chunked"])
@pytest.mark.parametrize("batch, channels, side", [(3, 32, 14), (1, 16, 5), (5, 64, 7)])
def test_rewrite_equals_the_block_in_training(variant, batch, channels, side):
    torch.manual_seed(1)
    ref = alt.make_block(channels, seed=batch)
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
    d = alt.differences(copy.deepcopy(ref), alt.rewrite(ref, variant), x)
    assert d["output"] <= 1e-5 and d["input_grad"] <= 1e-5
    assert d["param_grad_rel"] <= 1e-4
    assert d["running_stats"] <= 1e-6


def test_folded_block_updates_batchnorm_as_batchnorm_does():
    ref = alt.make_block(32)
    folded = alt.rewrite(ref, "folded")
    x = torch.randn(4, 32, 6, 6).contiguous(memory_format=torch.channels_last)
    for _ in range(2):                                   # two steps: momentum applied twice
        ref(x)
        folded(x)
    for name in ("norm1", "norm2"):
        a, b = getattr(ref, name), getattr(folded, name)
        assert int(b.num_batches_tracked) == int(a.num_batches_tracked) == 2
        torch.testing.assert_close(b.running_mean, a.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b.running_var, a.running_var, atol=1e-6, rtol=1e-5)
        assert not torch.equal(a.running_var, torch.ones_like(a.running_var))   # they did move


def test_folded_block_in_eval_mode_uses_the_running_statistics():
    ref = alt.make_block(32)
    ref(torch.randn(8, 32, 6, 6))                        # running statistics away from 0 and 1
    ref.eval()
    folded = alt.rewrite(ref, "folded").eval()
    x = torch.randn(2, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), ref(x), atol=1e-5, rtol=1e-5)


def test_a_wrong_fold_would_be_seen():
    """The check is not blind: a block whose layer scale is off by 1% differs beyond the tolerance."""
    ref = alt.make_block(32)
    other = alt.rewrite(ref, "folded")
    with torch.no_grad():
        other.layer_scale_2.mul_(1.01)
    d = alt.differences(copy.deepcopy(ref), other, torch.randn(2, 32, 14, 14))
    assert d["output"] > 1e-4


def test_rewritten_van_mini_gives_the_same_logits():
    torch.manual_seed(0)
    van = create_model("van_mini", num_classes=10, in_chans=1).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        ref = van(x)
        for variant in ("folded", "chunked"):
            torch.testing.assert_close(alt.rewrite(van, variant)(x), ref, atol=1e-5, rtol=1e-5)


def test_script_prints_blocks_and_steps(capsys):
    alt.main(["--batch", "2", "--rounds", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    rows = re.findall(r"^\[(\d+), (\d+)\]\s+(package|folded|chunked)\b.*?([\d.]+)x$", out, re.M)
    assert [(int(c), int(s)) for c, s, _, _ in rows[::3]] == list(alt.STAGES)
    assert [v for _, _, v, _ in rows] == ["package", "folded", "chunked"] * len(alt.STAGES)
    assert all(float(r) > 0 for *_, r in rows)
    assert [r for _, _, v, r in rows if v == "package"] == ["1.00"] * len(alt.STAGES)   # itself over itself
    diffs = re.findall(r"^\[\d+, \d+\]\s+(?:folded|chunked)\s+(\S+)\s+(\S+)", out, re.M)
    assert len(diffs) == 2 * len(alt.STAGES) and all(float(d) <= 1e-5 for pair in diffs for d in pair)
    logits = re.findall(r"logits vs van_mini \(eval\): (\S+)", out)
    assert len(logits) == 2 and all(float(d) <= 1e-5 for d in logits)    # the same function, whole model
    ratios = re.findall(r"^(van_mini(?: folded| chunked)?) / resnet_mini: ([\d.]+)x", out, re.M)
    assert [n for n, _ in ratios] == ["van_mini", "van_mini folded", "van_mini chunked"]
    assert all(float(r) > 0 for _, r in ratios)
    assert len(re.findall(r"page faults, system +\d+ ms", out)) == 4


def test_timed_in_turns_divides_each_rounds_time_by_its_calls_and_takes_turns(monkeypatch):
    """A clock and rusage the test holds: "a" takes 6 ms and 2 page faults a call, "b" 3 ms and
    1 page fault, plus 1 ms of system time each. One untimed warm-up each, then per round "a"
    three times, then "b" three times."""
    from types import SimpleNamespace

    now, faults, system, calls = [0.0], [0], [0.0], []

    def work(name, seconds, page_faults):
        def fn():
            calls.append(name)
            now[0] += seconds
            faults[0] += page_faults
            system[0] += 0.001
        return fn

    monkeypatch.setattr(alt, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(alt, "resource", SimpleNamespace(
        RUSAGE_SELF=0, getrusage=lambda who: SimpleNamespace(ru_minflt=faults[0], ru_stime=system[0])))
    kernel = {}
    times = alt.timed_in_turns({"a": work("a", 0.006, 2), "b": work("b", 0.003, 1)}, rounds=2, repeats=3,
                               kernel=kernel)
    assert calls == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 2
    assert times["a"] == pytest.approx([0.006, 0.006]) and times["b"] == pytest.approx([0.003, 0.003])
    assert kernel["a"] == pytest.approx((2, 0.001)) and kernel["b"] == pytest.approx((1, 0.001))
