"""benchmarks/profile_step.py runs (a tiny profile on the CPU), so it cannot rot unseen."""
import re

from benchmark_scripts import load_benchmark


def test_profile_prints_the_step_and_its_largest_operators(capsys):
    profile_step = load_benchmark("profile_step")
    best = profile_step.profile_model("van_mini", batch=4, steps=2, top=3)
    out = capsys.readouterr().out
    assert best > 0
    assert re.search(r"van_mini: best step [\d.]+ ms = \d+ training images/s", out)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "self ms/step" in line)
    rows = lines[header + 1:header + 4]                         # the top 3 operators, then nothing
    assert all(line.startswith("  ") and line.strip() for line in rows) and len(lines) == header + 4
    shares = [float(line.rsplit(None, 1)[1].rstrip("%")) for line in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100
