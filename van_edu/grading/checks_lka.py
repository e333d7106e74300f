"""Checks of exercise set 02 (the LKA module): depth-wise convs, the composed kernel, LKA, Attention."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from . import reference as ref
from ._core import (
    CheckFailed,
    draw,
    expect,
    fmt_shape,
    load_reference_state,
    module_signature_mismatch,
    randn,
    randomize,
    seeded,
    task_check,
)


@task_check("depthwise_conv", "van_edu.lka._depthwise")
def depthwise_conv(S, hidden: bool, rng: random.Random):
    """``fn(channels, kernel, dilation)`` -> an ``nn.Conv2d`` that is depth-wise and keeps the size."""
    cases = [(4, 5, 1), (4, 7, 3), (6, 3, 2)]
    if hidden:
        cases += [(3, 9, 1), (5, 5, 4), (8, 3, 3), (2, 11, 2)]
        cases += [(rng.randint(1, 8), rng.randrange(1, 12, 2), rng.randint(1, 4)) for _ in range(3)]
    for c, k, d in cases:
        label = f"depthwise_conv({c}, {k}, {d})"
        conv = S.call(c, k, d, _seed=1)
        if not (getattr(conv, "module", False) and S.describe(conv, label)["is_conv2d"]):
            raise CheckFailed(f"{label}: expected an nn.Conv2d, got {getattr(conv, 'type', type(conv).__name__)}")
        reference = randomize(ref.depthwise_conv(c, k, d), draw(rng, hidden, c + k))
        problem = module_signature_mismatch(S.describe(conv, label)["convs"], reference)
        if problem:
            if "groups" in problem:
                problem += " (depth-wise: one filter per channel, groups = channels)"
            elif "padding" in problem:
                problem += " (to keep the size, pad by d (k - 1) / 2)"
            raise CheckFailed(f"{label}: {problem}")
        x = randn(2, c, 13, 13, seed=draw(rng, hidden, c + k))
        out = S.forward(conv, x, label=label)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
            raise CheckFailed(f"{label}: input {fmt_shape(x)} gave {fmt_shape(out)}; expected the same shape")
        S.load_state(conv, reference.state_dict(), label)
        with torch.no_grad():
            expect(S.forward(conv, x, label=label), reference(x), f"{label} on {fmt_shape(x)}")
    return f"{len(cases)} depth-wise convolutions keep the size"


@task_check("effective_kernel")
def effective_kernel(S, hidden: bool, rng: random.Random):
    """``fn(w_dw, w_dwd, dilation)`` -> the single kernel equal to the two depth-wise convs in a row."""
    cases = [(5, 7, 3), (3, 4, 2), (3, 3, 1)]
    if hidden:
        cases += [(7, 7, 4), (5, 5, 3), (1, 5, 2), (3, 2, 2)]
        cases += [(rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 4)) for _ in range(2)]
    for i, (k1, k2, d) in enumerate(cases):
        s1, s2 = draw(rng, hidden, 10 + i), draw(rng, hidden, 20 + i)
        a, b = randn(k1, k1, seed=s1), randn(k2, k2, seed=s2)
        label = f"effective_kernel(w_dw {k1}x{k1}, w_dwd {k2}x{k2}, dilation={d})"
        got = S.call(a.clone(), b.clone(), d)
        want = ref.effective_kernel(a, b, d)
        side = k1 + d * (k2 - 1)
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (side, side):
            raise CheckFailed(f"{label}: expected shape [{side}, {side}] (the receptive field "
                              f"{k1} + {d} x ({k2} - 1)), got {fmt_shape(got)}")
        expect(got, want, label, hints={
            "the DW-D-Conv kernel is flipped: torch's conv2d is a cross-correlation, so chaining two "
            "of them convolves the kernels (or use F.conv_transpose2d)": ref.effective_kernel(a, b.flip(0, 1), d),
            "the result is flipped: chaining two cross-correlations convolves the kernels": want.flip(0, 1),
        })
        if hidden:  # the defining property, on an image
            x = randn(1, 1, 40, 40, seed=30 + i)  # no padding: zero-padding between the convs changes the borders
            two = F.conv2d(F.conv2d(x, a[None, None]), b[None, None], dilation=d)
            one = F.conv2d(x, got[None, None].to(x.dtype))
            if two.shape == one.shape:
                expect(one, two, f"{label} applied to an image", atol=1e-4)
    return f"{len(cases)} pairs of kernels compose to the reference kernel"


def _lka_hints(reference: nn.Module, x: torch.Tensor) -> dict:
    attn = reference.attention_map(x)
    return {"you return the attention map alone: multiply it by the input (attn * x)": attn,
            "LKA multiplies the attention map by the input; it does not add them": attn + x,
            "LKA uses the attention map as it is, with no sigmoid": attn.sigmoid() * x}


@task_check("lka_module", "van_edu.lka.LKA", "van_edu.lka_fast.fast_attention_map")
def lka_module(S, hidden: bool, rng: random.Random):
    """``cls(dim, kernel_size=21, dilation=3)``: LKA with ``conv0``, ``conv_spatial``, ``conv1``."""
    cases = [(8, None, None, 16), (4, 21, 3, 30)]
    if hidden:
        cases += [(4, 7, 2, 12), (6, 14, 3, 15), (3, 28, 4, 20)]
    for i, (dim, k, d, side) in enumerate(cases):
        kw = {} if k is None else {"kernel_size": k, "dilation": d}
        label = f"LKA({dim}" + "".join(f", {a}={v}" for a, v in kw.items()) + ")"
        mine = S.call(dim, _name="LKA", _seed=2, **kw)
        with seeded(2):
            reference = ref.LKA(dim, **kw)
        if hidden:
            randomize(reference, rng.randrange(2**31))
        load_reference_state(S, mine, reference, label, signature=True)
        x = randn(2, dim, side, side, seed=draw(rng, hidden, 40 + i))
        with torch.no_grad():
            expect(S.forward(mine, x.clone(), label=label), reference(x), f"{label} on input {fmt_shape(x)}",
                   hints=_lka_hints(reference, x))
    return f"{len(cases)} configurations match the reference LKA"


@task_check("attention_module", "van_edu.models.van.Attention")
def attention_module(S, hidden: bool, rng: random.Random):
    """``cls(dim)``: proj_1 (1x1), GELU, LKA (``spatial_gating_unit``), proj_2 (1x1), plus the input."""
    sides = [(8, 12)] + ([(16, 9), (3, 24)] if hidden else [])
    for i, (dim, side) in enumerate(sides):
        label = f"Attention({dim})"
        mine = S.call(dim, _name="Attention", _seed=3)
        with seeded(3):
            reference = ref.Attention(dim)
        if hidden:
            randomize(reference, rng.randrange(2**31))
        load_reference_state(S, mine, reference, label)
        x = randn(2, dim, side, side, seed=draw(rng, hidden, 50 + i))
        with torch.no_grad():
            got = S.forward(mine, x.clone(), label=label)
            branch = reference.proj_2(reference.spatial_gating_unit(reference.activation(reference.proj_1(x))))
            no_act = reference.proj_2(reference.spatial_gating_unit(reference.proj_1(x))) + x
            expect(got, reference(x), f"{label} on input {fmt_shape(x)}", hints={
                "add the input back at the end (the shortcut: proj_2(...) + x)": branch,
                "apply GELU between proj_1 and the LKA": no_act,
            })
    return f"{len(sides)} inputs match the reference attention sub-layer"
