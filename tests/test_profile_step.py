"""benchmarks/profile_step.py: its printed figures are computed from the profile as they say (a
profiler and clock whose readings the test chooses), and a tiny real profile runs on the CPU, so
the script cannot rot unseen."""
import re
from types import SimpleNamespace

import pytest
from benchmark_scripts import load_benchmark

profile_step = load_benchmark("profile_step")


def _table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "self ms/step" in line)
    return [line.split() for line in lines[header + 1:]]


class ChosenProfile:
    """Stands in for torch.profiler.profile: its operators and their self CPU times (µs, over all
    profiled steps) are chosen by the test."""

    EVENTS = [("aten::convolution_backward", 300.0, 4), ("aten::mm", 500.0, 8), ("aten::add_", 100.0, 6),
              ("aten::gelu", 200.0, 2)]

    def __init__(self, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def key_averages(self, group_by_input_shape=False):
        return [SimpleNamespace(key=k, self_cpu_time_total=t, count=c, input_shapes=[[4, 8]])
                for k, t, c in self.EVENTS]


def test_the_printed_step_time_rate_and_operator_shares_follow_from_the_profile(monkeypatch, capsys):
    """Two steps timed at 10 ms and 8 ms: the best is 8 ms, 500 images/s at batch 4. Operators of
    500, 300, 200 and 100 µs over 2 steps (1100 µs in all): the top 3, largest first, at 0.25,
    0.15 and 0.10 ms per step and 45.5%, 27.3% and 18.2% of the total."""
    readings = iter([0.0, 0.010, 1.0, 1.008])
    monkeypatch.setattr(profile_step, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    monkeypatch.setattr(profile_step, "profile", ChosenProfile)
    best = profile_step.profile_model("van_mini", batch=4, steps=2, top=3)
    out = capsys.readouterr().out
    assert best == pytest.approx(0.008)
    assert re.search(r"van_mini: best step 8\.0 ms = 500 training images/s", out), out
    rows = _table(out)
    assert [r[0] for r in rows] == ["aten::mm", "aten::convolution_backward", "aten::gelu"]
    assert [int(r[-3]) for r in rows] == [4, 2, 1]                       # calls per step
    assert [float(r[-2]) for r in rows] == [0.25, 0.15, 0.10]            # self ms per step
    assert [r[-1] for r in rows] == ["45.5%", "27.3%", "18.2%"]          # of all operators' time


def test_a_tiny_real_profile_lists_its_largest_operators_in_order(capsys):
    best = profile_step.profile_model("van_mini", batch=4, steps=2, top=3)
    out = capsys.readouterr().out
    assert re.search(r"van_mini: best step [\d.]+ ms = \d+ training images/s", out)
    step_ms = float(re.search(r"best step ([\d.]+) ms", out).group(1))
    assert step_ms == pytest.approx(1e3 * best, abs=0.05)
    rows = _table(out)
    assert len(rows) == 3                                                # the top 3, then nothing
    ms = [float(r[-2]) for r in rows]
    shares = [float(r[-1].rstrip("%")) for r in rows]
    assert ms == sorted(ms, reverse=True) and shares == sorted(shares, reverse=True)
    assert 0 < sum(shares) <= 100
    # each share is its ms per step over the same total: the ratios agree (to the printed rounding)
    totals = [m / (s / 100) for m, s in zip(ms, shares) if m >= 0.1 and s >= 1]
    assert totals and max(totals) <= min(totals) * 1.2
