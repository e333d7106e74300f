"""The same LKA computed faster on a CPU: matrix products instead of PyTorch's depth-wise convs.

PyTorch's depth-wise convs are slow on the CPU: the dilated 7x7 in both passes, and the backward
pass of every depth-wise conv. Matrix products are fast. Per channel, a depth-wise conv with
zero padding is a linear map on the H*W pixels, a matrix [HW_in, HW_out] whose entries are the
kernel's weights (block-Toeplitz). The fast path scatters the weights into that matrix at every
call (the backward pass gathers the gradient back onto the weights) and applies it to all the
images at once with a batched product: the same function with the same parameters, only the
order of the float additions differs. Three ways, per conv (``fast_plan`` picks):

* ``"dense"``: the matrix of the whole map; it costs (H*W)^2 per channel and image, so small maps
  only. When the map has fewer pixels than the batch has images, conv0's and conv_spatial's
  matrices are multiplied first (``"composed"``): one product per image instead of two.
* ``"polyphase"``: a conv with dilation d only mixes pixels whose rows (and columns) agree modulo
  d. On each of the d x d sub-grids it is an ordinary conv, one (H*W/d^2)-pixel matrix shared
  by all sub-grids of all images: d^4 times less work than the dense matrix.
* ``"conv"``: PyTorch's conv on a channels-last copy, where oneDNN's depth-wise kernels are
  several times faster than on the usual (NCHW) layout.

The 1x1 conv is one matrix product over all pixels. ``LKA(..., impl="fast")`` (chosen by
``impl="auto"`` on the CPU) computes its attention map with ``fast_attention_map``; the functions
here take the LKA's own ``nn.Conv2d`` and read their weights, so parameters and state-dict keys are
the LKA's. `van-edu bench` (van_edu/bench.py) measures it all.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .conv_arithmetic import same_padding

__all__ = ["fast_plan", "fast_attention_map", "DENSE_MAX_PIXELS", "POLYPHASE_MAX_PIXELS"]

# The rule's two sizes, from measurements on a 2-core AMD EPYC (Zen 4), torch 2.13 CPU: dense
# matrices up to 10 x 10 maps (past that their (H*W)^2 cost and the cost of building them catch up
# with the other ways); polyphase matrices up to 16 x 16 sub-grids (48 x 48 maps for d = 3; on
# larger maps oneDNN's channels-last dilated conv is as fast and needs no rearranging).
DENSE_MAX_PIXELS = 100
POLYPHASE_MAX_PIXELS = 256


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(top, left): the zero padding a stride-1 conv puts before the image.

    The LKA chooses its paddings (``van_edu.conv_arithmetic.same_padding``); this only reads them back. For
    ``padding="same"`` PyTorch pads ``same_padding(k, d)`` before the image and puts the odd
    pixel, if any, after it.
    """
    if isinstance(conv.padding, str):
        return tuple(same_padding(k, d) for k, d in zip(conv.kernel_size, conv.dilation))
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


def _conv_matrix(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """[C, HW_in, HW_out] matrices of the depth-wise ``conv`` on a height x width map."""
    position, tap = _matrix_index(height, width, tuple(conv.kernel_size), tuple(conv.dilation),
                                  _padding(conv), conv.weight.device)
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


def fast_attention_map(x: torch.Tensor, convs, conv1: nn.Conv2d | None = None,
                       plan: list[str] | None = None) -> torch.Tensor:
    """LKA's attention map through matrix products: x [B, C, H, W] -> [B, C, H, W].

    ``convs`` are the LKA's depth-wise convs in order (``conv0``, ``conv_spatial``, either may be
    missing), ``conv1`` its 1x1 conv (None: no channel mixing). ``plan`` overrides ``fast_plan``
    (for measuring the alternatives). Channels lead in memory, as the batch of ``bmm``: the answer
    is a [B, C, H, W] view of a [C, B, H, W] tensor.
    """
    batch, channels, height, width = x.shape
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
                a = a.view(channels, batch, height, width).transpose(0, 1)      # [B, C, H, W]
                a = conv(a.contiguous(memory_format=torch.channels_last)).transpose(0, 1)
    if conv1 is not None:                                  # 1x1 conv: [C, C] @ [C, B HW]
        w, b = conv1.weight.view(channels, channels), conv1.bias
        a = a.reshape(channels, -1)
        a = torch.mm(w, a) if b is None else torch.addmm(b[:, None], w, a)
    return a.view(channels, batch, height, width).transpose(0, 1)   # [B, C, H, W] (a view)
