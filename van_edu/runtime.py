"""Where the work runs and how it is timed: device choice, mixed precision, synchronisation, clocks.

The one home of four small ideas that training, benchmarks and notebooks all need:

* ``pick_device``: CUDA, then Apple's MPS, then the CPU (d2l's ``try_gpu``, with clear errors);
* ``resolve_amp`` and ``autocast``: which autocast dtype a mode means on a device, and its context;
* ``synchronize``: wait for queued GPU work before reading a clock, so a time measures the work;
* ``best_time`` and ``machine``: the fastest of a few timed calls, and what they ran on (CPU
  model, threads, torch build), since every figure must name its machine.

It imports nothing from the rest of the package but its error type, so any module may use it.
"""
from __future__ import annotations

import contextlib
import os
import platform
import time
from typing import Callable

import torch

from .errors import VanEduError

__all__ = ["AMP_MODES", "pick_device", "cpu_has_native_bf16", "resolve_amp", "autocast", "synchronize", "best_time",
           "cpu_name", "machine", "machine_description"]

AMP_MODES = ("auto", "native", "bf16", "fp16", "off")


def pick_device(preference: str = "auto") -> torch.device:
    """The device to train on: "auto" takes CUDA, then MPS, then the CPU; a named one must exist."""
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise VanEduError(f"device={preference!r} is not a device name (expected 'auto', 'cuda', "
                          "'cuda:N', 'mps' or 'cpu')") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VanEduError(f"device={preference!r} but no CUDA GPU is visible (expected 'auto' or 'cpu')")
    if device.type == "mps" and not mps_ok:
        raise VanEduError(f"device={preference!r} but MPS is not available (expected 'auto' or 'cpu')")
    return device


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86's AVX512-BF16 or AMX-BF16 flags).

    Reads ``/proc/cpuinfo`` (Linux); False wherever it cannot tell (macOS, Windows), since autocast
    to bf16 on a CPU without those units emulates it and runs slower than float32. `cpuinfo` is
    the file's text, for tests.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `mode` on `device`, or None for full float32.

    "auto" means bf16 on a CUDA card that supports it (no gradient scaler needed: bf16 has the
    range of float32), fp16 on older cards, and float32 elsewhere. "native" means bf16 wherever
    the hardware computes it (a CUDA card with bf16, a CPU with AVX512-BF16 or AMX: there the
    segmenter's training step ran about 1.5x faster, README "Segmentation: the recipe") and
    float32 everywhere else, so that a recipe never runs slower than float32 for its precision.
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "native":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise VanEduError("amp='bf16' but this GPU does not support bfloat16 "
                              "(expected 'fp16', 'auto' or 'off')")
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise VanEduError(f"amp='fp16' needs a CUDA GPU for its gradient scaler, but the device is "
                              f"{device.type} (expected 'bf16' or 'off' there)")
        return torch.float16
    raise VanEduError(f"amp={mode!r} (expected one of {AMP_MODES})")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype`, or a no-op one when running in float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work, so that the wall clock measures the work and not its queueing."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Run the block with PyTorch's CPU intra-op threads set to ``threads`` (None: unchanged), and
    put the previous count back afterwards, also on an error."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def best_time(fn: Callable[[], object], repeats: int = 5, device=None, warmup: int = 1) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls.

    The fastest call is the one least disturbed by other programs sharing the machine; the device
    is synchronised around every timed call.
    """
    if repeats < 1:
        raise VanEduError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return name


def machine() -> dict:
    """What figures were measured on: CPU model, logical CPUs, torch threads, torch and Python builds."""
    info = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line for a report: the GPU's name, or the CPU and its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"
