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
