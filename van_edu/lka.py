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

This module holds the module itself, the decomposition rule for any K and d, Eq. (3), the
parameter counts of Table 2 and receptive-field arithmetic (computed and measured). It knows
nothing of training.

It also holds a faster way to compute the same LKA on the CPU (``LKA(..., impl="fast")``, chosen
by ``impl="auto"``), with the same parameters: see "A fast path for the CPU" below.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VanEduError

__all__ = [
    "Decomposition", "decomposition", "lka_params", "conv_params", "mobilenet_params",
    "best_dilation", "receptive_field", "stack_receptive_field", "measure_receptive_field",
    "LKA", "LKA_VARIANTS", "LKA_IMPLS", "fast_plan",
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
    dw_padding: int      # (2d - 1) // 2 = d - 1
    dwd_kernel: int      # ceil(K / d)
    dwd_padding: int | None  # d * (ceil(K/d) - 1) / 2 when that is a whole number

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
    span = dilation * (dwd - 1)  # extent of the dilated kernel minus one
    return Decomposition(kernel_size, dilation, dw, dw // 2, dwd, span // 2 if span % 2 == 0 else None)


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


def stack_receptive_field(layers) -> int:
    """Receptive field of stacked stride-1 convolutions given as (kernel, dilation) pairs.

    Each layer widens the field by dilation * (kernel - 1): 1 + sum(d_i (k_i - 1)).
    """
    return 1 + sum(d * (k - 1) for k, d in layers)


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
    "no_1x1": "Table 3: without the 1x1 convolution (no channel adaptability)",
    "dense": "Table 3: a dense K x K convolution instead of the decomposition (then the multiply)",
}


def _depthwise(channels: int, kernel: int, dilation: int, padding: int | None) -> nn.Conv2d:
    pad = "same" if padding is None else padding
    return nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels)


# --- A fast path for the CPU --------------------------------------------------------------------
# PyTorch's depth-wise convs are slow on the CPU: the dilated 7x7 in both passes, and the backward
# pass of every depth-wise conv. Matrix products are fast. Per channel, a depth-wise conv with
# zero padding is a linear map on the H*W pixels, a matrix [HW_in, HW_out] whose entries are the
# kernel's weights (block-Toeplitz). The fast path scatters the weights into that matrix at every
# call (the backward pass gathers the gradient back onto the weights) and applies it to all the
# images at once with a batched product: the same function with the same parameters, only the
# order of the float additions differs. Three ways, per conv (``fast_plan`` picks):
#   * "dense": the matrix of the whole map; it costs (H*W)^2 per channel and image, so small maps
#     only. When the map has fewer pixels than the batch has images, conv0's and conv_spatial's
#     matrices are multiplied first ("composed"): one product per image instead of two.
#   * "polyphase": a conv with dilation d only mixes pixels whose rows (and columns) agree modulo
#     d. On each of the d x d sub-grids it is an ordinary conv, one (H*W/d^2)-pixel matrix shared
#     by all sub-grids of all images: d^4 times less work than the dense matrix.
#   * "conv": PyTorch's conv on a channels-last copy, where oneDNN's depth-wise kernels are several
#     times faster than on the usual (NCHW) layout.
# The 1x1 conv is one matrix product over all pixels. `van-edu bench` (van_edu/bench.py) measures it all.

LKA_IMPLS = ("auto", "fast", "plain")

# The rule's two sizes, from measurements on a 2-core AMD EPYC (Zen 4), torch 2.13 CPU: dense
# matrices up to 10 x 10 maps (past that their (H*W)^2 cost and the cost of building them catch up
# with the other ways); polyphase matrices up to 16 x 16 sub-grids (48 x 48 maps for d = 3; on
# larger maps oneDNN's channels-last dilated conv is as fast and needs no rearranging).
DENSE_MAX_PIXELS = 100
POLYPHASE_MAX_PIXELS = 256


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(top, left) zero padding of a stride-1 conv; for ``"same"`` PyTorch puts the odd pixel
    at the bottom and the right."""
    if isinstance(conv.padding, str):
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return tuple(conv.padding)


def fast_plan(batch: int, height: int, width: int, convs) -> list[str]:
    """How the fast path computes each depth-wise conv of an LKA on a [batch, C, height, width]
    input. ``convs`` are the depth-wise ``nn.Conv2d`` in order; the answer has one entry each:

    * ``"dense"`` when the map has at most ``DENSE_MAX_PIXELS`` pixels, or ``"composed"`` (both
      convs as one matrix) when there are two convs and fewer pixels than images;
    * otherwise ``"polyphase"`` for a dilated conv whose sub-grids have at most
      ``POLYPHASE_MAX_PIXELS`` pixels, and ``"conv"`` (PyTorch's conv, channels-last) for the rest.
    """
    pixels = height * width
    if pixels <= DENSE_MAX_PIXELS:
        return ["composed"] * 2 if len(convs) == 2 and pixels < batch else ["dense"] * len(convs)
    plan = []
    for conv in convs:
        d = conv.dilation
        top, left = _padding(conv)
        sub = math.ceil((height + top % d[0]) / d[0]) * math.ceil((width + left % d[1]) / d[1])
        plan.append("polyphase" if d[0] == d[1] > 1 and sub <= POLYPHASE_MAX_PIXELS else "conv")
    return plan


@functools.lru_cache(maxsize=256)
def _matrix_index(height, width, kernel, dilation, padding, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the taps of a depth-wise conv land in its [HW_in, HW_out] matrix, flattened.

    Returns (position, tap): entry ``position[m]`` of the flattened matrix holds weight
    ``tap[m]`` (index into the flattened kh x kw kernel); every other entry is zero. Taps that
    read only padding on this map never appear.
    """
    (kh, kw), (dh, dw), (ph, pw) = kernel, dilation, padding
    i = torch.arange(height).view(1, 1, -1, 1)     # output row
    j = torch.arange(width).view(1, 1, 1, -1)      # output column
    u = torch.arange(kh).view(-1, 1, 1, 1)         # tap row
    v = torch.arange(kw).view(1, -1, 1, 1)         # tap column
    rows, cols = i + u * dh - ph, j + v * dw - pw  # the input pixel each tap reads
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)      # [kh, kw, H, W]
    pixels = height * width
    position = (rows * width + cols) * pixels + (i * width + j)                 # [q_in, p_out]
    tap = (u * kw + v).expand_as(position)
    return position[inside].to(device), tap[inside].to(device)


def _taps_to_matrix(weight: torch.Tensor, position: torch.Tensor, tap: torch.Tensor, pixels: int):
    """Scatter the kernels [C, 1, kh, kw] into their matrices [C, pixels_in, pixels_out]."""
    channels = weight.shape[0]
    matrix = weight.new_zeros(channels, pixels * pixels)
    matrix.index_copy_(1, position, weight.reshape(channels, -1).index_select(1, tap))
    return matrix.view(channels, pixels, pixels)


def _matrix_to_taps(grad: torch.Tensor, position: torch.Tensor, tap: torch.Tensor, weight_shape):
    """The gradient of ``_taps_to_matrix``: each weight collects the entries that hold it."""
    channels = weight_shape[0]
    per_entry = grad.reshape(channels, -1).index_select(1, position)
    taps = weight_shape[2] * weight_shape[3]
    return per_entry.new_zeros(channels, taps).index_add_(1, tap, per_entry).view(weight_shape)


class _ConvMatrix(torch.autograd.Function):
    """The matrices [C, HW_in, HW_out] of a depth-wise conv from its weight [C, 1, kh, kw]."""

    @staticmethod
    def forward(ctx, weight, position, tap, pixels):
        ctx.save_for_backward(position, tap)
        ctx.weight_shape = weight.shape
        return _taps_to_matrix(weight, position, tap, pixels)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        position, tap = ctx.saved_tensors
        return _matrix_to_taps(grad, position, tap, ctx.weight_shape), None, None, None


def _conv_matrix(conv: nn.Conv2d, height: int, width: int, dilation=None, padding=None) -> torch.Tensor:
    """[C, HW_in, HW_out] matrices of ``conv`` on a height x width map (dilation and padding may
    be overridden: the polyphase sub-grid conv has dilation 1)."""
    dilation = tuple(conv.dilation) if dilation is None else dilation
    padding = _padding(conv) if padding is None else padding
    position, tap = _matrix_index(height, width, tuple(conv.kernel_size), dilation, padding,
                                  conv.weight.device)
    return _ConvMatrix.apply(conv.weight, position, tap, height * width)


def _bias(conv: nn.Conv2d, like: torch.Tensor) -> torch.Tensor:
    """The conv's bias as [C, 1, 1] (zeros if it has none), to add to [C, rows, pixels]."""
    if conv.bias is None:
        return like.new_zeros(like.shape[0], 1, 1)
    return conv.bias.view(-1, 1, 1)


def _composed(a: torch.Tensor, convs, height: int, width: int) -> torch.Tensor:
    """conv0 then conv_spatial as one dense matrix: a: [C, B, HW] -> [C, B, HW]."""
    (m0, m1), (c0, c1) = [_conv_matrix(conv, height, width) for conv in convs], convs
    bias = _bias(c0, a) * m1.sum(1, keepdim=True) + _bias(c1, a)   # [C, 1, HW]: conv0's bias
    return torch.baddbmm(bias, a, torch.bmm(m0, m1))               # through conv_spatial


def _dense(a: torch.Tensor, conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """One depth-wise conv as a dense matrix: a: [C, B, HW] -> [C, B, HW]."""
    return torch.baddbmm(_bias(conv, a), a, _conv_matrix(conv, height, width))


def _sub_grid_slices(size: int, shift: int, d: int):
    """For each residue r: (first image index, first cell, cell count) of the image pixels that
    land on canvas row/column class r when the image starts at canvas index ``shift``."""
    out = []
    for r in range(d):
        first = (r - shift) % d                        # image index whose canvas index is = r mod d
        out.append((first, (first + shift) // d, len(range(first, size, d))))
    return out


def _to_grids(a: torch.Tensor, d: int, shift: tuple[int, int], cells: tuple[int, int]) -> torch.Tensor:
    """[C, B, H, W] (any strides) -> its d x d sub-grids [C, B, d, d, hq, wq], zeros off the image."""
    channels, batch, height, width = a.shape
    rows, cols = _sub_grid_slices(height, shift[0], d), _sub_grid_slices(width, shift[1], d)
    grids = a.new_empty(channels, batch, d, d, *cells)
    # Zero only the rows and columns of cells that some sub-grid leaves off the image (a border
    # a cell or two wide; cheaper than zeroing everything); the copies overwrite the rest.
    grids[..., :max(i for _, i, _ in rows), :] = 0
    grids[..., min(i + n for _, i, n in rows):, :] = 0
    grids[..., :max(j for _, j, _ in cols)] = 0
    grids[..., min(j + n for _, j, n in cols):] = 0
    for r, (y, i, nr) in enumerate(rows):
        for s, (x, j, ns) in enumerate(cols):
            grids[:, :, r, s, i:i + nr, j:j + ns] = a[:, :, y::d, x::d]
    return grids


def _from_grids(grids: torch.Tensor, d: int, shift: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The inverse of ``_to_grids``: [C, B, d, d, hq, wq] -> [C, B, H, W] (contiguous)."""
    channels, batch = grids.shape[:2]
    out = grids.new_empty(channels, batch, *size)
    for r, (y, i, nr) in enumerate(_sub_grid_slices(size[0], shift[0], d)):
        for s, (x, j, ns) in enumerate(_sub_grid_slices(size[1], shift[1], d)):
            out[:, :, y::d, x::d] = grids[:, :, r, s, i:i + nr, j:j + ns]
    return out


class _Polyphase(torch.autograd.Function):
    """A depth-wise conv with dilation d (the same along both axes) computed on its d x d
    sub-grids: [C, B, H, W] -> [C, B, H, W].

    The input sits on a canvas at offset (top % d, left % d), the output at offset 0: then each
    tap reads the sub-grid it writes, and the conv on every sub-grid is one ordinary (dilation 1)
    conv, one matrix [hq wq, hq wq] per channel shared by all sub-grids of all images. Written as
    a Function so that the rearrangements are the only copies, in both passes.
    """

    @staticmethod
    def forward(ctx, a, weight, bias, d, top, left):
        channels, batch, height, width = a.shape
        shift = (top % d, left % d)
        cells = (math.ceil((height + shift[0]) / d), math.ceil((width + shift[1]) / d))
        position, tap = _matrix_index(*cells, tuple(weight.shape[2:]), (1, 1), (top // d, left // d), a.device)
        matrix = _taps_to_matrix(weight, position, tap, cells[0] * cells[1])      # [C, n, n]
        grids = _to_grids(a, d, shift, cells).view(channels, -1, matrix.shape[1])  # [C, B d d, n]
        bias = a.new_zeros(channels) if bias is None else bias
        out = torch.baddbmm(bias.view(-1, 1, 1), grids, matrix)   # autocast may pick the dtype
        ctx.save_for_backward(grids.to(out.dtype), matrix.to(out.dtype), position, tap)
        ctx.geometry = (d, shift, cells, (height, width), weight.shape)
        ctx.dtypes = (a.dtype, weight.dtype, bias.dtype)
        return _from_grids(out.view(channels, batch, d, d, *cells), d, (0, 0), (height, width))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        grids, matrix, position, tap = ctx.saved_tensors
        d, shift, cells, size, weight_shape = ctx.geometry
        channels, batch = grad.shape[:2]
        grad = grad.to(matrix.dtype)
        grad_grids = _to_grids(grad, d, (0, 0), cells).view(channels, -1, matrix.shape[1])
        grad_a = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.bmm(grad_grids, matrix.transpose(1, 2))
            grad_a = _from_grids(grad_a.view(channels, batch, d, d, *cells), d, shift, size)
            grad_a = grad_a.to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_matrix = torch.bmm(grids.transpose(1, 2), grad_grids)             # [C, n, n]
            grad_weight = _matrix_to_taps(grad_matrix, position, tap, weight_shape).to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((1, 2, 3)).to(ctx.dtypes[2])
        return grad_a, grad_weight, grad_bias, None, None, None


def _polyphase(a: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A dilated depth-wise conv on the d x d sub-grids: a: [C, B, H, W] -> [C, B, H, W]."""
    top, left = _padding(conv)
    return _Polyphase.apply(a, conv.weight, conv.bias, conv.dilation[0], top, left)


class LKA(nn.Module):
    """Large kernel attention with the official layout (``conv0``, ``conv_spatial``, ``conv1``).

    Args:
        dim: channels C (input and output).
        kernel_size: K, the large kernel approximated (21 in VAN).
        dilation: d (3 in VAN).
        variant: one of ``LKA_VARIANTS`` (Table 3 ablations); ``"lka"`` is the paper's module.
        impl: how the depth-wise convs are computed. ``"plain"``: the three ``nn.Conv2d`` as the
            authors wrote them. ``"fast"``: the same function with the same parameters through
            matrix products (see ``fast_plan``). ``"auto"``: fast on the CPU where it was
            measured to be faster, plain elsewhere (GPUs included).

    Input and output are [B, C, H, W]; the spatial size is kept. The parameters and state-dict
    keys do not depend on ``impl``, so a checkpoint loads into either.
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, variant: str = "lka",
                 impl: str = "auto"):
        super().__init__()
        _check_channels(dim)
        if variant not in LKA_VARIANTS:
            raise VanEduError(f"unknown LKA variant {variant!r}; choose one of {sorted(LKA_VARIANTS)}")
        if impl not in LKA_IMPLS:
            raise VanEduError(f"unknown LKA impl {impl!r}; choose one of {list(LKA_IMPLS)}")
        self.dim = dim
        self.variant = variant
        self.impl = impl
        self.decomp = decomposition(kernel_size, dilation)
        dec = self.decomp
        if variant == "dense":
            pad = (kernel_size - 1) // 2 if kernel_size % 2 else None
            self.conv_dense = nn.Conv2d(dim, dim, kernel_size, padding="same" if pad is None else pad)
        else:
            if variant != "no_dw_conv":
                self.conv0 = _depthwise(dim, dec.dw_kernel, 1, dec.dw_padding)
            if variant != "no_dw_d_conv":
                self.conv_spatial = _depthwise(dim, dec.dwd_kernel, dec.dilation, dec.dwd_padding)
            if variant != "no_1x1":
                self.conv1 = nn.Conv2d(dim, dim, 1)

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
        """Hooks on the convs or on every module, or a Python dispatch mode, are active."""
        from torch.nn.modules import module as nn_module
        if getattr(nn_module, "_global_forward_hooks", None) or getattr(nn_module, "_global_forward_pre_hooks", None):
            return True
        if any(conv._forward_hooks or conv._forward_pre_hooks for conv in self.children()):
            return True
        try:
            from torch.utils._python_dispatch import _get_current_dispatch_mode
        except ImportError:  # a torch without it: nothing to detect
            return False
        return _get_current_dispatch_mode() is not None

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map (before it meets the input): [B, C, H, W] -> [B, C, H, W]."""
        attn = self._attention(x)
        if attn.is_contiguous() or attn.is_contiguous(memory_format=torch.channels_last):
            return attn
        return attn.contiguous()             # the fast path's map is a channels-first view

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """``attention_map``, possibly as a view with channels outermost in memory."""
        if self.variant == "dense":
            return self.conv_dense(x)
        if self.uses_fast_path(x):
            return self._fast_attention_map(x)
        attn = x
        if hasattr(self, "conv0"):
            attn = self.conv0(attn)          # local context, (2d-1)^2 taps per channel
        if hasattr(self, "conv_spatial"):
            attn = self.conv_spatial(attn)   # long-range context, ceil(K/d)^2 taps d apart
        if hasattr(self, "conv1"):
            attn = self.conv1(attn)          # channel mixing: channel adaptability
        return attn

    def _fast_attention_map(self, x: torch.Tensor, plan: list[str] | None = None) -> torch.Tensor:
        """``attention_map`` through matrix products; channels lead, as the batch of ``bmm``.
        ``plan`` overrides ``fast_plan`` (for measuring the alternatives)."""
        batch, channels, height, width = x.shape
        convs = self.depthwise_convs()
        plan = plan or fast_plan(batch, height, width, convs)
        flat = (channels, batch, height * width)
        a = x.transpose(0, 1)                                  # [C, B, H, W] (a view)
        if plan[0] == "composed":
            a = _composed(a.reshape(flat), convs, height, width)
        else:
            for conv, how in zip(convs, plan):
                if how == "dense":
                    a = _dense(a.reshape(flat), conv, height, width)
                elif how == "polyphase":
                    a = _polyphase(a.view(channels, batch, height, width), conv)
                else:   # PyTorch's conv, channels-last: there oneDNN's depth-wise kernels are fast
                    a = a.view(channels, batch, height, width).transpose(0, 1)
                    a = conv(a.contiguous(memory_format=torch.channels_last)).transpose(0, 1)
        if hasattr(self, "conv1"):                             # 1x1 conv: [C, C] @ [C, B HW]
            w, b = self.conv1.weight.view(channels, channels), self.conv1.bias
            a = a.reshape(channels, -1)
            a = torch.mm(w, a) if b is None else torch.addmm(b[:, None], w, a)
        return a.view(channels, batch, height, width).transpose(0, 1)   # [B, C, H, W] (a view)

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
        return f"K={d.kernel_size}, d={d.dilation}, variant={self.variant!r}, impl={self.impl!r}"
