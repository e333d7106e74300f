"""Checks of exercise set 04 (cost): self-attention, its multiply-adds against LKA's, parameter counts."""
from __future__ import annotations

import math
import random

import torch
from torch import nn

from . import reference as ref
from ._core import call, expect_number, expect_tensor, require_callable, task_check

__all__ = ["attention", "attention_macs", "lka_macs", "count_parameters"]


def _randn(*shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@task_check("attention")
def attention(fn, hidden: bool = False):
    """``fn(q, k, v)`` = softmax(q k^T / sqrt(D)) v over the last two dimensions."""
    require_callable(fn, "attention")
    cases = [((2, 5, 8), (2, 5, 8), (2, 5, 8), 1.0), ((2, 4, 6), (2, 7, 6), (2, 7, 3), 1.0)]
    if hidden:
        cases += [((2, 3, 9, 16), (2, 3, 11, 16), (2, 3, 11, 4), 1.0),  # heads as a batch dimension
                  ((1, 6, 4), (1, 6, 4), (1, 6, 4), 30.0)]              # large scores: softmax must be stable
    for i, (qs, ks, vs, scale) in enumerate(cases):
        q, k, v = _randn(*qs, seed=i, scale=scale), _randn(*ks, seed=10 + i, scale=scale), _randn(*vs, seed=20 + i)
        label = f"attention(q {list(qs)}, k {list(ks)}, v {list(vs)})"
        got = call(fn, q.clone(), k.clone(), v.clone())
        want = ref.attention(q, k, v)
        scores = q @ k.transpose(-2, -1)
        expect_tensor(got, want, label, hints={
            f"divide the scores q k^T by sqrt(D) = sqrt({qs[-1]}) before the softmax": scores.softmax(-1) @ v,
            "take the softmax over the keys (the last dimension), so each query's weights sum to 1":
                (scores / math.sqrt(qs[-1])).softmax(-2) @ v if ks[-2] == qs[-2] else None,
        })
    return "matches softmax(q k^T / sqrt(D)) v" + (", with heads and large scores" if hidden else "")


def _side_cases(hidden: bool, seed: int):
    cases = [(14, 14, 64), (56, 56, 32), (7, 7, 512), (1, 1, 1)]
    if hidden:
        rng = random.Random(seed)
        cases += [(rng.randint(1, 80), rng.randint(1, 80), rng.randint(1, 768)) for _ in range(30)]
    return cases


@task_check("attention_macs")
def attention_macs(fn, hidden: bool = False):
    """``fn(height, width, dim)``: multiply-adds of global self-attention, 4 N C^2 + 2 N^2 C."""
    require_callable(fn, "attention_macs")
    for h, w, c in _side_cases(hidden, 17):
        got = call(fn, h, w, c)
        want = ref.attention_macs(h, w, c)
        n = h * w
        hint = ""
        if got == 4 * n * c * c + 2 * n * c:
            hint = " (Q K^T and A V each cost N^2 C: every one of the N tokens meets all N)"
        elif got == 2 * n * n * c:
            hint = " (include the four C x C projections, Q, K, V and the output: 4 N C^2)"
        elif got == 3 * n * c * c + 2 * n * n * c:
            hint = " (the output projection after A V costs another N C^2)"
        expect_number(got, want, f"attention_macs({h}, {w}, {c})", hint=hint)
    return "4 N C^2 + 2 N^2 C on " + ("34" if hidden else "4") + " feature-map sizes"


@task_check("lka_macs")
def lka_macs(fn, hidden: bool = False):
    """``fn(height, width, dim, kernel_size=21, dilation=3)``: Eq. (4), P(K, d) H W."""
    require_callable(fn, "lka_macs")
    cases = [(h, w, c, None, None) for h, w, c in _side_cases(hidden, 18)]
    cases += [(14, 14, 64, 7, 2), (8, 8, 16, 28, 4)]
    if hidden:
        rng = random.Random(19)
        for _ in range(20):
            k = rng.randint(2, 40)
            cases.append((rng.randint(1, 60), rng.randint(1, 60), rng.randint(1, 512), k, rng.randint(1, k)))
    for h, w, c, k, d in cases:
        kw = {} if k is None else {"kernel_size": k, "dilation": d}
        got = call(fn, h, w, c, **kw)
        want = ref.lka_macs(h, w, c, **kw)
        label = f"lka_macs({h}, {w}, {c}" + "".join(f", {a}={v}" for a, v in kw.items()) + ")"
        hint = ""
        if got == want - c * c * h * w:
            hint = " (the 1x1 convolution costs C^2 per position)"
        expect_number(got, want, label, hint=hint)
    return "Eq. (4) on " + str(len(cases)) + " sizes and kernels"


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)
        self.scale = nn.Parameter(torch.ones(8))


@task_check("count_parameters")
def count_parameters(fn, hidden: bool = False):
    """``fn(model, trainable_only=False)``: the number of parameters (elements, not tensors)."""
    require_callable(fn, "count_parameters")
    from ..models import create_model

    models = [("nn.Linear(10, 5)", nn.Linear(10, 5)), ("a small conv net", _Tiny())]
    if hidden:
        with torch.device("meta"):
            models.append(("van_b0", create_model("van_b0")))
        frozen = _Tiny()
        frozen.conv.requires_grad_(False)
        models.append(("a conv net with a frozen conv", frozen))
    for name, model in models:
        want = ref.count_parameters(model)
        got = call(fn, model)
        hint = f" (count elements, p.numel(), not tensors: that gives {len(list(model.parameters()))})" \
            if got == len(list(model.parameters())) else ""
        expect_number(got, want, f"count_parameters({name})", hint=hint)
        got = call(fn, model, trainable_only=True)
        expect_number(got, ref.count_parameters(model, trainable_only=True),
                      f"count_parameters({name}, trainable_only=True) (count only parameters with requires_grad)")
    return "exact counts" + (" including van_b0 (4,105,800)" if hidden else "")
