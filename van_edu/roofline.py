"""The roofline of a training step: how close each operator comes to what this machine allows.

A CPU can do at most ``peak`` FLOP/s (measured: a large fp32 matrix product) and move at most
``bandwidth`` bytes/s to and from memory (measured: a STREAM-style triad ``a = b + s * c`` on arrays
far larger than the caches). An operator with ``flops`` and ``bytes`` cannot take less than

    roofline time = max(flops / peak, bytes / bandwidth)

and its arithmetic intensity ``flops / bytes`` says which ceiling binds. Counted here, for one
training step (forward, loss, backward, AdamW step), with ``OpCounter``, a ``TorchDispatchMode``
that sees every aten operator the step runs on real tensors:

* bytes: every tensor argument read plus every output written, ``numel * element size`` each;
  operators that only make a view (their outputs alias an input without writing it: ``view``,
  ``permute``, ``expand``, ...) move nothing and are left out, and so are allocations (``empty``);
* FLOPs: ``torch.utils.flop_counter``'s formulas where they count right (matrix products,
  convolutions' forward), our own for a convolution's backward (PyTorch 2.13's ignores ``groups``
  in the weight gradient: 3,728 MFLOP instead of 57.8 for a depth-wise 3x3 at [64, 128, 14, 14]),
  and one FLOP per output element for every other operator (element-wise and the like; a stated
  rule: GELU's erf costs more, a copy less).

The step's roofline is the sum over operators (the limit for an eager step, which runs them one by
one) and, as a fused lower bound, ``max(FLOPs / peak, unavoidable bytes / bandwidth)`` where the
unavoidable bytes are the parameters (read, their gradients written, AdamW's two states read and
written), the input batch, and the activations that backward keeps (written once, read once).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

__all__ = ["OpCount", "OpCounter", "conv_backward_flops", "triad_bandwidth", "count_training_step",
           "measured_op_seconds", "roofline_table", "step_roofline"]

_aten = torch.ops.aten
# PyTorch's fused CPU attention, which flop_counter does not know: the forward is two matrix products
# (Q K^T, then with V); the backward four (dV, dP, dQ, dK), twice the forward.
_CPU_ATTENTION_FORWARD = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_ATTENTION_BACKWARD = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
_CPU_ATTENTION = {op for op in (_CPU_ATTENTION_FORWARD, _CPU_ATTENTION_BACKWARD) if op is not None}
_ALLOCATIONS = {_aten.empty, _aten.empty_strided, _aten.empty_like, _aten.new_empty, _aten.new_empty_strided}


@dataclass
class OpCount:
    """One operator's totals over a step: calls, FLOPs and bytes (read + written)."""

    name: str
    calls: int = 0
    flops: int = 0
    bytes: int = 0

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else math.inf

    def roofline_seconds(self, peak: float, bandwidth: float) -> float:
        return max(self.flops / peak, self.bytes / bandwidth)


def conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.convolution_backward``: the input gradient and the weight gradient each cost
    what the forward costs, 2 * (output values) * (C_in / groups) * k_h * k_w (the weight's shape
    already holds C_in / groups); the bias gradient one addition per output value."""
    per_value = math.prod(w_shape[1:])                       # [C_out, C_in / groups, k_h, k_w]
    values = math.prod(x_shape if transposed else grad_out_shape)
    forward = 2 * values * per_value
    return forward * bool(output_mask[0]) + forward * bool(output_mask[1]) + \
        math.prod(grad_out_shape) * bool(output_mask[2])


def _shape(t):
    return t.shape if isinstance(t, torch.Tensor) else t


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _only_a_view(func) -> bool:
    """Outputs that alias an input without writing it: a view, no data moved."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


class OpCounter(TorchDispatchMode):
    """Counts FLOPs and bytes of every aten operator run inside it (see the module docstring).

    ``with OpCounter() as counter: step()``; then ``counter.ops`` maps "aten::name" to its
    ``OpCount``. LKA keeps its fast path under this mode (``lka_fast_path_ok``): it only counts, so
    the operators counted are those the step really runs.
    """

    lka_fast_path_ok = True

    def __init__(self):
        super().__init__()
        self.ops: dict[str, OpCount] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        name = func._schema.name                              # "aten::gelu": the profiler's name too
        if not name.startswith("aten::") or packet in _ALLOCATIONS or _only_a_view(func):
            return out                                         # (profiler markers are no arithmetic)
        count = self.ops.setdefault(name, OpCount(name))
        outputs = _tensors(out)
        count.calls += 1
        count.bytes += sum(_nbytes(t) for t in _tensors((args, kwargs))) + sum(_nbytes(t) for t in outputs)
        count.flops += self._flops(packet, args, kwargs, out, outputs)
        return out

    @staticmethod
    def _flops(packet, args, kwargs, out, outputs) -> int:
        if packet is _aten.convolution_backward:
            shapes = [_shape(a) for a in args]
            return conv_backward_flops(*shapes)
        if packet in _CPU_ATTENTION:                           # q, k, v: [B, heads, N, e]
            first = 1 if packet is _CPU_ATTENTION_BACKWARD else 0          # the backward takes grad_out first
            q, k, v = (_shape(a) for a in args[first:first + 3])
            forward = 2 * q[0] * q[1] * q[2] * k[-2] * (q[-1] + v[-1])   # Q K^T and its product with V
            return 2 * forward if packet is _CPU_ATTENTION_BACKWARD else forward
        if packet in flop_registry:
            return int(flop_registry[packet](*args, **kwargs, out_val=out))
        return sum(t.numel() for t in outputs)                 # the stated rule: 1 FLOP per output element


def triad_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s from a STREAM-style triad ``a = b + s * c`` (float32 arrays of
    ``megabytes`` each, far larger than the caches): 3 arrays' bytes moved per run (b and c read,
    a written), best of ``repeats``."""
    n = megabytes * 2**20 // 4
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    best = math.inf
    for _ in range(repeats + 1):                               # the first run only warms up
        start = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best = min(best, time.perf_counter() - start)
    return 3 * n * 4 / best


def _training_step(model, x, y, optimizer):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()


def count_training_step(model, x, y) -> tuple[dict[str, OpCount], dict]:
    """The operators of one AdamW training step (after one warm-up step outside the counter, so
    the optimiser's state exists), and the step's unavoidable bytes for the fused bound."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    _training_step(model, x, y, optimizer)
    weights = {p.data_ptr() for p in model.parameters()}
    saved: dict[tuple, int] = {}

    def pack(t):                          # what autograd keeps for backward (weights excepted, each once)
        if t.data_ptr() not in weights:
            saved[(t.data_ptr(), tuple(t.shape), t.dtype)] = _nbytes(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), OpCounter() as counter:
        _training_step(model, x, y, optimizer)
    params = sum(_nbytes(p) for p in model.parameters())
    unavoidable = {"parameters": 6 * params,                  # read, grad written, 2 AdamW states read+written
                   "input": _nbytes(x) + _nbytes(y), "saved activations": 2 * sum(saved.values())}
    return counter.ops, unavoidable


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send what C++ writes to the process's stderr (file descriptor 2) to /dev/null for the
    block: PyTorch 2.13's profiler prints a timestamped "USDT: profiler_start" line per run, which
    would otherwise land in the bench's output and in notebook 04. Python's own errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measured_op_seconds(model, x, y, counted, steps: int = 3) -> dict[str, float]:
    """Seconds per step of each operator in ``counted`` (the names ``OpCounter`` saw), from
    torch.profiler. The profiler also records what runs above autograd (``aten::conv2d``) and inside
    an operator (``aten::mkldnn_convolution`` inside ``aten::convolution``); an event counts when
    its name was counted and no enclosing event's was, so nothing is counted twice."""
    from torch.profiler import ProfilerActivity, profile

    counted = set(counted)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    _training_step(model, x, y, optimizer)
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            _training_step(model, x, y, optimizer)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name not in counted:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name not in counted:
            parent = parent.cpu_parent
        if parent is None:
            totals[event.name] += event.cpu_time_total / 1e6 / steps
    return dict(totals)


def roofline_table(ops: dict[str, OpCount], seconds: dict[str, float], peak: float, bandwidth: float) -> list[dict]:
    """One row per operator: calls, FLOPs, bytes, intensity, roofline and measured seconds, and the
    fraction of its roofline it reaches (roofline / measured), furthest from it first."""
    rows = []
    for name, op in ops.items():
        limit, took = op.roofline_seconds(peak, bandwidth), seconds.get(name, 0.0)
        rows.append({"op": name, "calls": op.calls, "flops": op.flops, "bytes": op.bytes, "intensity": op.intensity,
                     "roofline_s": limit, "measured_s": took, "fraction": limit / took if took else math.nan,
                     "bound": "compute" if op.flops / peak >= op.bytes / bandwidth else "memory"})
    return sorted(rows, key=lambda r: (r["measured_s"] - r["roofline_s"]), reverse=True)


def step_roofline(model, x, y, peak: float, bandwidth: float, steps: int = 3) -> dict:
    """One model's training step against its roofline: the measured step (best of ``steps``), the
    unfused roofline (the sum over operators), the fused lower bound, the fractions of each the
    step reaches, and the operators furthest from theirs."""
    from .runtime import best_time

    ops, unavoidable = count_training_step(model, x, y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    measured = best_time(lambda: _training_step(model, x, y, optimizer), repeats=steps, warmup=1)
    table = roofline_table(ops, measured_op_seconds(model, x, y, ops), peak, bandwidth)
    flops = sum(op.flops for op in ops.values())
    unfused = sum(r["roofline_s"] for r in table)
    fused = max(flops / peak, sum(unavoidable.values()) / bandwidth)
    return {"measured_s": measured, "unfused_roofline_s": unfused, "fused_bound_s": fused,
            "fraction_of_unfused": unfused / measured, "fraction_of_fused": fused / measured,
            "flops": flops, "bytes": sum(op.bytes for op in ops.values()), "unavoidable_bytes": unavoidable,
            "operators": table}
