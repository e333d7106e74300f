"""Checks of exercise set 05 (training): the schedule, weight-decay groups, a mixed-precision step, accuracy."""
from __future__ import annotations

import random

import torch

from . import fixtures
from . import reference as ref
from ._core import CheckFailed, draw, expect, seeded, task_check
from .wire import ParamRef


@task_check("warmup_cosine", "van_edu.train.WarmupCosine")
def warmup_cosine(S, hidden: bool, rng: random.Random):
    """``fn(step, warmup_steps, total_steps)``: the factor on the peak learning rate at ``step``."""
    schedules = [(5, 20), (0, 10)] + ([(3, 4), (10, 1000), (1, 2)] if hidden else [])
    if hidden:
        total = rng.randint(2, 300)
        schedules.append((rng.randint(0, total // 2), total))
    for warm, total in schedules:
        for step, got in enumerate(S.call_all([(step, warm, total) for step in range(total)])):
            want = float(ref.warmup_cosine(step, warm, total))
            hint = (f" (count the warm-up from step 0 as (step + 1) / warmup_steps, so the first step already "
                    f"trains and step {warm - 1} reaches the peak)"
                    if step < warm and isinstance(got, (int, float)) and abs(got - step / warm) < 1e-9 else "")
            expect(got, want, f"warmup_cosine(step={step}, warmup_steps={warm}, total_steps={total})", hint=hint)
    return "linear warm-up then half a cosine, " + ", ".join(f"{w}/{t}" for w, t in schedules)


@task_check("param_groups", "van_edu.train.param_groups", "van_edu.train.make_optimizer")
def param_groups(S, hidden: bool, rng: random.Random):
    """``fn(model, weight_decay)`` -> two AdamW groups: decay on weights with 2+ dims, none on 1-D ones."""
    models = ["param_net"] + (["van_mini_3"] if hidden else [])
    for fixture in models:
        wd = 0.05 if not hidden else round(rng.uniform(0.01, 0.3), 3)
        model = fixtures.build(fixture)
        mine = S.make(fixture)
        got = S.call(mine, wd, _param_refs=True)
        params = dict(model.named_parameters())
        if not isinstance(got, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in got):
            raise CheckFailed(f"expected a list of dicts like [{{'params': [...], 'weight_decay': {wd}}}, "
                              f"{{'params': [...], 'weight_decay': 0.0}}], got {got!r:.80}")
        decay_of, groups = {}, []
        for g in got:
            group_params = g["params"] if isinstance(g["params"], (list, tuple)) else [g["params"]]
            for p in group_params:
                if not isinstance(p, ParamRef) or p.owner != mine.id or p.name not in params:
                    raise CheckFailed("a group holds a tensor that is not a parameter of the model")
                if p.name in decay_of:
                    raise CheckFailed(f"parameter {p.name} is in two groups")
                decay_of[p.name] = g.get("weight_decay", None)
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [params[p.name] for p in group_params]})
        for name, p in model.named_parameters():
            if not p.requires_grad:
                if name in decay_of:
                    raise CheckFailed(f"{name} is frozen (requires_grad=False): leave it out of the groups")
                continue
            if name not in decay_of:
                raise CheckFailed(f"parameter {name} is in no group: the optimiser would never train it")
            expected = 0.0 if p.ndim <= 1 else wd
            if decay_of[name] != expected:
                why = ("1-D (a bias, a norm's scale or a layer scale): no weight decay" if p.ndim <= 1
                       else f"a {p.ndim}-D weight: weight_decay={wd}")
                raise CheckFailed(f"{name} (shape {list(p.shape)}) is {why}; its group has "
                                  f"weight_decay={decay_of[name]}")
        try:  # the same groups, on the grader's copy of the model
            torch.optim.AdamW(groups, lr=1e-3)
        except Exception as err:
            raise CheckFailed(f"torch.optim.AdamW refused your groups: {err}") from None
    return "weights decayed, biases, norms and layer scales not, frozen parameters left out"


def _batches(n_steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n_steps)]


def _reference_steps(state: dict, batches, amp_dtype, use_scaler: bool):
    """The reference's steps on the grader's own copy: (losses, model)."""
    model = fixtures.Recorder()
    model.load_state_dict(state)
    optimizer = fixtures.build("sgd", model, 0.1, 0.9)
    scaler = fixtures.CountingScaler() if use_scaler else None
    losses = [ref.train_step(model, x, y, optimizer, amp_dtype=amp_dtype, scaler=scaler) for x, y in batches]
    return losses, model


def _learner_steps(S, state: dict, batches, amp_dtype, use_scaler: bool, label: str):
    """The learner's steps in their kernel: (losses, seen, scaler calls, parameters after)."""
    mine = S.make("recorder", state=state, mode="eval")  # the step must switch to training mode itself
    optimizer = S.make("sgd", mine, 0.1, 0.9)
    scaler = S.make("scaler") if use_scaler else None
    kw = {k: v for k, v in (("amp_dtype", amp_dtype), ("scaler", scaler)) if v is not None}
    losses = [S.call(mine, x, y, optimizer, _name=label, **kw) for x, y in batches]
    calls = S.observe(scaler, "calls") if scaler is not None else None
    return losses, S.observe(mine, "seen"), calls, S.observe(mine, "params")


def _compare_runs(S, amp_dtype, use_scaler: bool, label: str, tol: float, seeds: tuple[int, int]):
    with seeded(seeds[0]):
        state = fixtures.Recorder().state_dict()
    batches = _batches(3, seed=seeds[1])
    losses, seen, calls, params = _learner_steps(S, state, batches, amp_dtype, use_scaler, label)
    want_losses, theirs = _reference_steps(state, batches, amp_dtype, use_scaler)
    for got in losses:
        if not isinstance(got, float):
            raise CheckFailed(f"{label}: return the loss as a Python float (loss.item()), got {type(got).__name__}")
    if not seen or not seen[-1].get("training"):
        raise CheckFailed(f"{label}: the model was in evaluation mode during the step; call model.train()")
    want_dtype = str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None
    if amp_dtype is not None and any(s.get("dtype") != want_dtype for s in seen):
        raise CheckFailed(f"{label}: the forward pass ran in {seen[-1].get('dtype')}, not {want_dtype}: run it "
                          f"inside torch.autocast(device_type=x.device.type, dtype=amp_dtype)")
    if use_scaler and calls != {"scale": 3, "step": 3, "update": 3}:
        raise CheckFailed(f"{label}: with a scaler, each step must call scaler.scale(loss).backward(), "
                          f"scaler.step(optimizer) and scaler.update() once; over 3 steps the calls were {calls}")
    try:
        for i, (got, want) in enumerate(zip(losses, want_losses)):
            expect(got, float(want), f"{label}: the loss returned at step {i + 1}", rel=tol)
        for name, q in theirs.named_parameters():
            expect(params.get(name), q.detach(), f"{label}: parameter {name} after 3 steps", atol=tol, rtol=tol)
    except CheckFailed as err:
        *_, one_mine = _learner_steps(S, state, batches[:1], amp_dtype, use_scaler, label)
        _, one_ref = _reference_steps(state, batches[:1], amp_dtype, use_scaler)
        hint = ""
        if all(isinstance(one_mine.get(n), torch.Tensor) and torch.allclose(one_mine[n], q.detach(), atol=tol, rtol=tol)
               for n, q in one_ref.named_parameters()):
            hint = (". The first step was right and later ones not: gradients accumulate across steps; "
                    "call optimizer.zero_grad() before backward()")
        raise CheckFailed(f"{err}{hint}") from None


@task_check("train_step", "van_edu.train.fit", "van_edu.train._train_step")
def train_step(S, hidden: bool, rng: random.Random):
    """``fn(model, x, y, optimizer, amp_dtype=None, scaler=None)``: one update; returns the loss as a float."""
    _compare_runs(S, None, False, "train_step(float32)", 1e-5, (draw(rng, hidden, 12), draw(rng, hidden, 13)))
    _compare_runs(S, torch.bfloat16, False, "train_step(amp_dtype=torch.bfloat16)", 2e-2,
                  (draw(rng, hidden, 12), draw(rng, hidden, 13)))
    if hidden:
        _compare_runs(S, None, True, "train_step(scaler=GradScaler)", 1e-5, (rng.randrange(2**31), rng.randrange(2**31)))
    return "3 steps match the reference in float32 and bfloat16" + (", and with a gradient scaler" if hidden else "")


@task_check("accuracy", "van_edu.evaluation.evaluate", "van_edu.evaluation.eval_sums")
def accuracy(S, hidden: bool, rng: random.Random):
    """``fn(model, x, y, batch_size=256)``: fraction correct, in evaluation mode, without gradients."""
    cases = [(10, 4), (64, 256)] + ([(33, 8), (7, 1), (rng.randint(2, 90), rng.randint(1, 40))] if hidden else [])
    for n, bs in cases:
        with seeded(draw(rng, hidden, 14)):
            model = fixtures.build("recorder_dropout")  # a model in training mode would give random answers
        mine = S.make("recorder_dropout", state=model.state_dict(), mode="train")
        g = torch.Generator().manual_seed(draw(rng, hidden, n))
        x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
        label = f"accuracy(model, x [{n}, 6], y, batch_size={bs})"
        got = S.call(mine, x, y, batch_size=bs)
        seen = S.observe(mine, "seen")
        want = ref.accuracy(model, x, y, batch_size=bs)
        if any(s.get("training") for s in seen):
            raise CheckFailed(f"{label}: the model was in training mode (dropout active); call model.eval() first")
        if any(s.get("grad") for s in seen):
            raise CheckFailed(f"{label}: gradients were recorded; evaluate under torch.no_grad()")
        batches = [s.get("batch") for s in seen]
        expected = [min(bs, n - i) for i in range(0, n, bs)]
        if batches != expected:
            raise CheckFailed(f"{label}: the model saw batches of {batches}, expected {expected} "
                              "(every image once, the last batch may be smaller)")
        expect(got, float(want), label)
        if not isinstance(got, float):
            raise CheckFailed(f"{label}: return a Python float, got {type(got).__name__}")
    return "fraction correct, in eval mode, without gradients, in batches"
