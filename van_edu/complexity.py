"""Counting and measuring cost: parameters, multiply-adds, FLOPs, throughput, scaling.

Conventions: the paper's "FLOPs" are multiply-adds (MACs) at 224x224, as torchinfo counts them;
``torch.utils.flop_counter`` counts a multiply-add as two FLOPs. Paper values are kept here only
to be printed beside the values computed from real modules.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from torch import nn

from .errors import VanEduError
from .lka import LKA, conv_params, lka_params, mobilenet_params

__all__ = [
    "count_params", "count_macs", "count_flops", "variant_table", "table2", "format_table",
    "throughput", "PAPER_TABLE5", "PAPER_TABLE2",
]

# Table 5 of the paper: (params in millions, GFLOPs = G multiply-adds at 224^2, ImageNet top-1 %).
PAPER_TABLE5 = {
    "van_b0": (4.1, 0.9, 75.4), "van_b1": (13.9, 2.5, 81.1), "van_b2": (26.6, 5.0, 82.8),
    "van_b3": (44.8, 9.0, 83.9), "van_b4": (60.3, 12.2, 84.2), "van_b5": (90.0, 17.2, 86.3),
    "van_b6": (200.0, 38.4, 86.9),
}
# Table 2 of the paper: parameters of a 21x21 convolution on C channels (biases ignored).
PAPER_TABLE2 = {
    32: (451_584, 15_136, 3_392), 64: (1_806_336, 32_320, 8_832), 128: (7_225_344, 72_832, 25_856),
    256: (28_901_376, 178_432, 84_480), 512: (115_605_504, 487_936, 300_032),
}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: nn.Module, input_size) -> torch.Tensor:
    if isinstance(input_size, int):
        chans = getattr(getattr(model, "config", None), "in_chans", 3)
        input_size = (1, chans, input_size, input_size)
    param = next(model.parameters())
    return torch.zeros(tuple(input_size), dtype=param.dtype, device=param.device)


def count_macs(model: nn.Module, input_size=224) -> int:
    """Multiply-adds of one forward pass (torchinfo), per image.

    ``input_size`` is a side length (batch 1, the model's ``in_chans``) or a full shape.
    """
    from torchinfo import summary

    x = _example_input(model, input_size)
    stats = summary(model, input_data=x, verbose=0, mode="eval")
    return int(stats.total_mult_adds // x.shape[0])


def count_flops(model: nn.Module, input_size=224) -> int:
    """FLOPs of one forward pass per image, as ``torch.utils.flop_counter`` counts them (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = _example_input(model, input_size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops() // x.shape[0])


def variant_table(names=None, resolution: int = 224, macs: bool = True) -> list[dict]:
    """Parameters and multiply-adds of VAN variants, computed from real modules, beside Table 5.

    Each row: name, params (exact, 1000-class head), paper_params_m, gmacs (at ``resolution``,
    or None when ``macs=False``), paper_gflops, paper_top1.
    """
    from .models import create_model

    rows = []
    for name in names or list(PAPER_TABLE5):
        model = create_model(name, num_classes=1000)
        paper = PAPER_TABLE5.get(name, (None, None, None))
        rows.append({
            "name": name, "params": count_params(model), "paper_params_m": paper[0],
            "gmacs": count_macs(model, resolution) / 1e9 if macs else None,
            "paper_gflops": paper[1], "paper_top1": paper[2],
        })
        del model
    return rows


def _dense_params(kernel: int, channels: int) -> int:
    with torch.device("meta"):  # count a real module without allocating its weights
        return count_params(nn.Conv2d(channels, channels, kernel, bias=False))


def _mobilenet_module_params(kernel: int, channels: int) -> int:
    with torch.device("meta"):
        dw = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        pw = nn.Conv2d(channels, channels, 1, bias=False)
    return count_params(dw) + count_params(pw)


def _lka_module_params(kernel: int, dilation: int, channels: int) -> int:
    with torch.device("meta"):
        m = LKA(channels, kernel, dilation)
    return sum(p.numel() for n, p in m.named_parameters() if not n.endswith("bias"))


def table2(channels=(32, 64, 128, 256, 512), kernel_size: int = 21, dilation: int = 3) -> list[dict]:
    """Table 2: parameters of a K x K convolution three ways, biases ignored.

    Each value is counted from a real module and checked against the closed form; the paper's
    values sit beside them (for K=21, d=3).
    """
    rows = []
    for c in channels:
        row = {"C": c, "standard": _dense_params(kernel_size, c),
               "mobilenet": _mobilenet_module_params(kernel_size, c),
               "van": _lka_module_params(kernel_size, dilation, c)}
        formulas = (conv_params(kernel_size, c), mobilenet_params(kernel_size, c),
                    lka_params(kernel_size, dilation, c))
        if (row["standard"], row["mobilenet"], row["van"]) != formulas:
            raise AssertionError(f"module counts {row} disagree with the formulas {formulas}")
        paper = PAPER_TABLE2.get(c) if (kernel_size, dilation) == (21, 3) else None
        row.update(paper_standard=paper and paper[0], paper_mobilenet=paper and paper[1],
                   paper_van=paper and paper[2])
        rows.append(row)
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, header, format spec) triples."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append(["-" if r[k] is None else format(r[k], f) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def throughput(model: nn.Module, input_size, batch_size: int = 128, train: bool = False,
               steps: int = 5, warmup: int = 2, device=None, amp_dtype=None) -> float:
    """Images per second of forward (``train=False``) or forward+backward+SGD-free update.

    Synthetic inputs; ``warmup`` untimed steps first; CUDA is synchronised before reading clocks.
    """
    if steps < 1:
        raise VanEduError(f"steps must be at least 1, got {steps}")
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device)
    x = _example_input(model, input_size).expand(batch_size, -1, -1, -1).clone().normal_()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    model.train(train)

    def step():
        with autocast, (nullcontext() if train else torch.no_grad()):
            out = model(x)
        if train:
            out.float().logsumexp(1).mean().backward()
            model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- Scaling with resolution, and multiply-adds without weights ------------------------------------
# (Appended for the notebooks 01, 04 and 05.)
import math as _math
import weakref as _weakref

# Table 6 of the paper (VAN-B0 with other kernel sizes): (K, d) -> (params in millions, top-1 %).
PAPER_TABLE6 = {(7, 2): (4.03, 74.8), (14, 3): (4.07, 75.3), (21, 3): (4.11, 75.4), (28, 4): (4.14, 75.4)}


class GlobalSelfAttention(nn.Module):
    """Single-head self-attention over all H*W pixels of a map, as the textbook writes it.

    ``softmax(Q K^T / sqrt(C)) V`` with Q, K, V and the output projection as 1x1 maps; no position
    embedding. With ``fused=False`` the N x N attention matrix (N = H*W) is built explicitly (its
    memory grows as N^2); with ``fused=True`` PyTorch's ``scaled_dot_product_attention`` computes
    the same function, on most back-ends in tiles that never hold the whole matrix (the time
    still grows as N^2). ``weights(x)`` returns the attention matrix [B, N, N].
    """

    def __init__(self, dim: int, fused: bool = False):
        super().__init__()
        self.dim, self.fused = dim, fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor):
        tokens = x.flatten(2).transpose(1, 2)                 # [B, C, H, W] -> [B, N, C]
        return self.qkv(tokens).chunk(3, dim=-1)              # 3 x [B, N, C]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention matrix softmax(Q K^T / sqrt(C)): [B, N, N], rows sum to one."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(1, 2) / _math.sqrt(self.dim)).softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self._qkv(x)
        if self.fused:
            heads = (q[:, None], k[:, None], v[:, None])                        # [B, 1, N, C]
            out = torch.nn.functional.scaled_dot_product_attention(*heads)[:, 0]  # [B, N, C]
        else:
            attn = (q @ k.transpose(1, 2) / _math.sqrt(self.dim)).softmax(-1)  # [B, N, N]
            out = attn @ v                                                      # [B, N, C]
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)


def plain_lka(channels: int, kernel_size: int = 21, dilation: int = 3) -> nn.Module:
    """An LKA computed with PyTorch's convolutions (``impl="plain"``), whose cost is the conv's."""
    try:
        return LKA(channels, kernel_size, dilation, impl="plain")
    except TypeError:  # a version of LKA without the impl option
        return LKA(channels, kernel_size, dilation)


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
        _weakref.finalize(t, self._release, key)

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
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak, "CUDA allocator peak above the start"
    with LiveTensorMeter() as meter:
        out = fn()
    del out
    return meter.peak, "peak of live tensors created (dispatch meter)"


def _time_call(fn, repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()``, after one untimed call.

    The fastest call is the one least disturbed by other programs sharing the machine."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_scaling(modules: dict, sizes, channels: int, batch: int = 1, repeats: int = 5,
                    device=None, count_flops_too: bool = True, threads: int | None = None) -> list[dict]:
    """Time, peak memory and FLOPs of the forward pass of each module at each resolution.

    ``modules`` maps a name to a module taking [batch, channels, s, s] for s in ``sizes``.
    Inference mode (no autograd). Each row: method, size, pixels (s*s), seconds (the fastest of
    ``repeats`` calls after a warm-up), peak_bytes and memory_kind (see ``peak_memory``), flops
    (``torch.utils.flop_counter``, 2 per multiply-add; None when ``count_flops_too=False``; the
    counter may not see the arithmetic of fused kernels, e.g. the CPU's flash attention).
    ``threads`` sets PyTorch's CPU threads while measuring (restored afterwards): on a machine
    shared with other programs, one thread avoids timing the waits of a parallel region for a
    thread that is not running.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if repeats < 1:
        raise VanEduError(f"repeats must be at least 1, got {repeats}")
    saved_threads = torch.get_num_threads()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        return _measure_rows(modules, sizes, channels, batch, repeats, device, count_flops_too)
    finally:
        torch.set_num_threads(saved_threads)


def _measure_rows(modules, sizes, channels, batch, repeats, device, count_flops_too) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for name, module in modules.items():
        module = module.to(device).eval()
        for s in sizes:
            x = torch.randn(batch, channels, s, s, device=device)

            def call(m=module, x=x):
                return m(x)

            with torch.no_grad():
                seconds = _time_call(call, repeats, device)
                peak, kind = peak_memory(call, device)
                flops = None
                if count_flops_too:
                    with FlopCounterMode(display=False) as counter:
                        call()
                    flops = counter.get_total_flops()
            rows.append({"method": name, "size": s, "pixels": s * s, "seconds": seconds,
                         "peak_bytes": peak, "memory_kind": kind, "flops": flops})
    return rows


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p in y ~ x^p."""
    lx = [_math.log(x) for x in xs]
    ly = [_math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0:
        raise VanEduError("fit_slope needs at least two different x values")
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx


def count_macs_meta(model: nn.Module, input_size=224) -> int:
    """Multiply-adds per image of the convolutions and linear layers, counted by shape alone.

    Runs one forward pass with hooks on every ``nn.Conv2d`` and ``nn.Linear``. Build the model on
    the meta device (``with torch.device("meta"): create_model(...)``) and that pass holds no data
    and does no arithmetic: B6 counts in about a second. The hooks see only shapes: a conv costs
    (C_in / groups) * k_h * k_w multiply-adds per output value plus one for the bias, a linear
    layer in_features (+1) per output value. This is what torchinfo counts for VAN's convs and
    linears (torchinfo adds the norms: 1e-5 more for B0). LKA modules are counted as their convs
    (``impl`` is set to ``"plain"`` during the count and restored).
    """
    param = next(model.parameters())
    if isinstance(input_size, int):
        chans = getattr(getattr(model, "config", None), "in_chans", 3)
        input_size = (1, chans, input_size, input_size)
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * _math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        total[0] += output.numel() * (per_output + (module.bias is not None))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    saved_impls = [(m, m.impl) for m in model.modules() if isinstance(m, LKA) and hasattr(m, "impl")]
    was_training = model.training
    try:
        for m, _ in saved_impls:
            m.impl = "plain"
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        for m, impl in saved_impls:
            m.impl = impl
        model.train(was_training)
    return total[0] // input_size[0]


__all__ += ["PAPER_TABLE6", "GlobalSelfAttention", "plain_lka", "scaling_modules", "LiveTensorMeter",
            "peak_memory", "measure_scaling", "fit_slope", "count_macs_meta"]
