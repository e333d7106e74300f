"""Checks of exercise set 04 (cost): self-attention, its multiply-adds against LKA's, parameter counts."""
from __future__ import annotations

import math
import random

from . import fixtures
from . import reference as ref
from ._core import expect, randn, task_check


@task_check("attention", "van_edu.models.attention.GlobalSelfAttention")
def attention(S, hidden: bool, rng: random.Random):
    """``fn(q, k, v)`` = softmax(q k^T / sqrt(D)) v over the last two dimensions."""
    cases = [((2, 5, 8), (2, 5, 8), (2, 5, 8), 1.0), ((2, 4, 6), (2, 7, 6), (2, 7, 3), 1.0)]
    if hidden:
        cases += [((2, 3, 9, 16), (2, 3, 11, 16), (2, 3, 11, 4), 1.0),  # heads as a batch dimension
                  ((1, 6, 4), (1, 6, 4), (1, 6, 4), 30.0)]              # large scores: softmax must be stable
        n, m, dim = rng.randint(1, 12), rng.randint(1, 12), rng.randint(1, 16)
        cases.append(((3, n, dim), (3, m, dim), (3, m, rng.randint(1, 8)), 1.0))
    for i, (qs, ks, vs, scale) in enumerate(cases):
        seeds = [rng.randrange(2**31) for _ in range(3)] if hidden else [i, 10 + i, 20 + i]
        q, k, v = (randn(*qs, seed=seeds[0], scale=scale), randn(*ks, seed=seeds[1], scale=scale),
                   randn(*vs, seed=seeds[2]))
        label = f"attention(q {list(qs)}, k {list(ks)}, v {list(vs)})"
        got = S.call(q.clone(), k.clone(), v.clone())
        want = ref.attention(q, k, v)
        scores = q @ k.transpose(-2, -1)
        expect(got, want, label, hints={
            f"divide the scores q k^T by sqrt(D) = sqrt({qs[-1]}) before the softmax": scores.softmax(-1) @ v,
            "take the softmax over the keys (the last dimension), so each query's weights sum to 1":
                (scores / math.sqrt(qs[-1])).softmax(-2) @ v if ks[-2] == qs[-2] else None,
        })
    return "matches softmax(q k^T / sqrt(D)) v" + (", with heads and large scores" if hidden else "")


def _side_cases(hidden: bool, rng: random.Random):
    cases = [(14, 14, 64), (56, 56, 32), (7, 7, 512), (1, 1, 1)]
    if hidden:
        cases += [(rng.randint(1, 80), rng.randint(1, 80), rng.randint(1, 768)) for _ in range(30)]
    return cases


@task_check("attention_macs", "van_edu.complexity.count_macs", "van_edu.complexity.MacCounter")
def attention_macs(S, hidden: bool, rng: random.Random):
    """``fn(height, width, dim)``: multiply-adds of global self-attention, 4 N C^2 + 2 N^2 C."""
    cases = _side_cases(hidden, rng)
    for (h, w, c), got in zip(cases, S.call_all(cases)):
        want = ref.attention_macs(h, w, c)
        n = h * w
        hint = ""
        if got == 4 * n * c * c + 2 * n * c:
            hint = " (Q K^T and A V each cost N^2 C: every one of the N tokens meets all N)"
        elif got == 2 * n * n * c:
            hint = " (include the four C x C projections, Q, K, V and the output: 4 N C^2)"
        elif got == 3 * n * c * c + 2 * n * n * c:
            hint = " (the output projection after A V costs another N C^2)"
        expect(got, want, f"attention_macs({h}, {w}, {c})", hint=hint)
    return "4 N C^2 + 2 N^2 C on " + ("34" if hidden else "4") + " feature-map sizes"


@task_check("lka_macs", "van_edu.lka.lka_params", "van_edu.complexity._lka_module_params",
            "van_edu.complexity.count_macs", "van_edu.complexity.MacCounter")
def lka_macs(S, hidden: bool, rng: random.Random):
    """``fn(height, width, dim, kernel_size=21, dilation=3)``: Eq. (4), P(K, d) H W."""
    cases = [(h, w, c, None, None) for h, w, c in _side_cases(hidden, rng)]
    cases += [(14, 14, 64, 7, 2), (8, 8, 16, 28, 4)]
    if hidden:
        for _ in range(20):
            k = rng.randint(2, 40)
            cases.append((rng.randint(1, 60), rng.randint(1, 60), rng.randint(1, 512), k, rng.randint(1, k)))
    kws = [{} if k is None else {"kernel_size": k, "dilation": d} for *_, k, d in cases]
    for (h, w, c, *_), kw, got in zip(cases, kws, S.call_all([case[:3] for case in cases], kws)):
        want = ref.lka_macs(h, w, c, **kw)
        label = f"lka_macs({h}, {w}, {c}" + "".join(f", {a}={v}" for a, v in kw.items()) + ")"
        hint = " (the 1x1 convolution costs C^2 per position)" if got == want - c * c * h * w else ""
        expect(got, want, label, hint=hint)
    return "Eq. (4) on " + str(len(cases)) + " sizes and kernels"


@task_check("count_parameters", "van_edu.complexity.count_params")
def count_parameters(S, hidden: bool, rng: random.Random):
    """``fn(model, trainable_only=False)``: the number of parameters (elements, not tensors)."""
    models = [("nn.Linear(10, 5)", "linear_10_5"), ("a small conv net", "tiny_conv")]
    if hidden:
        models += [("van_b0", "van_b0_meta"), ("a conv net with a frozen conv", "tiny_conv_frozen")]
    for name, fixture in models:
        model = fixtures.build(fixture)
        mine = S.make(fixture)
        want = ref.count_parameters(model)
        got = S.call(mine)
        hint = f" (count elements, p.numel(), not tensors: that gives {len(list(model.parameters()))})" \
            if got == len(list(model.parameters())) else ""
        expect(got, want, f"count_parameters({name})", hint=hint)
        expect(S.call(mine, trainable_only=True), ref.count_parameters(model, trainable_only=True),
               f"count_parameters({name}, trainable_only=True) (count only parameters with requires_grad)")
    return "exact counts" + (" including van_b0 (4,105,800)" if hidden else "")
