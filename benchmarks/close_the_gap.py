"""Closing the gap to the roofline (issue 23, deliverable 4): what eager PyTorch allows, measured.

    python benchmarks/close_the_gap.py --out benchmarks/results/close_the_gap.json

1. **The roofline** of one AdamW training step of van_mini (28x28x1, batch 128, as `van-edu bench`)
   and of van_b0 (224x224x3, batch ``--b0-batch``): the fraction of the unfused roofline and of
   the fused bound each step reaches, and the five operators furthest from theirs
   (``van_edu.roofline``).
2. **Candidates**, each the same function as the course's step (its loss and every gradient
   equal within float32 tolerance, checked first from the same weights and batch, or it is not
   timed), timed side by side with the course's step in turns (``--rounds`` rounds after a
   warm-up; the median and the best of each):

   * ``oneDNN off``: PyTorch's own convolution kernels instead of oneDNN's;
   * ``NCHW``: the weights, the input and the activations in PyTorch's default layout instead of
     channels-last;
   * ``MLP depth-wise as matrices``: the MLP's 3x3 depth-wise conv as one batched matrix product
     per channel on maps of at most ``lka_fast.DENSE_MAX_PIXELS`` pixels (the fast LKA's "dense" way);
   * ``compiled residual tail``: ``x + layer_scale * y`` of each sub-layer as one ``torch.compile``d
     element-wise kernel (the convolutions left to eager PyTorch);
   * ``AdamW foreach`` and ``AdamW fused``: the optimiser's update as a few multi-tensor kernels
     (``foreach``) or one fused kernel per parameter group (``fused``), instead of a loop of small
     element-wise operators per parameter (PyTorch's default on a CPU).

   GELU in place is not a candidate: its backward needs its input, which autograd refuses to
   let an in-place operation overwrite.

Run it alone on the machine; it prints the machine and writes ``--out`` as JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="TF32 acceleration")  # torch.backends.mkldnn.flags, on a CPU build

from van_edu import lka_fast
from van_edu.bench import matmul_rate
from van_edu.models import create_model
from van_edu.models.van import VAN, Block, DWConv
from van_edu.roofline import step_roofline, triad_bandwidth
from van_edu.runtime import machine


def _inputs(name: str, batch: int):
    torch.manual_seed(0)
    if name == "van_mini":
        return torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)), {"num_classes": 10, "in_chans": 1}
    return torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,)), {"num_classes": 1000}


def _model(name: str, kw: dict):
    torch.manual_seed(0)
    return create_model(name, **kw).to(memory_format=torch.channels_last)


# --- the candidates: each a context manager that changes how the step is computed, not what ----
@contextlib.contextmanager
def _onednn_off():
    with torch.backends.mkldnn.flags(enabled=False):
        yield


@contextlib.contextmanager
def _patched(cls, name, value):
    old = getattr(cls, name)
    setattr(cls, name, value)
    try:
        yield
    finally:
        setattr(cls, name, old)


def _nchw():
    return _patched(VAN, "uses_channels_last", lambda self, x: False)


def _dense_dwconv_forward(self, x):
    b, c, h, w = x.shape
    if h * w > lka_fast.DENSE_MAX_PIXELS:
        return self.dwconv(x)
    a = x.permute(1, 0, 2, 3).reshape(c, b, h * w)                    # [C, B, HW]
    out = lka_fast._dense(a, self.dwconv, h, w)
    return out.reshape(c, b, h, w).permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last)


def _mlp_dense():
    return _patched(DWConv, "forward", _dense_dwconv_forward)


@torch.compile(dynamic=False)
def _residual(x, scale, y):
    return x + scale[:, None, None] * y


def _compiled_block_forward(self, x):
    x = _residual(x, self.layer_scale_1, self.drop_path(self.attn(self.norm1(x))))
    return _residual(x, self.layer_scale_2, self.drop_path(self.mlp(self.norm2(x))))


def _compiled_tail():
    return _patched(Block, "forward", _compiled_block_forward)


CANDIDATES = {"oneDNN off": (_onednn_off, {}), "NCHW": (_nchw, {}),
              "MLP depth-wise as matrices": (_mlp_dense, {}), "compiled residual tail": (_compiled_tail, {}),
              "AdamW foreach": (contextlib.nullcontext, {"foreach": True}),
              "AdamW fused": (contextlib.nullcontext, {"fused": True})}
COURSE = (contextlib.nullcontext, {"foreach": False})  # what torch.optim.AdamW does on a CPU by default


# --- equality and timing ------------------------------------------------------------------------
def _one_step(model, x, y, candidate):
    """One AdamW step: the loss, the gradients and the parameters after it."""
    ctx, opt = candidate
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **opt)
    optimizer.zero_grad(set_to_none=True)
    with ctx():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    optimizer.step()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()], [p.detach().clone() for p in model.parameters()]


def _same_function(base, other, x, y, candidate, x_other=None) -> tuple[bool, float]:
    """Loss and every gradient of ``other`` with ``candidate`` against ``base``'s (both from the
    same weights), and for an optimiser candidate every updated parameter: equal within float32
    tolerance? Differences are measured against the step's largest gradient (or parameter): a bias
    that feeds a BatchNorm has a true gradient of 0, and its float noise (~1e-8) is no scale to
    judge by. (A conv candidate's parameters are not compared: AdamW's first update divides each
    gradient by its own size, so float noise in a near-zero gradient becomes a full step.)"""
    loss_a, ga, pa = _one_step(base, x, y, COURSE)
    loss_b, gb, pb = _one_step(other, x if x_other is None else x_other, y, candidate)
    pairs = ((ga, gb), (pa, pb)) if candidate[1] else ((ga, gb),)
    worst = max(max((a - b).abs().max().item() for a, b in zip(xs, ys)) / max(a.abs().max().item() for a in xs)
                for xs, ys in pairs)
    return bool(torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)) and worst < 1e-4, worst


def _stepper(model, x, y, candidate):
    ctx, opt = candidate
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **opt)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with ctx():
            F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def candidates(name: str, batch: int, rounds: int, only=None, log=print) -> list[dict]:
    x, y, kw = _inputs(name, batch)
    x = x.contiguous(memory_format=torch.channels_last)
    base = _model(name, kw)
    steps = {"the course's step": _stepper(copy.deepcopy(base), x, y, COURSE)}
    rows = {"the course's step": {"same_function": True, "worst_relative_difference": 0.0}}
    for label, candidate in CANDIDATES.items():
        if only and label not in only:
            continue
        other, x_other = copy.deepcopy(base), x
        if label == "NCHW":  # the weights and the input in PyTorch's default layout too
            other, x_other = other.to(memory_format=torch.contiguous_format), x.contiguous()
        try:
            same, worst = _same_function(copy.deepcopy(base), copy.deepcopy(other), x, y, candidate, x_other)
        except Exception as err:  # a candidate that cannot run here
            log(f"  {label}: cannot run ({type(err).__name__}: {str(err)[:100]})")
            rows[label] = {"same_function": False, "error": f"{type(err).__name__}: {err}"[:300]}
            continue
        rows[label] = {"same_function": same, "worst_relative_difference": worst}
        if same:
            steps[label] = _stepper(other, x_other, y, candidate)
        else:
            log(f"  {label}: NOT the same function (worst relative difference {worst:.2e}): not timed")
    times = {label: [] for label in steps}
    for step in steps.values():  # warm-up (and torch.compile's compilation)
        step()
        step()
    for _ in range(rounds):
        for label, step in steps.items():
            start = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - start)
    base_median = statistics.median(times["the course's step"])
    out = []
    for label, row in rows.items():
        if label in times:
            t = times[label]
            row.update(median_s=statistics.median(t), best_s=min(t), spread_s=max(t) - min(t),
                       speedup_of_median=base_median / statistics.median(t))
        out.append({"candidate": label, **row})
        if label in times:
            log(f"  {label:<28} median {1e3 * row['median_s']:8.1f} ms  best {1e3 * row['best_s']:8.1f} ms  "
                f"x{row['speedup_of_median']:.3f} of the course's  (largest gradient difference {row['worst_relative_difference']:.1e} of the largest gradient)")
    return out


def roofline(name: str, batch: int, peak: float, bandwidth: float, log=print) -> dict:
    x, y, kw = _inputs(name, batch)
    model = _model(name, kw)
    r = step_roofline(model, x.contiguous(memory_format=torch.channels_last), y, peak, bandwidth, steps=3)
    log(f"{name}: {r['flops'] / 1e9:.1f} GFLOP, {r['bytes'] / 1e9:.2f} GB per step; measured {1e3 * r['measured_s']:.0f} ms, "
        f"unfused roofline {1e3 * r['unfused_roofline_s']:.0f} ms ({100 * r['fraction_of_unfused']:.0f}% reached), "
        f"fused bound {1e3 * r['fused_bound_s']:.0f} ms ({100 * r['fraction_of_fused']:.0f}%)")
    for row in r["operators"][:5]:
        log(f"  {row['op']:<36} {1e3 * (row['measured_s'] - row['roofline_s']):8.1f} ms lost  "
            f"{1e3 * row['measured_s']:8.1f} / {1e3 * row['roofline_s']:7.1f} ms  {row['intensity']:6.1f} FLOP/B, "
            f"{row['bound']}-bound, {row['calls']} calls")
    return {**r, "operators": r["operators"][:12]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--mini-batch", type=int, default=128)
    p.add_argument("--b0-batch", type=int, default=16)
    p.add_argument("--b0-rounds", type=int, default=4)
    p.add_argument("--only", nargs="+", choices=list(CANDIDATES), help="time only these candidates")
    p.add_argument("--no-roofline", action="store_true", help="time the candidates only")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    info = machine()
    print(f"machine: {info}")
    peak, bandwidth = matmul_rate(), triad_bandwidth()
    print(f"fp32 peak {peak / 1e9:.0f} GFLOP/s, triad {bandwidth / 1e9:.1f} GB/s")
    report = {"machine": info, "peak_gflop_per_s": peak / 1e9, "bandwidth_gb_per_s": bandwidth / 1e9, "models": {}}
    for name, batch, rounds in (("van_mini", a.mini_batch, a.rounds), ("van_b0", a.b0_batch, a.b0_rounds)):
        print(f"\n== {name}, batch {batch}")
        report["models"][name] = {"batch": batch, "candidates": candidates(name, batch, rounds, a.only)}
        if not a.no_roofline:
            report["models"][name]["roofline"] = roofline(name, batch, peak, bandwidth)
    if a.out:
        a.out.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
