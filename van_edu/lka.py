"""Large kernel attention (LKA) and its arithmetic.

The paper (Guo et al., "Visual Attention Network", Sec. 3.2) decomposes a K x K convolution with
dilation d into three cheap pieces:

* a (2d-1) x (2d-1) depth-wise convolution ("DW-Conv", the official key ``conv0``),
* a ceil(K/d) x ceil(K/d) depth-wise convolution with dilation d ("DW-D-Conv", ``conv_spatial``),
* a 1 x 1 convolution that mixes channels (``conv1``).

The result is used as an attention map that multiplies its own input element-wise::

    Attention = Conv1x1(DW-D-Conv(DW-Conv(F)))
    Output    = Attention (x) F

Eq. (3) counts the parameters of the decomposition (biases ignored)::

    P(K, d) = C * (ceil(K/d)^2 + (2d-1)^2 + C)

This module holds the module itself, the decomposition rule for any K and d, the padding that
keeps the size, Eq. (3), the parameter counts of Table 2 and receptive-field arithmetic (computed
and measured). It knows nothing of training.

``LKA(..., impl="fast")`` (chosen by ``impl="auto"`` on the CPU) computes the same function with
the same parameters through matrix products; that way lives in ``van_edu.lka_fast``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as nn_module

from .conv_arithmetic import same_padding, stack_receptive_field, symmetric_padding
from .errors import VanEduError
from .lka_fast import fast_attention_map

# Whether a dispatch mode (FlopCounterMode, ...) is active. torch has no public function for this;
# the private one is imported defensively. Without it the fast path is never taken (correct, only
# slower), and tests/test_lka_fast.py fails on the torch that lacks it, so it is not silent.
try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - a torch that moved it
    _get_current_dispatch_mode = None

__all__ = [
    "same_padding", "Decomposition", "decomposition", "lka_params", "conv_params", "mobilenet_params",
    "best_dilation", "receptive_field", "stack_receptive_field", "measure_receptive_field",
    "LKA", "LKA_VARIANTS", "LKA_IMPLS", "LKA_IMPL_DOCS", "observation_probes", "impulse_response",
    "fit_decomposition",
]


def _check_kd(kernel_size, dilation) -> None:
    for name, value in (("kernel_size K", kernel_size), ("dilation d", dilation)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise VanEduError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    if kernel_size < 2:
        raise VanEduError(f"kernel_size K must be at least 2 (a kernel to decompose), got {kernel_size}")
    if not 1 <= dilation <= kernel_size:
        raise VanEduError(
            f"dilation d must be between 1 and K={kernel_size}, got {dilation}; the paper uses d=3 for K=21"
        )


@dataclass(frozen=True)
class Decomposition:
    """How a K x K kernel is split: the two depth-wise kernels, the dilation and the paddings.

    ``dw_padding`` and ``dwd_padding`` keep the spatial size; they are ``None`` when no symmetric
    padding can (the dilated kernel spans an even number of pixels), and then ``"same"`` padding
    is used instead.
    """

    kernel_size: int     # K, the large kernel being approximated
    dilation: int        # d
    dw_kernel: int       # 2d - 1
    dw_padding: int      # same_padding(2d - 1) = d - 1
    dwd_kernel: int      # ceil(K / d)
    dwd_padding: int | None  # same_padding(ceil(K/d), d) when symmetric padding keeps the size

    @property
    def receptive_field(self) -> int:
        """Side of the square seen by one output of DW-Conv followed by DW-D-Conv."""
        return stack_receptive_field([(self.dw_kernel, 1), (self.dwd_kernel, self.dilation)])


def decomposition(kernel_size: int = 21, dilation: int = 3) -> Decomposition:
    """The paper's rule for splitting a K x K kernel with dilation d.

    >>> decomposition(21, 3)
    Decomposition(kernel_size=21, dilation=3, dw_kernel=5, dw_padding=2, dwd_kernel=7, dwd_padding=9)
    """
    _check_kd(kernel_size, dilation)
    dw = 2 * dilation - 1
    dwd = math.ceil(kernel_size / dilation)
    return Decomposition(kernel_size, dilation, dw, same_padding(dw), dwd, symmetric_padding(dwd, dilation))


def lka_params(kernel_size: int, dilation: int, channels: int) -> int:
    """Eq. (3): parameters of the decomposed K x K convolution on C channels, biases ignored."""
    d = decomposition(kernel_size, dilation)
    _check_channels(channels)
    return channels * (d.dwd_kernel ** 2 + d.dw_kernel ** 2 + channels)


def conv_params(kernel_size: int, channels: int) -> int:
    """A standard K x K convolution from C to C channels, no bias: K^2 C^2 (Table 2)."""
    _check_channels(channels)
    return kernel_size ** 2 * channels ** 2


def mobilenet_params(kernel_size: int, channels: int) -> int:
    """MobileNet-style split: a depth-wise K x K plus a 1 x 1 convolution, no biases (Table 2)."""
    _check_channels(channels)
    return kernel_size ** 2 * channels + channels ** 2


def _check_channels(channels) -> None:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise VanEduError(f"channels C must be a positive whole number, got {channels!r}")


def best_dilation(kernel_size: int) -> int:
    """The dilation d that minimises Eq. (3) for a K x K kernel (the smallest d on ties).

    The channel term C^2 does not depend on d, so the answer does not depend on C.
    """
    _check_kd(kernel_size, 1)
    return min(range(1, kernel_size + 1), key=lambda d: (lka_params(kernel_size, d, 1), d))


def receptive_field(kernel_size: int = 21, dilation: int = 3) -> int:
    """Side of the receptive field of the decomposed kernel: (2d-1) + d (ceil(K/d) - 1).

    For K=21, d=3 that is 5 + 3 * 6 = 23: slightly more than the 21 it approximates.
    """
    return decomposition(kernel_size, dilation).receptive_field


def measure_receptive_field(module: nn.Module, channels: int, size: int = 64) -> tuple[int, int]:
    """Measure a module's receptive field from gradients: (height, width) in pixels.

    Back-propagates from the centre output pixel (summed over channels) to a random input and
    returns the extent of the input pixels whose gradient is not zero. Weights are whatever the
    module holds; a random initialisation makes an exact zero gradient practically impossible.
    """
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    module = module.to(torch.float64)
    y = module(x)
    y[0, :, size // 2, size // 2].sum().backward()
    touched = x.grad[0].abs().sum(0) > 0  # [size, size]
    rows = touched.any(1).nonzero()
    cols = touched.any(0).nonzero()
    module.float()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


LKA_VARIANTS = {
    "lka": "the full LKA: 1x1(DW-D-Conv(DW-Conv(x))) * x",
    "no_dw_conv": "Table 3: without DW-Conv",
    "no_dw_d_conv": "Table 3: without DW-D-Conv",
    "no_attention": "Table 3: without attention: the attention map is the output (no multiply)",
    "add": "Table 3: attention added to the input instead of multiplied",
    "sigmoid": "Table 3: sigmoid on the attention map before the multiply",
    "no_1x1": "Table 3: without the 1x1 convolution (no channel mixing; still channel-adaptive)",
    "dense": "Table 3: a dense K x K convolution instead of the decomposition (then the multiply)",
}


def impulse_response(module: nn.Module, channels: int, side: int) -> torch.Tensor:
    """What a depth-wise (per-channel, linear) ``module`` does to one lit pixel: [channels, side, side].

    A unit impulse in the middle of a blank map, every channel at once; the central ``side`` x
    ``side`` of the output is the single kernel the module amounts to (away from the border),
    flipped, since PyTorch's convolutions are correlations. Two modules with the same response
    compute the same function on maps whose border is ``side`` // 2 away.
    """
    size = 2 * side + 1
    x = torch.zeros(1, channels, size, size)
    x[..., size // 2, size // 2] = 1.0
    half = side // 2
    return module(x)[0, :, size // 2 - half:size // 2 + half + 1, size // 2 - half:size // 2 + half + 1]


def fit_decomposition(target: torch.Tensor, kernel_size: int = 21, dilation: int = 3, steps: int = 500,
                      lr: float = 0.05, seed: int = 0) -> dict:
    """The DW-Conv and DW-D-Conv of ``decomposition(kernel_size, dilation)`` whose joint response
    comes closest to ``target`` ([C, R, R], R the decomposition's receptive field: e.g. the
    ``impulse_response`` of a dense K x K depth-wise conv), by least squares with Adam.

    The product of two kernels is not convex in them, so this is a good fit, not a proven best
    one. Returns the fitted ``dw`` and ``dwd`` convs, their response ``kernel``, and the relative
    residual ||kernel - target|| / ||target||, over all channels (``residual``) and per channel.
    """
    dec = decomposition(kernel_size, dilation)
    channels, side = target.shape[0], dec.receptive_field
    if tuple(target.shape[1:]) != (side, side):
        raise VanEduError(f"target of shape {list(target.shape)} (expected [C, {side}, {side}]: the "
                          f"receptive field of K={kernel_size}, d={dilation})")
    torch.manual_seed(seed)
    dw = nn.Conv2d(channels, channels, dec.dw_kernel, padding=dec.dw_kernel // 2, groups=channels, bias=False)
    dwd = nn.Conv2d(channels, channels, dec.dwd_kernel, padding=dilation * (dec.dwd_kernel // 2),
                    dilation=dilation, groups=channels, bias=False)
    pair = nn.Sequential(dw, dwd)
    target = target.detach()
    optimizer = torch.optim.Adam(pair.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        ((impulse_response(pair, channels, side) - target) ** 2).sum().backward()
        optimizer.step()
    with torch.no_grad():
        kernel = impulse_response(pair, channels, side)
        per_channel = (kernel - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)
        residual = ((kernel - target).norm() / target.norm()).item()
    return {"dw": dw, "dwd": dwd, "kernel": kernel, "residual": residual, "per_channel": per_channel}


def _depthwise(channels: int, kernel: int, dilation: int, padding: int | None) -> nn.Conv2d:
    pad = "same" if padding is None else padding
    return nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels)


LKA_IMPL_DOCS = {   # how LKA computes its convs (the same function, the same weights): see LKA below
    "auto": "matrix products (van_edu.lka_fast) on a CPU unless hooks or a dispatch mode watch the convs; "
            "PyTorch's convs elsewhere",
    "fast": "matrix products (van_edu.lka_fast) on every device unless hooks or a dispatch mode watch the convs",
    "plain": "PyTorch's convs, as the authors wrote them",
}
LKA_IMPLS = tuple(LKA_IMPL_DOCS)


def observation_probes() -> dict[str, bool]:
    """Which of the probes that the fast path's fallback relies on this torch has.

    torch has no public API to ask whether a forward hook or a dispatch mode is active; ``LKA``
    reads every module's own hook dicts (``Module._forward_hooks``, ``_forward_pre_hooks``),
    torch's global hook dicts and ``_get_current_dispatch_mode``. A probe that is missing counts
    as "watched": the fast path is then never taken, which is correct, only slower.
    """
    probe = nn.Conv2d(1, 1, 1)
    return {
        "module hooks": hasattr(probe, "_forward_hooks") and hasattr(probe, "_forward_pre_hooks"),
        "global hooks": hasattr(nn_module, "_global_forward_hooks")
        and hasattr(nn_module, "_global_forward_pre_hooks"),
        "dispatch mode": _get_current_dispatch_mode is not None,
    }


class LKA(nn.Module):
    """Large kernel attention with the official layout (``conv0``, ``conv_spatial``, ``conv1``).

    Args:
        dim: channels C (input and output).
        kernel_size: K, the large kernel approximated (21 in VAN).
        dilation: d (3 in VAN).
        variant: one of ``LKA_VARIANTS`` (Table 3 ablations); ``"lka"`` is the paper's module.
        impl: how the depth-wise convs are computed (``LKA_IMPL_DOCS``). ``"plain"``: the three
            ``nn.Conv2d`` as the authors wrote them. ``"fast"``: the same function with the same
            parameters through matrix products (see ``van_edu.lka_fast``). ``"auto"``: fast on the
            CPU where it was measured to be faster, plain elsewhere (GPUs included). Both fast
            choices fall back to the plain convs while something watches them (a forward hook on
            a conv or on all modules, a dispatch mode such as ``FlopCounterMode``), since the fast
            path does not call them. ``last_path`` and the ``repr`` say which path the last
            forward took; ``set_impl`` switches.

    Input and output are [B, C, H, W]; the spatial size is kept. The parameters and state-dict
    keys do not depend on ``impl``, so a checkpoint loads into either.
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, variant: str = "lka",
                 impl: str = "auto"):
        super().__init__()
        _check_channels(dim)
        if variant not in LKA_VARIANTS:
            raise VanEduError(f"unknown LKA variant {variant!r}; choose one of {sorted(LKA_VARIANTS)}")
        self.dim = dim
        self.variant = variant
        self.set_impl(impl)
        self.last_path: str | None = None    # "fast" or "plain": the path the last forward took
        self.decomp = decomposition(kernel_size, dilation)
        dec = self.decomp
        if variant == "dense":
            pad = symmetric_padding(kernel_size)
            self.conv_dense = nn.Conv2d(dim, dim, kernel_size, padding="same" if pad is None else pad)
        else:
            if variant != "no_dw_conv":
                self.conv0 = _depthwise(dim, dec.dw_kernel, 1, dec.dw_padding)
            if variant != "no_dw_d_conv":
                self.conv_spatial = _depthwise(dim, dec.dwd_kernel, dec.dilation, dec.dwd_padding)
            if variant != "no_1x1":
                self.conv1 = nn.Conv2d(dim, dim, 1)

    def set_impl(self, impl: str) -> None:
        """Choose how the convs are computed: one of ``LKA_IMPLS`` (same weights, same function)."""
        if impl not in LKA_IMPLS:
            raise VanEduError(f"unknown LKA impl {impl!r}; choose one of {list(LKA_IMPLS)}")
        self.impl = impl

    def depthwise_convs(self) -> list[nn.Conv2d]:
        """The depth-wise convs this variant has, in order (``conv0``, ``conv_spatial``)."""
        return [getattr(self, name) for name in ("conv0", "conv_spatial") if hasattr(self, name)]

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        """Whether ``impl`` sends this input through the fast path.

        Never while something watches the convs run, since the fast path does not call them:
        forward hooks on them or on all modules (torchinfo, feature extractors) or a dispatch
        mode (``FlopCounterMode``) see the plain convs, as the authors wrote them.
        """
        if self.impl == "plain" or self.variant == "dense" or self._convs_observed():
            return False
        return self.impl == "fast" or x.device.type == "cpu"

    def _convs_observed(self) -> bool:
        """Hooks on the convs or on every module, or a Python dispatch mode, are active (or this
        torch lacks a probe to tell: see ``observation_probes``)."""
        if _get_current_dispatch_mode is None:
            return True
        mode = _get_current_dispatch_mode()
        if mode is not None and not getattr(mode, "lka_fast_path_ok", False):   # a counter that only
            return True                                                            # counts may say so
        if getattr(nn_module, "_global_forward_hooks", True) or getattr(nn_module, "_global_forward_pre_hooks", True):
            return True
        return any(getattr(conv, "_forward_hooks", True) or getattr(conv, "_forward_pre_hooks", True)
                   for conv in self.children())

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map (before it meets the input): [B, C, H, W] -> [B, C, H, W]."""
        attn = self._attention(x)
        if attn.is_contiguous() or attn.is_contiguous(memory_format=torch.channels_last):
            return attn
        return attn.contiguous()             # the fast path's map is a channels-first view

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """``attention_map``, possibly as a view with channels outermost in memory."""
        if self.variant == "dense":
            self.last_path = "plain"
            return self.conv_dense(x)
        if self.uses_fast_path(x):
            self.last_path = "fast"
            return self._fast_attention_map(x)
        self.last_path = "plain"
        attn = x
        if hasattr(self, "conv0"):
            attn = self.conv0(attn)          # local context, (2d-1)^2 taps per channel
        if hasattr(self, "conv_spatial"):
            attn = self.conv_spatial(attn)   # long-range context, ceil(K/d)^2 taps d apart
        if hasattr(self, "conv1"):
            attn = self.conv1(attn)          # channel mixing (the adaptability is the product)
        return attn

    def _fast_attention_map(self, x: torch.Tensor, plan: list[str] | None = None) -> torch.Tensor:
        """``attention_map`` through matrix products (``van_edu.lka_fast``), as a view with channels
        outermost in memory; ``plan`` overrides ``fast_plan`` (for measuring the alternatives)."""
        return fast_attention_map(x, self.depthwise_convs(), getattr(self, "conv1", None), plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise VanEduError(f"LKA expects input [B, {self.dim}, H, W], got shape {list(x.shape)}")
        if self.variant == "no_attention":
            return self.attention_map(x)
        attn = self._attention(x)            # [B, C, H, W]
        if self.variant == "add":
            return x + attn
        if self.variant == "sigmoid":
            attn = attn.sigmoid()
        return x * attn                      # gating: element-wise product, no softmax

    def extra_repr(self) -> str:
        d = self.decomp
        last = f", last forward: {self.last_path}" if self.last_path else ""
        return f"K={d.kernel_size}, d={d.dilation}, variant={self.variant!r}, impl={self.impl!r}{last}"
