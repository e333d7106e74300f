"""Counting cost: parameters, multiply-adds (one counter for every model) and the paper's tables.

Conventions: the paper's "FLOPs" are multiply-adds (MACs) at 224x224. ``torch.utils.flop_counter``
counts a multiply-add as two FLOPs and skips the additions of biases; ``MacCounter`` is that counter
with the biases put back (one multiply-add per output of a layer with a bias), reporting
multiply-adds. ``count_macs`` runs a model under it on the meta device, where tensors have shapes
but no data: no memory for activations, no arithmetic, B6 in seconds. It sees every
operator, so a ViT's attention products (``scaled_dot_product_attention``) are counted like its
linear layers. Paper values are kept here only to be printed beside the counted ones.

Timing, throughput and memory against resolution live in ``van_edu.scaling``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import VanEduError
from .lka import LKA, conv_params, lka_params, mobilenet_params
from .models import create_model, list_models, model_family

__all__ = ["PAPER_TABLE2", "PAPER_TABLE5", "PAPER_TABLE6", "PAPER_THROUGHPUT", "count_params", "input_shape", "MacCounter",
           "count_macs", "variant_table", "table2", "format_table"]

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
# Table 6 of the paper (VAN-B0 with other kernel sizes): (K, d) -> (params in millions, top-1 %).
PAPER_TABLE6 = {(7, 2): (4.03, 74.8), (14, 3): (4.07, 75.3), (21, 3): (4.11, 75.4), (28, 4): (4.14, 75.4)}
# The paper's measured throughput (images/s at 224^2 on an RTX 3090).
PAPER_THROUGHPUT = {"van_b0": 2140, "van_b1": 1420, "van_b2": 762, "van_b3": 452, "van_b4": 341}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def input_shape(model: nn.Module, input_size) -> tuple[int, ...]:
    """``input_size`` as a full input shape: a side length means one image with the model's
    ``config.in_chans`` channels (3 if it has no config); a shape is returned as it is."""
    if isinstance(input_size, int):
        chans = getattr(getattr(model, "config", None), "in_chans", 3)
        shape = (1, chans, input_size, input_size)
    else:
        shape = tuple(input_size)
    if not all(isinstance(n, int) and n >= 1 for n in shape):
        raise VanEduError(f"input size {input_size!r} has a dimension below 1 (expected a side length "
                          "or a shape [B, C, H, W] of positive whole numbers)")
    return shape


# --- The counter -----------------------------------------------------------------------------------
# FlopCounterMode calls each formula with the shapes of the operator's arguments and output, and
# adds up what it returns in FLOPs (2 per multiply-add); these replace its own for three operators.
def _conv_flops(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None,
                **kwargs) -> int:
    """A convolution: every output value costs (C_in / groups) * k_h * k_w multiply-adds, plus one
    for the bias. (Transposed: every input value meets the whole kernel.)"""
    per_value = math.prod(w_shape[1:])                   # weight [C_out, C_in / groups, k_h, k_w]
    macs = math.prod(x_shape if transposed else out_shape) * per_value
    if bias is not None:
        macs += math.prod(out_shape)
    return 2 * macs


def _addmm_flops(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """bias + A @ B, a linear layer with a bias: k multiply-adds per output value, plus one."""
    (m, k), n = a_shape, b_shape[1]
    return 2 * m * n * (k + 1)


def _cpu_attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """softmax(Q K^T) V on [B, heads, N, e]: N_q * N_k * e for Q K^T, as many for the product with V
    (the fused CPU kernel that FlopCounterMode does not know; on the meta device attention runs as
    two batched matrix products, which it counts the same way)."""
    b, h, n_q, e = q_shape
    n_k, e_v = k_shape[-2], v_shape[-1]
    return 2 * b * h * n_q * n_k * (e + e_v)


_aten = torch.ops.aten
_FORMULAS = {_aten.convolution: _conv_flops, _aten._convolution: _conv_flops, _aten.addmm: _addmm_flops}
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):   # torch >= 2.2
    _FORMULAS[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops


class MacCounter(FlopCounterMode):
    """PyTorch's operator counter with biases counted; ``macs`` is the total in multiply-adds.

    ``with MacCounter() as counter: model(x)`` counts every convolution, matrix product and
    attention product that runs inside the block, on any device. A bias counts one multiply-add
    per output value where PyTorch adds it inside the layer's operator: every convolution, and a
    linear layer on a 2-D or contiguous input (a single ``addmm``), which covers every linear
    layer of the course's models. Norms, activations and element-wise products are not counted,
    as in the paper. LKA modules see the counter and run their plain convolutions.
    """

    def __init__(self):
        super().__init__(display=False, custom_mapping=_FORMULAS)

    @property
    def macs(self) -> int:
        return self.get_total_flops() // 2


def count_macs(model: nn.Module, input_size=224) -> int:
    """Multiply-adds per image of one forward pass (evaluation mode), counted on the meta device.

    ``input_size`` is a side length (one image with the model's ``in_chans``) or a full shape.
    The model may live anywhere: its weights are stood in for by meta tensors of the same shapes
    (``torch.func.functional_call``), so nothing is copied and the weights are untouched.
    """
    shape = input_shape(model, input_size)
    dtype = next(model.parameters(), torch.empty(0)).dtype
    stand_ins = {name: torch.empty_like(t, device="meta")
                 for name, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), MacCounter() as counter:
            torch.func.functional_call(model, stand_ins, (torch.empty(shape, dtype=dtype, device="meta"),))
    finally:
        model.train(was_training)
    return counter.macs // shape[0]


def variant_table(names=None, resolution: int = 224, macs: bool = True) -> list[dict]:
    """Parameters and multiply-adds of VAN variants, counted from their modules, beside Table 5.

    Each row: name, params (exact, 1000-class head), paper_params_m, gmacs (at ``resolution``,
    or None when ``macs=False``), paper_gflops, paper_top1. The models are built on the meta
    device: counting needs their shapes, not their weights.
    """
    names = list(names or PAPER_TABLE5)
    vans = list_models("van")
    for name in names:
        if name not in vans:
            what = f"a {model_family(name)} model, not a VAN variant" if name in list_models() else "unknown"
            raise VanEduError(f"{name!r} is {what} (expected VAN variants: {', '.join(vans)})")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise VanEduError(f"resolution must be a positive number of pixels, got {resolution!r}")
    rows = []
    for name in names:
        with torch.device("meta"):
            model = create_model(name, num_classes=1000)
        paper = PAPER_TABLE5.get(name, (None, None, None))
        rows.append({
            "name": name, "params": count_params(model), "paper_params_m": paper[0],
            "gmacs": count_macs(model, resolution) / 1e9 if macs else None,
            "paper_gflops": paper[1], "paper_top1": paper[2],
        })
    return rows


# --- Table 2 ---------------------------------------------------------------------------------------
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
