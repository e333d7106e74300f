"""What every check shares: a session on the learner's code, comparisons, and reporting.

A check is a function ``body(S, hidden, rng)`` decorated with :func:`task_check`. It never touches
the learner's objects: it asks the :class:`Session` ``S`` to run them on inputs it chooses (drawn
from ``rng`` for the hidden cases) and gets their results back as data, then compares them with
the reference here. It raises :class:`CheckFailed` with a reason a learner can act on (the input
that broke it, the expected shape or value, a hint when the answer matches a known mistake).

Called in a notebook, a check is the learner's self-check: the session runs the answer in the same
process, and ``PASS name: ...`` or ``FAIL name: ...`` is printed (a failure re-raised). The grader
runs the same body with a session on the learner's own kernel, so the verdict is computed in the
grader's process, out of the learner's reach. A stub that still raises ``NotImplementedError`` is
reported as not answered yet.
"""
from __future__ import annotations

import functools
import math
import random

import torch
from torch import nn

from ..models.checkpoint import state_dict_differences
from ..runtime import cpu_threads
from . import wire
from .agent import Agent, conv_description, seeded

__all__ = ["CheckFailed", "SubjectMissing", "Session", "TaskCheck", "task_check", "expect", "fmt_shape", "seeded",
           "module_signature_mismatch", "require_module", "load_reference_state", "randn", "randomize", "draw"]


class CheckFailed(AssertionError):
    """A check found a wrong answer; the message says what was expected and for which input."""


class _NotAnswered(Exception):
    """Internal: the learner's code raised NotImplementedError (the stub is still there)."""


def fmt_shape(t) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _fmt_args(args, kwargs) -> str:
    def one(v):
        if isinstance(v, torch.Tensor):
            return f"tensor{list(v.shape)}"
        if isinstance(v, wire.Handle):
            return v.type
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


def _show(v) -> str:
    return f"{type(v).__name__} {v!r:.60}" if not isinstance(v, torch.Tensor) else f"a tensor {fmt_shape(v)}"


def _walk(got, want, what: str, values: bool, tol: tuple[float, float], hint: str, hints: dict | None) -> None:
    """One pass of :func:`expect`: the kinds, lengths, shapes and finiteness, or (``values``) the values."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what}: expected a tensor of shape {fmt_shape(want)}, got {_show(got)}")
        if tuple(got.shape) != tuple(want.shape):
            raise CheckFailed(f"{what}: expected shape {fmt_shape(want)}, got {fmt_shape(got)}")
        kind = (got.dtype.is_floating_point, got.dtype == torch.bool)
        if kind != (want.dtype.is_floating_point, want.dtype == torch.bool):
            raise CheckFailed(f"{what}: expected a tensor of dtype {want.dtype}, got {got.dtype}")
        if got.dtype.is_floating_point and not torch.isfinite(got.detach()).all():
            raise CheckFailed(f"{what}: the result contains NaN or inf (expected finite values)")
        if values:
            _tensor_values(got, want, what, tol, hints)
    elif isinstance(want, (list, tuple, dict)):
        keys = list(want) if isinstance(want, dict) else range(len(want))
        if isinstance(want, dict) and (not isinstance(got, dict) or set(got) != set(want)):
            raise CheckFailed(f"{what}: expected a dict with keys {sorted(want)}, got {_show(got)}{hint}")
        if not isinstance(want, dict) and (not isinstance(got, (list, tuple)) or len(got) != len(want)):
            raise CheckFailed(f"{what}: expected a sequence of {len(want)} like {list(want)!r:.60}, got {_show(got)}{hint}")
        for k in keys:
            _walk(got[k], want[k], f"{what}[{k!r}]", values, tol, hint, hints)
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise CheckFailed(f"{what}: expected a number, got {_show(got)}{hint}")
        if not math.isfinite(got):
            raise CheckFailed(f"{what}: expected the finite number {want:.6g}, got {got}{hint}")
        if isinstance(want, int) and isinstance(got, float) and not got.is_integer():
            raise CheckFailed(f"{what}: expected the whole number {want}, got {got}, which is not a whole "
                              f"number{hint}")
        if values and isinstance(want, int) and int(got) != want:  # int() of an integral float is exact
            raise CheckFailed(f"{what}: expected {want}, got {int(got)}{hint}")
        if values and isinstance(want, float) and abs(got - want) > tol[0] * max(1.0, abs(want)):
            raise CheckFailed(f"{what}: expected {want:.6g}, got {got:.6g}{hint}")
    elif type(got) is not type(want) or got != want:
        raise CheckFailed(f"{what}: expected {want!r:.60}, got {_show(got)}{hint}")


def expect(got, want, what: str, *, rel: float = 1e-9, atol: float = 1e-5, rtol: float = 1e-4, hint: str = "",
           hints: dict | None = None) -> None:
    """The one comparison of a learner's result with the reference's, for every check.

    ``want`` decides what ``got`` must be, checked in two passes so that the first failure said is
    the most basic one: first the kinds, lengths, dict keys, tensor shapes and dtype kinds, and that
    every number is finite (NaN and inf never pass) and, where ``want`` is an ``int``, integral (a
    float with a fraction fails and says so; no truncation); then the values: ints exactly, floats
    within ``rel`` (relative, at least absolute ``rel``), tensors within ``atol``/``rtol``. ``hint``
    (a known mistake's explanation) is added to a failure's reason; ``hints`` maps a message to a
    tensor a known mistake would produce.
    """
    for values in (False, True):
        _walk(got, want, what, values, (rel, atol, rtol), hint, hints)


def _tensor_values(got, want, what: str, tol: tuple, hints: dict | None) -> None:
    _, atol, rtol = tol
    got_f, exp_f = got.detach().to(torch.float64).cpu(), want.detach().to(torch.float64).cpu()
    if torch.allclose(got_f, exp_f, atol=atol, rtol=rtol):
        return
    diff = (got_f - exp_f).abs()
    idx = tuple(int(i) for i in torch.nonzero(diff > atol + rtol * exp_f.abs())[0])
    reason = (f"{what}: values differ from the reference (max abs difference {diff.max().item():.3g}; "
              f"at index {list(idx)} expected {exp_f[idx].item():.5g}, got {got_f[idx].item():.5g})")
    for message, wrong in (hints or {}).items():
        if wrong is not None and tuple(wrong.shape) == tuple(got.shape) and torch.allclose(
                got_f, wrong.detach().to(torch.float64).cpu(), atol=atol, rtol=rtol):
            reason += f". Hint: {message}"
            break
    raise CheckFailed(reason)


def _non_finite(value) -> bool:
    """Whether a value from the learner's code holds NaN or inf anywhere (a float, a tensor, inside containers;
    :mod:`.wire` bounds their depth)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, torch.Tensor):
        return value.dtype.is_floating_point and not bool(torch.isfinite(value.detach()).all())
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(map(_non_finite, value))


def draw(rng: random.Random, hidden: bool, default: int) -> int:
    """A seed: drawn from ``rng`` for the hidden tests, ``default`` for the visible ones."""
    return rng.randrange(2**31) if hidden else default


def randn(*shape, seed: int = 0, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Standard normal numbers from their own generator (the global one is left alone)."""
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomize(module: nn.Module, seed: int | torch.Generator) -> nn.Module:
    """``module`` with every weight and bias drawn anew, 0.3 N(0, 1), from ``seed`` (or that generator)."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return module


class SubjectMissing(CheckFailed):
    """The name the tests call is not defined in the learner's notebook."""


class Session:
    """Where the learner's code runs. A check reaches it only through these methods, and gets data:
    ``transport`` takes a request document (a list of operations, :mod:`.wire`) and returns the answer
    document, in process for a self-check (:meth:`local`), through files in the learner's kernel for the grader."""

    def __init__(self, transport, subject: str):
        self._transport = transport
        self.subject = subject

    @classmethod
    def local(cls, obj, name: str = "answer") -> Session:
        """A session on an object in this process (the notebook's self-checks)."""
        return cls(Agent({name: obj}).handle, name)

    # ----------------------------------------------------------------------- plumbing
    def _rpc(self, ops: list[dict]) -> list:
        answer = self._transport(wire.dumps(ops))
        try:
            results = wire.loads(answer)
        except wire.WireError as err:
            raise CheckFailed(f"the grader could not read what your code returned ({err})") from None
        if not isinstance(results, list) or len(results) != len(ops):
            raise CheckFailed("the grader could not read what your code returned (a malformed answer)")
        return results

    def _one(self, op: dict):
        return self._rpc([op])[0]

    def _value(self, result: dict, label: str, args=(), kwargs=None):
        """The value in ``result``, or the learner's exception turned into a CheckFailed.

        Every result of the learner's code passes here, so NaN and inf are refused here for every
        check: no task's answer holds them.
        """
        call_text = f"{label}({_fmt_args(args, kwargs or {})})" if label and not label.endswith(")") else label
        if not isinstance(result, dict) or ("error" not in result and "value" not in result):
            raise CheckFailed(f"{label}: the grader could not read what your code returned")
        if "error" not in result:
            if _non_finite(result["value"]):
                raise CheckFailed(f"{call_text} returned NaN or inf; expected finite numbers")
            return result["value"]
        ename, message = str(result.get("error")), str(result.get("message", ""))
        if result.get("agent"):
            raise CheckFailed(f"{label}: the check could not run ({ename}: {message})")
        if ename == "NameError" and result.get("where") == "the subject":
            raise SubjectMissing(f"NameError: {message}")
        if ename == "NotImplementedError":
            if result.get("stub"):
                raise _NotAnswered(str(result.get("where") or label))
            raise CheckFailed(f"{call_text} raised NotImplementedError in torch: {message}")
        raise CheckFailed(f"{call_text} raised {ename}: {message}")

    # ----------------------------------------------------------------------- operations
    def _call_op(self, args, kwargs, seed, args_after, param_refs, name):
        return {"op": "call", "subject": self.subject, "args": list(args), "kwargs": dict(kwargs), "seed": seed,
                "label": name, "args_after": args_after, "param_refs": param_refs}

    def call(self, *args, _name: str | None = None, _seed: int | None = None, _args_after: bool = False,
             _param_refs: bool = False, **kwargs):
        """Call the subject on ``args``; its result as data (with ``_args_after``, ``(value, args after the
        call)``, to see what the call changed in place)."""
        name = _name or self.subject
        result = self._one(self._call_op(args, kwargs, _seed, _args_after, _param_refs, name))
        value = self._value(result, name, args, kwargs)
        return (value, result.get("args_after")) if _args_after else value

    def call_all(self, cases: list[tuple], kwargs: list[dict] | None = None):
        """Call the subject on each tuple of arguments in ``cases`` (with ``kwargs``) in one round trip;
        their values in turn (a failure raises when its turn comes)."""
        kwargs = kwargs or [{}] * len(cases)
        results = self._rpc([self._call_op(a, k, None, False, False, self.subject) for a, k in zip(cases, kwargs)])
        return (self._value(r, self.subject, a, k) for r, a, k in zip(results, cases, kwargs))

    def make(self, fixture: str, *args, state: dict | None = None, mode: str | None = None):
        """Build one of :mod:`.fixtures` on the learner's side (weights from ``state``); a handle."""
        result = self._one({"op": "make", "fixture": fixture, "args": list(args), "state": state, "mode": mode})
        if not isinstance(result, wire.Handle):
            raise CheckFailed(f"the check could not build its test model {fixture} ({result.get('message', '')})")
        return result

    def observe(self, handle, what: str):
        result = self._one({"op": "observe", "target": handle, "what": what})
        if isinstance(result, dict) and "error" in result:
            raise CheckFailed(f"the check could not read back its test model ({result.get('message', '')})")
        return result

    def describe(self, handle, label: str) -> dict:
        return self._value(self._one({"op": "describe", "target": handle, "label": label}), label)

    def attr(self, handle, name: str, label: str):
        return self._value(self._one({"op": "attr", "target": handle, "name": name, "label": label}), label)

    def load_state(self, handle, state: dict, label: str) -> None:
        self._value(self._one({"op": "load_state", "target": handle, "state": dict(state), "label": label}), label)

    def forward(self, handle, *args, label: str, mode: str | None = None, submodes: dict | None = None,
                seed: int | None = None, copy: bool = False):
        """The module behind ``handle`` on ``args``, without gradients (``copy``: on a deep copy of it)."""
        op = {"op": "forward", "target": handle, "args": list(args), "mode": mode, "submodes": submodes or {},
              "seed": seed, "copy": copy, "label": label}
        return self._value(self._one(op), label)


def module_signature_mismatch(mine: dict, ref: nn.Module) -> str | None:
    """The first convolution whose hyper-parameters differ from the reference's, said plainly.

    ``mine`` is the learner's module's ``convs`` description (:func:`.agent.conv_description`).
    """
    for name, want in conv_description(ref).items():
        have = mine.get(name)
        if have is None:
            continue
        label = name or "the convolution"
        for attr in ("kernel_size", "stride", "dilation", "padding", "groups", "bias"):
            h, w = have.get(attr), want[attr]
            if (list(h) if isinstance(h, (tuple, list)) else h) != (list(w) if isinstance(w, tuple) else w):
                h = tuple(h) if isinstance(h, list) else h
                return f"{label} has {attr}={h}, expected {attr}={w}"
    return None


def require_module(mine, what: str) -> wire.Handle:
    """``mine`` when it is the handle of an ``nn.Module`` in the learner's kernel, else CheckFailed."""
    if not (isinstance(mine, wire.Handle) and mine.module):
        raise CheckFailed(f"{what}: expected an nn.Module, got {getattr(mine, 'type', type(mine).__name__)}")
    return mine


def load_reference_state(S: Session, mine, ref: nn.Module, what: str, signature: bool = False) -> None:
    """Copy the reference's weights into the learner's module, explaining any key or shape mismatch (and, with
    ``signature``, then any convolution whose hyper-parameters differ from the reference's)."""
    desc = S.describe(require_module(mine, what), what)
    want = ref.state_dict()
    have = {k: torch.empty(v, device="meta") for k, v in desc["state"].items()}
    missing, extra, shapes = state_dict_differences(have, want)
    if missing or extra:
        parts = [f"missing parameters {missing[:6]}"] * bool(missing) + [f"unexpected parameters {extra[:6]}"] * bool(extra)
        raise CheckFailed(f"{what}: {'; '.join(parts)}. Use the attribute names given in the task "
                          f"(expected {sorted(want)[:12]})")
    if shapes:
        key = next(iter(shapes))  # the first in the reference's order
        hint = module_signature_mismatch(desc["convs"], ref)
        raise CheckFailed(f"{what}: parameter {key} has shape {list(desc['state'][key])}, expected "
                          f"{fmt_shape(want[key])}" + (f" ({hint})" if hint else ""))
    S.load_state(mine, want, what)
    problem = module_signature_mismatch(desc["convs"], ref) if signature else None
    if problem:
        raise CheckFailed(f"{what}: {problem}")


class TaskCheck:
    """One task's check: ``body(session, hidden, rng)`` raises CheckFailed or returns a summary. Called
    (``check.eq3_params(eq3_params)``) it is the learner's self-check; the grader calls :meth:`verdict`. ``hides``
    names the course's own code that the task asks the learner to write again (``van_edu.lka.LKA``: top-level
    functions and classes where they are defined), which a box graded with ``--forbid-reference`` does not have."""

    def __init__(self, task: str, body, hides: tuple[str, ...] = ()):
        self.task, self.body, self.hides = task, body, hides
        functools.update_wrapper(self, body)

    def verdict(self, session: Session, hidden: bool, rng: random.Random) -> str:
        """Judge the subject of ``session``: the summary on success, CheckFailed/_NotAnswered on failure."""
        with cpu_threads(1):  # tiny tensors: one thread is fastest, steady, and like the kernel's
            return self.body(session, hidden, rng) or ""

    def __call__(self, obj, hidden: bool = False):
        __tracebackhide__ = True  # noqa: F841  (IPython and pytest hide this frame)
        name = getattr(obj, "__name__", None) or "answer"
        try:
            summary = self.verdict(Session.local(obj, name), hidden, random.Random(0))
        except _NotAnswered as err:
            print(f"FAIL {self.task}: not answered yet: {err} still raises NotImplementedError")
            raise NotImplementedError(f"{self.task}: {err} still raises NotImplementedError: replace "
                                      "`raise NotImplementedError()` with your code") from None
        except CheckFailed as err:
            print(f"FAIL {self.task}: {err}")
            raise CheckFailed(f"{self.task}: {err}") from None
        print(f"PASS {self.task}" + (f": {summary}" if summary else ""))
        return True


def task_check(task: str, *hides: str):
    """Make ``body(session, hidden, rng)`` the check of ``task`` (a :class:`TaskCheck`) hiding ``hides``."""
    return lambda body: TaskCheck(task, body, hides)
