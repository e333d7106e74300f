"""Checks of exercise set 05 (training): the schedule, weight-decay groups, a mixed-precision step, accuracy."""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import reference as ref
from ._core import CheckFailed, call, expect_number, expect_tensor, require_callable, seeded, task_check

__all__ = ["warmup_cosine", "param_groups", "train_step", "accuracy"]


@task_check("warmup_cosine")
def warmup_cosine(fn, hidden: bool = False):
    """``fn(step, warmup_steps, total_steps)``: the factor on the peak learning rate at ``step``."""
    require_callable(fn, "warmup_cosine")
    schedules = [(5, 20), (0, 10)] + ([(3, 4), (10, 1000), (1, 2)] if hidden else [])
    for warm, total in schedules:
        for step in range(total):
            got = call(fn, step, warm, total)
            want = ref.warmup_cosine(step, warm, total)
            hint = ""
            if step < warm and isinstance(got, (int, float)) and abs(got - step / warm) < 1e-9:
                hint = (f" (count the warm-up from step 0 as (step + 1) / warmup_steps, so the first "
                        f"step already trains and step {warm - 1} reaches the peak)")
            expect_number(got, want, f"warmup_cosine(step={step}, warmup_steps={warm}, total_steps={total})",
                          integer=False, hint=hint)
    return "linear warm-up then half a cosine, " + ", ".join(f"{w}/{t}" for w, t in schedules)


class _Net(nn.Module):
    """A model with every kind of parameter: conv kernels, biases, norms, a layer scale, a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.layer_scale = nn.Parameter(torch.ones(4))
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        x = self.norm(self.conv(x)).mean((2, 3)) * self.layer_scale
        return self.head(self.ln(x))


@task_check("param_groups")
def param_groups(fn, hidden: bool = False):
    """``fn(model, weight_decay)`` -> two AdamW groups: decay on weights with 2+ dims, none on 1-D ones."""
    require_callable(fn, "param_groups")
    models = [_Net()]
    if hidden:
        from ..models import create_model
        models.append(create_model("van_mini", num_classes=3, in_chans=1))
    for model in models:
        wd = 0.05
        got = call(fn, model, wd)
        names = {id(p): n for n, p in model.named_parameters()}
        if not isinstance(got, (list, tuple)) or not all(isinstance(g, dict) and "params" in g for g in got):
            raise CheckFailed("expected a list of dicts like [{'params': [...], 'weight_decay': 0.05}, "
                              f"{{'params': [...], 'weight_decay': 0.0}}], got {got!r:.80}")
        decay_of = {}
        for g in got:
            for p in g["params"]:
                if id(p) not in names:
                    raise CheckFailed("a group holds a tensor that is not a parameter of the model")
                if id(p) in decay_of:
                    raise CheckFailed(f"parameter {names[id(p)]} is in two groups")
                decay_of[id(p)] = g.get("weight_decay", None)
        for name, p in model.named_parameters():
            if not p.requires_grad:
                if id(p) in decay_of:
                    raise CheckFailed(f"{name} is frozen (requires_grad=False): leave it out of the groups")
                continue
            if id(p) not in decay_of:
                raise CheckFailed(f"parameter {name} is in no group: the optimiser would never train it")
            expected = 0.0 if p.ndim <= 1 else wd
            if decay_of[id(p)] != expected:
                why = ("1-D (a bias, a norm's scale or a layer scale): no weight decay" if p.ndim <= 1
                       else f"a {p.ndim}-D weight: weight_decay={wd}")
                raise CheckFailed(f"{name} (shape {list(p.shape)}) is {why}; its group has "
                                  f"weight_decay={decay_of[id(p)]}")
        try:
            torch.optim.AdamW(got, lr=1e-3)
        except Exception as err:
            raise CheckFailed(f"torch.optim.AdamW refused your groups: {err}") from None
    return "weights decayed, biases, norms and layer scales not, frozen parameters left out"


class _Recorder(nn.Module):
    """A small classifier that records what each forward pass saw."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(16, 3)
        self.seen = []

    def forward(self, x):
        h = self.fc1(x)
        self.seen.append({"dtype": h.dtype, "training": self.training, "grad": torch.is_grad_enabled(),
                          "batch": len(x)})
        return self.fc2(torch.relu(self.drop(h)))


class _FakeScaler:
    """A gradient scaler that scales by 8 and counts how it is used (GradScaler's interface)."""

    factor = 8.0

    def __init__(self):
        self.calls = {"scale": 0, "step": 0, "update": 0}

    def scale(self, loss):
        self.calls["scale"] += 1
        return loss * self.factor

    def step(self, optimizer):
        self.calls["step"] += 1
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.factor)
        optimizer.step()

    def update(self):
        self.calls["update"] += 1


def _batches(n_steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n_steps)]


def _run_steps(fn, model, batches, amp_dtype=None, scaler=None, label="train_step"):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in batches:
        kw = {}
        if amp_dtype is not None:
            kw["amp_dtype"] = amp_dtype
        if scaler is not None:
            kw["scaler"] = scaler
        losses.append(call(fn, model, x, y, optimizer, _name=label, **kw))
    return losses


def _compare_runs(fn, amp_dtype, scaler_cls, label, tol):
    with seeded(12):
        base = _Recorder()
    batches = _batches(3, seed=13)
    mine, theirs = copy.deepcopy(base), copy.deepcopy(base)
    mine.eval()  # the step must switch to training mode itself
    scaler = scaler_cls() if scaler_cls else None
    losses = _run_steps(fn, mine, batches, amp_dtype, scaler, label)
    want_losses = _run_steps(ref.train_step, theirs, batches, amp_dtype, scaler_cls() if scaler_cls else None)
    for got in losses:
        if not isinstance(got, float):
            raise CheckFailed(f"{label}: return the loss as a Python float (loss.item()), got {type(got).__name__}")
    if not mine.seen or not mine.seen[-1]["training"]:
        raise CheckFailed(f"{label}: the model was in evaluation mode during the step; call model.train()")
    if amp_dtype is not None and any(s["dtype"] != amp_dtype for s in mine.seen):
        raise CheckFailed(f"{label}: the forward pass ran in {mine.seen[-1]['dtype']}, not {amp_dtype}: run it "
                          f"inside torch.autocast(device_type=x.device.type, dtype=amp_dtype)")
    if scaler is not None and scaler.calls != {"scale": 3, "step": 3, "update": 3}:
        raise CheckFailed(f"{label}: with a scaler, each step must call scaler.scale(loss).backward(), "
                          f"scaler.step(optimizer) and scaler.update() once; over 3 steps the calls were {scaler.calls}")
    try:
        for i, (got, want) in enumerate(zip(losses, want_losses)):
            expect_number(got, want, f"{label}: the loss returned at step {i + 1}", integer=False, rel=tol)
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            expect_tensor(p.detach(), q.detach(), f"{label}: parameter {name} after 3 steps", atol=tol, rtol=tol)
    except CheckFailed as err:
        one_mine, one_ref = copy.deepcopy(base), copy.deepcopy(base)
        _run_steps(fn, one_mine, batches[:1], amp_dtype, scaler_cls() if scaler_cls else None, label)
        _run_steps(ref.train_step, one_ref, batches[:1], amp_dtype, scaler_cls() if scaler_cls else None)
        hint = ""
        if all(torch.allclose(a, b, atol=tol, rtol=tol) for a, b in zip(one_mine.parameters(), one_ref.parameters())):
            hint = (". The first step was right and later ones not: gradients accumulate across steps; "
                    "call optimizer.zero_grad() before backward()")
        raise CheckFailed(f"{err}{hint}") from None


@task_check("train_step")
def train_step(fn, hidden: bool = False):
    """``fn(model, x, y, optimizer, amp_dtype=None, scaler=None)``: one update; returns the loss as a float."""
    require_callable(fn, "train_step")
    _compare_runs(fn, None, None, "train_step(float32)", 1e-5)
    _compare_runs(fn, torch.bfloat16, None, "train_step(amp_dtype=torch.bfloat16)", 2e-2)
    if hidden:
        _compare_runs(fn, None, _FakeScaler, "train_step(scaler=GradScaler)", 1e-5)
    return "3 steps match the reference in float32 and bfloat16" + (", and with a gradient scaler" if hidden else "")


@task_check("accuracy")
def accuracy(fn, hidden: bool = False):
    """``fn(model, x, y, batch_size=256)``: fraction correct, in evaluation mode, without gradients."""
    require_callable(fn, "accuracy")
    cases = [(10, 4), (64, 256)] + ([(33, 8), (7, 1)] if hidden else [])
    for n, bs in cases:
        with seeded(14):
            model = _Recorder()
            model.drop.p = 0.5  # a model in training mode would give random answers
        g = torch.Generator().manual_seed(n)
        x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
        model.train()
        label = f"accuracy(model, x [{n}, 6], y, batch_size={bs})"
        got = call(fn, model, x, y, batch_size=bs)
        seen = list(model.seen)
        want = ref.accuracy(copy.deepcopy(model), x, y, batch_size=bs)
        if any(s["training"] for s in seen):
            raise CheckFailed(f"{label}: the model was in training mode (dropout active); call model.eval() first")
        if any(s["grad"] for s in seen):
            raise CheckFailed(f"{label}: gradients were recorded; evaluate under torch.no_grad()")
        batches = [s["batch"] for s in seen]
        expected = [min(bs, n - i) for i in range(0, n, bs)]
        if batches != expected:
            raise CheckFailed(f"{label}: the model saw batches of {batches}, expected {expected} "
                              "(every image once, the last batch may be smaller)")
        expect_number(got, want, label, integer=False)
        if not isinstance(got, float):
            raise CheckFailed(f"{label}: return a Python float, got {type(got).__name__}")
    return "fraction correct, in eval mode, without gradients, in batches"
