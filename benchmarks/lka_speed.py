"""LKA on the CPU: plain (three nn.Conv2d) against the fast path (matrix products), same weights.

For each shape [B, C, H, W] of the course's models it times forward + backward of one LKA
(``loss = (LKA(x) * g).sum()``, gradients for the input and all weights), checks that both give
the same output and gradients, and prints a table with the machine it ran on. ``--train`` adds
whole training steps of the small VAN (``lka_impl="plain"`` against ``"auto"``), in images/s.

    python benchmarks/lka_speed.py                    # all shapes, the machine's threads
    python benchmarks/lka_speed.py --quick            # the van_mini shapes only
    python benchmarks/lka_speed.py --train --json out.json

Times are the best of ``--repeat`` runs (plain and fast alternate, so both see the same load on a
shared machine); the JSON also holds the medians.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch

from van_edu.lka import LKA, fast_plan

# (group, batch, channels, side): the LKA inputs of the course's models.
SHAPES = [
    ("van_mini, stem stride 2, 28 px", 128, 32, 14),
    ("van_mini, stem stride 2, 28 px", 128, 64, 7),
    ("van_mini, stem stride 2, 28 px", 128, 128, 4),
    ("van_mini, stem stride 1, 28 px", 128, 32, 28),
    ("van_mini, stem stride 1, 28 px", 128, 64, 14),
    ("van_mini, stem stride 1, 28 px", 128, 128, 7),
    ("van_cifar, stem stride 1, 32 px", 128, 64, 32),
    ("van_cifar, stem stride 1, 32 px", 128, 128, 16),
    ("van_cifar, stem stride 1, 32 px", 128, 256, 8),
    ("van_cifar, stem stride 1, 32 px", 128, 512, 4),
    ("van_b0, 224 px", 32, 32, 56),
    ("van_b0, 224 px", 32, 64, 28),
    ("van_b0, 224 px", 32, 160, 14),
    ("van_b0, 224 px", 32, 256, 7),
]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def _step(module: LKA, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """Forward and backward; returns the output and the gradients (input first)."""
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * g).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in module.parameters()]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(batch: int, channels: int, side: int, repeat: int, kernel_size: int = 21,
            dilation: int = 3) -> dict:
    """Time and check plain against fast for one shape."""
    torch.manual_seed(0)
    plain = LKA(channels, kernel_size, dilation, impl="plain")   # the authors' initialisation:
    for conv in plain.children():                                   # values of a real model's size
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        torch.nn.init.normal_(conv.weight, 0.0, (2.0 / fan_out) ** 0.5)
        torch.nn.init.normal_(conv.bias, 0.0, 0.1)
    fast = LKA(channels, kernel_size, dilation, impl="fast")
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(batch, channels, side, side)
    g = torch.randn_like(x)
    ref, out = _step(plain, x, g), _step(fast, x, g)
    exact = _step(copy.deepcopy(plain).double(), x.double(), g.double())[0]   # float64 reference
    err_plain = (ref[0].double() - exact).abs().max().item()
    err_fast = (out[0].double() - exact).abs().max().item()
    diff_out = (ref[0] - out[0]).abs().max().item()
    diff_gx = (ref[1] - out[1]).abs().max().item()
    rel_gw = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(ref[2:], out[2:]))
    times = {"plain": [], "fast": []}
    for _ in range(repeat):
        for name, m in (("plain", plain), ("fast", fast)):
            times[name].append(_timed(lambda: _step(m, x, g)))
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {"batch": batch, "channels": channels, "side": side,
            "plan": "+".join(fast_plan(batch, side, side, fast.depthwise_convs())),
            "plain_ms": best["plain"], "fast_ms": best["fast"], "speedup": best["plain"] / best["fast"],
            "plain_median_ms": statistics.median(times["plain"]) * 1e3,
            "fast_median_ms": statistics.median(times["fast"]) * 1e3,
            "max_abs_diff_output": diff_out, "max_abs_diff_grad_input": diff_gx,
            "max_abs_output": ref[0].abs().max().item(),
            "max_abs_error_vs_float64_plain": err_plain, "max_abs_error_vs_float64_fast": err_fast,
            "max_rel_diff_grad_weights": rel_gw}


def train_speed(stem_stride: int, steps: int, batch: int = 128) -> dict:
    """Images/s of whole training steps (AdamW) of van_mini on 28x28 grey images, plain vs auto
    (best step; the JSON also holds the median)."""
    from van_edu.models import create_model

    result = {"model": f"van_mini(num_classes=10, in_chans=1, stem_stride={stem_stride})", "batch": batch}
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    models = {}
    for impl in ("plain", "auto"):
        torch.manual_seed(0)
        models[impl] = create_model("van_mini", num_classes=10, in_chans=1, stem_stride=stem_stride, lka_impl=impl)
    models["auto"].load_state_dict(models["plain"].state_dict(), strict=True)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(impl):
        opts[impl].zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(models[impl](x), y)
        loss.backward()
        opts[impl].step()
        return loss.item()

    losses = {k: step(k) for k in models}        # one warm-up step each; same start, same loss
    result["first_loss_diff"] = abs(losses["plain"] - losses["auto"])
    times = {"plain": [], "auto": []}
    for _ in range(steps):
        for impl in models:
            times[impl].append(_timed(lambda: step(impl)))
    for impl, ts in times.items():
        result[f"{impl}_img_per_s"] = batch / min(ts)
        result[f"{impl}_img_per_s_median"] = batch / statistics.median(ts)
    result["speedup"] = result["auto_img_per_s"] / result["plain_img_per_s"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per shape and impl")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="only the van_mini shapes")
    parser.add_argument("--train", action="store_true", help="also time van_mini training steps")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
          f"{info['torch_threads']} threads")
    print("LKA K=21 d=3, forward + backward, float32, best of", args.repeat)
    print("max|dy|, max|dgx|: fast - plain, output and input gradient; rel dgw: the same for the "
          "weight gradients, relative to their largest value; f64 err: max |output - float64 output| "
          "of plain / fast")
    header = (f"{'shape [B, C, H, W]':<20} {'fast plan':<20} {'plain ms':>9} {'fast ms':>8} {'speed-up':>8} "
              f"{'max|dy|':>8} {'max|dgx|':>8} {'rel dgw':>8}  {'f64 err plain/fast':>18}")
    print(header)
    rows, group = [], None
    shapes = [s for s in SHAPES if not args.quick or s[0].startswith("van_mini")]
    for name, b, c, h in shapes:
        if name != group:
            print(f"-- {name}")
            group = name
        r = compare(b, c, h, args.repeat)
        r["group"] = name
        rows.append(r)
        print(f"{str([b, c, h, h]):<20} {r['plan']:<20} {r['plain_ms']:9.1f} {r['fast_ms']:8.1f} "
              f"{r['speedup']:7.2f}x {r['max_abs_diff_output']:8.1e} {r['max_abs_diff_grad_input']:8.1e} "
              f"{r['max_rel_diff_grad_weights']:8.1e}  {r['max_abs_error_vs_float64_plain']:8.1e} / "
              f"{r['max_abs_error_vs_float64_fast']:7.1e}", flush=True)
    report = {"machine": info, "lka": rows}
    if args.train:
        report["train"] = []
        print("\nvan_mini training step (AdamW, 28x28x1, batch 128), best of", args.train_steps)
        for stride in (2, 1):
            t = train_speed(stride, args.train_steps)
            report["train"].append(t)
            print(f"stem stride {stride}: plain {t['plain_img_per_s']:7.1f} img/s, auto "
                  f"{t['auto_img_per_s']:7.1f} img/s, speed-up {t['speedup']:.2f}x "
                  f"(first-step loss difference {t['first_loss_diff']:.1e})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
