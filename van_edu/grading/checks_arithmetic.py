"""Checks of exercise set 01 (the arithmetic of LKA): padding, decomposition, Eq. (3), d*, fields."""
from __future__ import annotations

import random

from . import reference as ref
from ._core import expect, task_check


def _random_kd(rng: random.Random, n: int):
    """``n`` random (kernel, dilation) pairs, 2 <= kernel <= 40 and 1 <= dilation <= kernel."""
    return [(k, rng.randint(1, k)) for k in (rng.randint(2, 40) for _ in range(n))]


@task_check("same_padding", "van_edu.conv_arithmetic.same_padding", "van_edu.conv_arithmetic.symmetric_padding")
def same_padding(S, hidden: bool, rng: random.Random):
    """``fn(kernel, dilation)``: the padding that keeps the size of a stride-1 convolution."""
    cases = [(3, 1), (5, 1), (7, 3), (5, 2), (1, 1)]
    if hidden:
        cases += [(rng.randrange(1, 30, 2), rng.randint(1, 6)) for _ in range(40)]
    for (k, d), got in zip(cases, S.call_all(cases)):
        want = ref.same_padding(k, d)
        hint = " (the dilation spreads the kernel over d (k - 1) + 1 pixels: include d)" if got == k // 2 and d > 1 else ""
        expect(got, want, f"same_padding({k}, {d})", hint=hint)
    return f"{len(cases)} kernels and dilations keep the size"


@task_check("decompose", "van_edu.lka.decomposition", "van_edu.lka.Decomposition")
def decompose(S, hidden: bool, rng: random.Random):
    """``fn(K, d)`` -> (DW-Conv kernel, DW-D-Conv kernel)."""
    cases = [(21, 3), (7, 2), (14, 3), (28, 4)]  # Table 6 of the paper
    if hidden:
        cases += _random_kd(rng, 40)
    for (k, d), got in zip(cases, S.call_all(cases)):
        want = ref.decompose(k, d)
        hint = (" (round K / d up: the dilated kernel must cover all K pixels)"
                if isinstance(got, (tuple, list)) and len(got) == 2 and got[1] == k // d else "")
        expect(got, want, f"decompose({k}, {d}), the pair (DW-Conv kernel 2d - 1, DW-D-Conv kernel)", hint=hint)
    return "Table 6's decompositions " + ("and 40 random (K, d)" if hidden else "(K=7, 14, 21, 28)")


@task_check("eq3_params", "van_edu.lka.lka_params", "van_edu.complexity._lka_module_params")
def eq3_params(S, hidden: bool, rng: random.Random):
    """``fn(K, d, C)``: Eq. (3), the parameters of the decomposed kernel (biases ignored)."""
    cases = [(21, 3, c) for c in (32, 64, 128, 256, 512)] + [(21, 1, 1), (7, 2, 16)]
    if hidden:
        cases += [(k, d, rng.randint(1, 600)) for k, d in _random_kd(rng, 40)]
    for (k, d, c), got in zip(cases, S.call_all(cases)):
        want = ref.eq3_params(k, d, c)
        hint = ""
        if got == want - c * c:
            hint = " (you left out the 1x1 convolution's C^2 weights)"
        elif got == c * ((k / d) ** 2 + (2 * d - 1) ** 2 + c):
            hint = " (round K / d up before squaring)"
        expect(got, want, f"eq3_params(K={k}, d={d}, C={c})", hint=hint)
    return "Table 2's VAN column and " + ("42 more cases" if hidden else "2 more cases")


@task_check("best_dilation", "van_edu.lka.best_dilation")
def best_dilation(S, hidden: bool, rng: random.Random):
    """``fn(K)``: the d that minimises Eq. (3) (the smallest on ties)."""
    cases = [21, 7, 14, 28]
    if hidden:
        cases = list(range(2, 65))
        rng.shuffle(cases)
    for k, got in zip(cases, S.call_all([(k,) for k in cases])):
        expect(got, ref.best_dilation(k), f"best_dilation({k})")
    return "K = " + (", ".join(map(str, cases)) if not hidden else "2..64")


@task_check("receptive_field", "van_edu.conv_arithmetic.stack_receptive_field", "van_edu.lka.receptive_field",
            "van_edu.lka.measure_receptive_field")
def receptive_field(S, hidden: bool, rng: random.Random):
    """``fn(layers)``: receptive field of stacked stride-1 convs given as (kernel, dilation) pairs."""
    cases = [[(5, 1), (7, 3)], [(3, 1)], [(3, 1), (3, 1)], [(3, 2)]]
    if hidden:
        cases += [[(rng.randrange(1, 12, 2), rng.randint(1, 5)) for _ in range(rng.randint(1, 5))]
                  for _ in range(40)] + [[]]
    for layers, got in zip(cases, S.call_all([(list(layers),) for layers in cases])):
        want = ref.stack_receptive_field(layers)
        hint = ""
        if got == want - 1:
            hint = " (one output pixel sees 1 pixel before any layer: start from 1)"
        elif got == sum(k * d for k, d in layers):
            hint = " (a dilated kernel spans d (k - 1) + 1 pixels, not k d)"
        expect(got, want, f"receptive_field({layers})", hint=hint)
    return f"{len(cases)} stacks, including LKA's 5x5 + 7x7 dilation 3 = 23"


@task_check("table2_row", "van_edu.lka.conv_params", "van_edu.lka.mobilenet_params", "van_edu.lka.lka_params",
            "van_edu.complexity.table2", "van_edu.complexity._dense_params",
            "van_edu.complexity._mobilenet_module_params", "van_edu.complexity._lka_module_params")
def table2_row(S, hidden: bool, rng: random.Random):
    """``fn(C)`` -> {"standard", "mobilenet", "van"}: a row of Table 2 (K=21, d=3, no biases)."""
    channels = [32, 64, 128, 256, 512] + ([1, 3, 7] + [rng.randint(8, 1200) for _ in range(5)] if hidden else [])
    for c, got in zip(channels, S.call_all([(c,) for c in channels])):
        expect(got, ref.table2_row(c), f"table2_row({c})")
    return "Table 2 of the paper, C = 32 ... 512"
