"""Checks of exercise set 03 (the VAN architecture): drop path, patch embedding, sizes, the block."""
from __future__ import annotations

import copy
import random

import torch
from torch import nn

from . import reference as ref
from ._core import CheckFailed, draw, expect, fmt_shape, load_reference_state, randn, require_module, seeded, task_check


@task_check("drop_path", "van_edu.models.layers.DropPath")
def drop_path(S, hidden: bool, rng: random.Random):
    """``fn(x, p, training)``: drop whole samples with probability p, rescale the rest by 1/(1-p)."""
    x = randn(4, 3, 5, 5, seed=draw(rng, hidden, 1))
    for p, training in ((0.5, False), (0.0, True)):
        out = S.call(x.clone(), p, training, _seed=5)
        what = "in evaluation mode (training=False)" if not training else "with p=0"
        expect(out, x, f"drop_path(x, p={p}, training={training}): {what} the input must come back unchanged")
    cases = [((4000, 3, 2, 2), 0.25, torch.float32)]
    if hidden:
        cases += [((4000, 6), 0.6, torch.float64), ((3000, 2, 4), round(rng.uniform(0.05, 0.5), 2), torch.float32)]
    for shape, p, dtype in cases:
        x = randn(*shape, seed=draw(rng, hidden, 2), dtype=dtype)
        out, after = S.call(x, p, True, _seed=draw(rng, hidden, 6), _args_after=True)
        label = f"drop_path(x {list(shape)}, p={p}, training=True)"
        if not (isinstance(after, list) and after and isinstance(after[0], torch.Tensor)
                and torch.equal(after[0], x)):
            raise CheckFailed(f"{label} changed its input in place; return a new tensor")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
            raise CheckFailed(f"{label}: expected a tensor of shape {list(shape)}, got {fmt_shape(out)}")
        if out.dtype != dtype:
            raise CheckFailed(f"{label}: expected dtype {dtype}, got {out.dtype} (build the mask with x.new_empty or like x)")
        flat_x, flat_out = x.reshape(len(x), -1).double(), out.reshape(len(x), -1).detach().double()
        dropped = (flat_out == 0).all(1)
        kept = torch.isclose(flat_out, flat_x / (1 - p), rtol=1e-4, atol=1e-6).all(1)
        bad = ~(dropped | kept)
        if bad.any():
            b = int(bad.nonzero()[0])
            if torch.allclose(flat_out[b], flat_x[b]):
                raise CheckFailed(f"{label}: sample {b} was kept but not rescaled; multiply kept samples "
                                  f"by 1/(1-p) = {1 / (1 - p):.4g} so the expected value is unchanged")
            if (flat_out[b] == 0).any():
                raise CheckFailed(f"{label}: sample {b} is partly zeroed; drop path drops a whole sample "
                                  f"(one random number per sample: a mask of shape [B, 1, 1, ...]), not single elements")
            raise CheckFailed(f"{label}: sample {b} is neither zero nor x / (1 - p)")
        rate = dropped.double().mean().item()
        if abs(rate - p) > 0.05:
            hint = " (p is the probability to DROP a sample, 1 - p to keep it)" if abs(rate - (1 - p)) < 0.05 else ""
            raise CheckFailed(f"{label}: dropped {100 * rate:.1f}% of the samples, expected about {100 * p:.0f}%{hint}")
    return "identity in evaluation, whole samples dropped at rate p and the rest rescaled in training"


@task_check("overlap_patch_embed", "van_edu.models.van.OverlapPatchEmbed")
def overlap_patch_embed(S, hidden: bool, rng: random.Random):
    """``cls(in_chans, embed_dim, kernel, stride)``: a strided conv (padding kernel // 2), then BatchNorm."""
    cases = [(3, 8, 7, 4, 224), (8, 16, 3, 2, 15), (1, 4, 3, 1, 28)]
    if hidden:
        cases += [(2, 6, 5, 2, 33), (4, 8, 7, 4, 31), (3, 5, 3, 2, 8)]
        cases += [(rng.randint(1, 4), rng.randint(2, 9), k, s, rng.randint(8, 40))
                  for k, s in (rng.choice([(7, 4), (3, 2), (5, 2), (3, 1)]) for _ in range(2))]
    for i, (cin, dim, k, s, side) in enumerate(cases):
        label = f"OverlapPatchEmbed({cin}, {dim}, kernel={k}, stride={s})"
        mine = S.call(cin, dim, k, s, _name="OverlapPatchEmbed", _seed=7)
        with seeded(7):
            reference = ref.OverlapPatchEmbed(cin, dim, k, s)
        _randomize_norms(reference, draw(rng, hidden, 60 + i))
        x = randn(2, cin, side, side, seed=draw(rng, hidden, 60 + i))
        want = reference(x)
        got = S.forward(require_module(mine, label), x, label=label, copy=True)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise CheckFailed(f"{label} on input {fmt_shape(x)}: expected output shape {fmt_shape(want)} "
                              f"(side ({side} + 2*{k // 2} - {k}) // {s} + 1 = {want.shape[-1]}), "
                              f"got {fmt_shape(got)}; pad by kernel // 2 = {k // 2}")
        load_reference_state(S, mine, reference, label)
        with torch.no_grad():
            for mode in ("train", "eval"):
                reference.train(mode == "train")
                expect(S.forward(mine, x, label=label, mode=mode), reference(x),
                              f"{label} in {mode} mode on {fmt_shape(x)}",
                              hints={"apply the BatchNorm (self.norm) after the convolution": reference.proj(x)})
    return f"{len(cases)} embeddings give the reference's shapes and values"


@task_check("stage_sizes")
def stage_sizes(S, hidden: bool, rng: random.Random):
    """``fn(image_size, stem_kernel=7, stem_stride=4, num_stages=4)`` -> the side after each stage."""
    cases = [(224,), (32,), (28, 3, 1, 3), (225,)]
    if hidden:
        for _ in range(40):
            k, s = rng.choice([(7, 4), (3, 1), (3, 2), (5, 2)])
            cases.append((rng.randint(8, 400), k, s, rng.randint(1, 5)))
    for args, got in zip(cases, S.call_all(cases)):
        want = ref.stage_sizes(*args)
        label = f"stage_sizes{tuple(args)}"
        naive, side = [], args[0]
        for j in range(len(want)):
            side //= (args[2] if len(args) > 2 else 4) if j == 0 else 2
            naive.append(side)
        hint = ("; the overlapping convs pad by kernel // 2: use floor((H + 2p - k) / s) + 1, not H // s"
                if isinstance(got, (list, tuple)) and list(got) == naive != want else "")
        expect(got, want, label, hint=hint)
    return "224 -> [56, 28, 14, 7], 32 -> [8, 4, 2, 1]" + (" and 40 random inputs" if hidden else "")


@task_check("drop_path_rates", "van_edu.models.layers.linear_drop_path_rates")
def drop_path_rates(S, hidden: bool, rng: random.Random):
    """``fn(total, depths)`` -> per-stage lists of rates rising linearly from 0 to ``total`` over all blocks."""
    cases = [(0.1, [3, 3, 5, 2]), (0.0, [2, 2]), (0.2, [1])]
    if hidden:
        cases += [(round(rng.random() * 0.5, 3), [rng.randint(1, 6) for _ in range(rng.randint(1, 5))])
                  for _ in range(30)]
    for (total, depths), got in zip(cases, S.call_all([(total, list(depths)) for total, depths in cases])):
        want = [[float(r) for r in stage] for stage in ref.drop_path_rates(total, depths)]
        hint, n = "", sum(depths)
        flat = [r for stage in got for r in stage] if isinstance(got, (list, tuple)) and all(
            isinstance(s, (list, tuple)) for s in got) else []
        if len(flat) == n > 1 and all(isinstance(r, (int, float)) for r in flat):
            if abs(flat[-1] - total * (n - 1) / n) < 1e-9:
                hint = " (the last block gets exactly `total`: block i of n gets total * i / (n - 1))"
            elif any(s and s[0] == 0 for s in got[1:]) and total:
                hint = " (the rates rise over the whole network; they do not restart at 0 in every stage)"
        expect(got, want, f"drop_path_rates({total}, {depths})", hint=hint)
    return f"{len(cases)} networks"


def _randomize_norms(module: nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine parameters drawn from ``seed``, far from their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.copy_(0.3 * torch.randn(bn.running_mean.shape, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=g))
                bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=g))
                bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=g))


def _randomize(block: nn.Module, seed: int) -> None:
    """Layer scales and BatchNorm statistics far from their initial values, so that mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (block.layer_scale_1, block.layer_scale_2):
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
    _randomize_norms(block, seed + 1)


def _branches(reference, x):
    ls1, ls2 = reference.layer_scale_1[:, None, None], reference.layer_scale_2[:, None, None]
    return ls1, ls2, reference.attn(reference.norm1(x))


def _block_hints(reference, x) -> dict:
    ls1, ls2, a = _branches(reference, x)
    no_ls1 = x + a
    no_ls = no_ls1 + reference.mlp(reference.norm2(no_ls1))
    x1 = x + ls1 * a
    scaled_sum = ls1 * (x + a)
    both_scaled = ls2 * (scaled_sum + reference.mlp(reference.norm2(scaled_sum)))
    return {
        "multiply each branch by its layer scale: x + ls1 * attn(norm1(x)), then x + ls2 * mlp(norm2(x))": no_ls,
        "the layer scale multiplies the branch only, not the shortcut (x + ls * f(x), not ls * (x + f(x)))":
            both_scaled,
        "the MLP sub-layer takes the output of the attention sub-layer (x after the first residual)":
            x1 + ls2 * reference.mlp(reference.norm2(x)),
        "each sub-layer normalises its input first: attn(norm1(x)) and mlp(norm2(x))":
            (lambda y: y + ls2 * reference.mlp(y))(x + ls1 * reference.attn(x)),
    }


@task_check("van_block", "van_edu.models.van.Block")
def van_block(S, hidden: bool, rng: random.Random):
    """``cls(dim, mlp_ratio=4.0, drop_path=0.0, layer_scale_init=1e-2)``: the VAN block."""
    dim, ratio, side = 8, 4.0, 8
    inits = [1e-2] + ([round(rng.uniform(0.1, 0.9), 3)] if hidden else [])
    for init in inits:
        kw = {"mlp_ratio": ratio, "drop_path": 0.0, **({"layer_scale_init": init} if init != 1e-2 else {})}
        label = f"Block({dim}, " + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
        mine = require_module(S.call(dim, _name="Block", _seed=8, **kw), label)
        for name in ("layer_scale_1", "layer_scale_2"):
            p = S.attr(mine, name, label)
            if not isinstance(p, nn.Parameter):
                raise CheckFailed(f"{label}: expected a learnable nn.Parameter {name} of shape [{dim}], "
                                  f"got {getattr(p, 'type', type(p).__name__)}")
            if tuple(p.shape) != (dim,) or not torch.allclose(p.detach().float(), torch.full((dim,), init)):
                raise CheckFailed(f"{label}: {name} should have shape [{dim}] and start at layer_scale_init "
                                  f"= {init}; got shape {fmt_shape(p)} with values {p.detach().flatten()[:3].tolist()}")
    with seeded(9):
        reference = ref.Block(dim, ratio, drop_path=0.0)
    _randomize(reference, seed=draw(rng, hidden, 9))
    mine, label = _block_like(S, reference, dim, ratio, drop_path=0.0, seed=9)
    x = randn(4, dim, side, side, seed=draw(rng, hidden, 70))
    with torch.no_grad():
        reference.eval()
        expect(S.forward(mine, x, label=label, mode="eval"), reference(x),
                      f"{label} in eval mode on {fmt_shape(x)}", hints=_block_hints(reference, x))
        r2 = copy.deepcopy(reference).train()
        expect(S.forward(mine, x, label=label, mode="train", copy=True), r2(x),
                      f"{label} in training mode (BatchNorm on batch statistics)")
    p = 0.5
    dropping, label = _block_like(S, reference, dim, ratio, drop_path=p, seed=10)
    xs = randn(48, dim, side, side, seed=draw(rng, hidden, 71))
    with torch.no_grad():
        reference.eval()
        expect(S.forward(dropping, xs, label=label, mode="eval"), reference(xs),
                      f"{label} in eval mode: drop path must do nothing in evaluation")
        # BatchNorm on running statistics: every sample is then independent
        out = S.forward(dropping, xs, label=label, mode="train", submodes={"norm1": "eval", "norm2": "eval"},
                        seed=draw(rng, hidden, 11))
        _check_drop_outcomes(out, xs, reference, p, label)
    return "layer scales, residuals and drop path match the reference block"


def _block_like(S, reference, dim: int, ratio: float, drop_path: float, seed: int):
    """The learner's ``Block(dim, mlp_ratio=ratio, drop_path=drop_path)`` holding the reference's
    weights, and the label the messages name it by."""
    mine = S.call(dim, _name="Block", _seed=seed, mlp_ratio=ratio, drop_path=drop_path)
    label = f"Block({dim}, mlp_ratio={ratio}" + (f", drop_path={drop_path})" if drop_path else ")")
    load_reference_state(S, mine, reference, label)
    return mine, label


def _check_drop_outcomes(out, x, reference, p, label) -> None:
    """Each sample must be one of the four outcomes of keeping or dropping the two branches."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise CheckFailed(f"{label} in training mode: expected shape {fmt_shape(x)}, got {fmt_shape(out)}")
    ls1, ls2, a = _branches(reference, x)
    keep = 1 - p
    outcomes = []
    for k1 in (True, False):
        x1 = x + ls1 * a / keep if k1 else x
        m = ls2 * reference.mlp(reference.norm2(x1))
        for k2 in (True, False):
            outcomes.append(x1 + m / keep if k2 else x1)
    seen = set()
    for b in range(len(x)):
        match = [i for i, o in enumerate(outcomes) if torch.allclose(out[b], o[b], atol=1e-5, rtol=1e-4)]
        if not match:
            raise CheckFailed(f"{label} in training mode: sample {b} matches none of the outcomes of drop path; "
                              "drop each branch (ls * f(x)) as a whole per sample and rescale kept ones by 1/(1-p)")
        seen.add(match[0])
    if seen == {0}:
        raise CheckFailed(f"{label} in training mode never dropped a branch in {len(x)} samples: "
                          "apply drop path to both branches when training")
