"""Cost against resolution, measured: time, throughput, peak memory and their fitted slopes.

Notebooks 01 and 04 and ``van-edu bench`` measure how LKA, a dense K x K depth-wise convolution
and global self-attention grow with the number of pixels:

* ``scaling_modules`` builds them (``plain_lka``: an LKA computed with PyTorch's convolutions);
* ``measure_scaling`` times each forward pass (``van_edu.runtime.best_time``), measures its peak
  memory (``peak_memory``; on a CPU with ``LiveTensorMeter``) and counts its operations
  (``van_edu.complexity.count_macs``);
* ``fit_slope`` fits the exponent p of cost ~ pixels^p;
* ``throughput`` is images per second of a whole model, for the comparison's tables.
"""
from __future__ import annotations

import math
import time
import weakref
from contextlib import nullcontext

import torch
from torch import nn

from .complexity import count_macs, input_shape
from .errors import VanEduError
from .lka import LKA
from .models.attention import GlobalSelfAttention
from .runtime import autocast, best_time, cpu_threads, synchronize

__all__ = ["plain_lka", "scaling_modules", "throughput", "LiveTensorMeter", "peak_memory",
           "measure_scaling", "fit_slope"]


def plain_lka(channels: int, kernel_size: int = 21, dilation: int = 3) -> LKA:
    """An LKA computed with PyTorch's convolutions (``impl="plain"``), whose cost is the conv's."""
    return LKA(channels, kernel_size, dilation, impl="plain")


def scaling_modules(channels: int, kernel_size: int = 21, dilation: int = 3) -> dict:
    """The three ways of relating pixels that notebook 04 measures, on ``channels`` channels:
    LKA, a dense K x K depth-wise conv, and global self-attention (explicit and fused)."""
    return {
        "LKA": plain_lka(channels, kernel_size, dilation),
        f"dense {kernel_size}x{kernel_size} DW conv": nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
        "self-attention": GlobalSelfAttention(channels),
        "self-attention (fused)": GlobalSelfAttention(channels, fused=True),
    }


def throughput(model: nn.Module, input_size, batch_size: int = 128, train: bool = False,
               steps: int = 5, warmup: int = 2, device=None, amp_dtype=None) -> float:
    """Images per second of forward (``train=False``) or forward and backward (``train=True``).

    Synthetic inputs; ``warmup`` untimed steps first, then the mean over ``steps`` timed steps;
    the device is synchronised before the clock is read.
    """
    if steps < 1:
        raise VanEduError(f"steps must be at least 1, got {steps}")
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device)
    shape = (batch_size, *input_shape(model, input_size)[1:])
    x = torch.empty(shape, dtype=next(model.parameters()).dtype, device=device).normal_()
    model.train(train)

    def step():
        with autocast(device, amp_dtype), (nullcontext() if train else torch.no_grad()):
            out = model(x)
        if train:
            out.float().logsumexp(1).mean().backward()
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


class LiveTensorMeter:
    """Peak bytes of the tensors that PyTorch operators create while it is active.

    A ``TorchDispatchMode`` sees the output of every operator; the meter adds the bytes of each new
    storage and subtracts them when the last tensor holding that storage is freed, so ``peak`` is
    the largest total of live tensors made inside the ``with`` block (tensors that existed before,
    such as the input and the weights, are not counted). It does not see scratch buffers that an
    operator allocates and frees internally (e.g. a convolution's workspace), so it is a lower
    bound of the allocator's peak; it works on every device.
    """

    def __init__(self):
        self.current = 0
        self.peak = 0
        self._refs: dict = {}
        self._bytes: dict = {}
        self._mode = None

    def _release(self, key) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.current -= self._bytes.pop(key)

    def _track(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage (sparse, ...)
            return
        if storage.nbytes() == 0:
            return
        key = (storage.data_ptr(), str(t.device))
        if key not in self._refs:
            self._refs[key] = 0
            self._bytes[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self._refs[key] += 1
        weakref.finalize(t, self._release, key)

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        meter._track(t)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._mode = None
        return False


def peak_memory(fn, device=None) -> tuple[int, str]:
    """Peak memory of calling ``fn()``: (bytes, what was measured).

    On CUDA: the allocator's peak above what was allocated before the call (workspaces included).
    Elsewhere: the peak of live tensors made by the call (``LiveTensorMeter``).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak, "CUDA allocator peak above the start"
    with LiveTensorMeter() as meter:
        out = fn()
    del out
    return meter.peak, "peak of live tensors created (dispatch meter)"


def measure_scaling(modules: dict, sizes, channels: int, batch: int = 1, repeats: int = 5,
                    device=None, count_flops_too: bool = True, threads: int | None = None) -> list[dict]:
    """Time, peak memory and FLOPs of the forward pass of each module at each resolution.

    ``modules`` maps a name to a module taking [batch, channels, s, s] for s in ``sizes``.
    Inference mode (no autograd). Each row: method, size, pixels (s*s), seconds (the fastest of
    ``repeats`` calls after a warm-up), peak_bytes and memory_kind (see ``peak_memory``), flops
    (of the whole batch, 2 per multiply-add that ``complexity.count_macs`` counts, biases included;
    counted on the meta device, so fused attention kernels are counted too; None when
    ``count_flops_too=False``). ``threads`` sets PyTorch's CPU threads while measuring (restored
    afterwards): on a machine shared with other programs, one thread avoids timing the waits of a
    parallel region for a thread that is not running.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if repeats < 1:
        raise VanEduError(f"repeats must be at least 1, got {repeats}")
    with cpu_threads(threads if device.type == "cpu" else None):
        return _measure_rows(modules, sizes, channels, batch, repeats, device, count_flops_too)


def _measure_rows(modules, sizes, channels, batch, repeats, device, count_flops_too) -> list[dict]:
    rows = []
    for name, module in modules.items():
        module = module.to(device).eval()
        for s in sizes:
            x = torch.randn(batch, channels, s, s, device=device)

            def call(m=module, x=x):
                return m(x)

            with torch.no_grad():
                seconds = best_time(call, repeats, device)
                peak, kind = peak_memory(call, device)
            flops = 2 * batch * count_macs(module, x.shape) if count_flops_too else None
            rows.append({"method": name, "size": s, "pixels": s * s, "seconds": seconds,
                         "peak_bytes": peak, "memory_kind": kind, "flops": flops})
    return rows


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p in y ~ x^p."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise VanEduError("fit_slope needs at least two different x values")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx
