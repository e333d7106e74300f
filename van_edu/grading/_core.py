"""What every check shares: calling the learner's code safely, comparing, and reporting.

A check is a function decorated with :func:`task_check`. It raises :class:`CheckFailed` with a
reason a learner can act on (the input that broke it, the expected shape or value, a hint when the
answer matches a known mistake); the decorator prints ``PASS name: ...`` or ``FAIL name: ...`` and
re-raises, so a notebook cell (and the grader) sees the failure. A stub that still raises
``NotImplementedError`` is reported as not answered yet and re-raised as ``NotImplementedError``.
"""
from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager

import torch
from torch import nn

from ..models.checkpoint import state_dict_differences

__all__ = ["CheckFailed", "task_check", "call", "expect_number", "expect_tensor", "fmt_shape",
           "seeded", "module_signature_mismatch", "load_reference_state"]


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
        if isinstance(v, nn.Module):
            return type(v).__name__
        if isinstance(v, torch.dtype):
            return str(v)
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _where(err: BaseException, default: str) -> str:
    """Name the learner's function or method that raised (``LKA.__init__``), else ``default``."""
    tb, frame = err.__traceback__, None
    while tb is not None:
        if not tb.tb_frame.f_globals.get("__name__", "").startswith(("van_edu", "torch")):
            frame = tb.tb_frame
        tb = tb.tb_next
    if frame is None:
        return default
    name = frame.f_code.co_name
    owner = frame.f_locals.get("self")
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__name__}.{name}"
    return name if name != "<module>" else default


def call(fn, *args, _name: str | None = None, **kwargs):
    """Call the learner's ``fn``; any exception becomes a CheckFailed naming the call."""
    name = _name or getattr(fn, "__name__", "your function")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        tb = err.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        if tb.tb_frame.f_globals.get("__name__", "").startswith("torch"):  # e.g. a module without forward()
            raise CheckFailed(f"{name}({_fmt_args(args, kwargs)}) raised NotImplementedError in torch: {err}") from None
        raise _NotAnswered(_where(err, name)) from None
    except CheckFailed:
        raise
    except Exception as err:  # the learner's bug: report it, never let it escape as itself
        raise CheckFailed(f"{name}({_fmt_args(args, kwargs)}) raised {type(err).__name__}: {err}") from None


def expect_number(got, expected, what: str, integer: bool = True, rel: float = 1e-9, hint: str = "") -> None:
    """``got`` must be a number equal to ``expected`` (an int when ``integer``).

    ``hint`` (a known mistake's explanation, e.g. " (round K / d up)") is added to the reason when
    the check fails; the caller decides from ``got`` whether it applies.
    """
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)) and not hasattr(got, "__index__"):
        raise CheckFailed(f"{what}: expected a number, got {type(got).__name__} {got!r:.60}{hint}")
    if integer:
        if isinstance(got, float) and not got.is_integer():
            raise CheckFailed(f"{what}: expected the whole number {expected}, got {got}{hint}")
        if int(got) != expected:
            raise CheckFailed(f"{what}: expected {expected}, got {int(got)}{hint}")
    elif abs(float(got) - expected) > rel * max(1.0, abs(expected)):
        raise CheckFailed(f"{what}: expected {expected:.6g}, got {float(got):.6g}{hint}")


def expect_tensor(got, expected: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4,
                  hints: dict | None = None) -> None:
    """``got`` must be a tensor of ``expected``'s shape and values.

    ``hints`` maps a message to a tensor a known mistake would produce; when ``got`` matches one,
    the message is added to the reason.
    """
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}: expected a tensor of shape {fmt_shape(expected)}, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        raise CheckFailed(f"{what}: expected shape {fmt_shape(expected)}, got {fmt_shape(got)}")
    got_f, exp_f = got.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(got_f).all():
        raise CheckFailed(f"{what}: the result contains NaN or inf (expected finite values)")
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


@contextmanager
def seeded(seed: int = 0):
    """Run a block with torch's global generator seeded, restoring the learner's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _effective_padding(conv: nn.Conv2d) -> tuple:
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return tuple(conv.padding)


def module_signature_mismatch(mine: nn.Module, ref: nn.Module) -> str | None:
    """The first convolution whose hyper-parameters differ from the reference's, said plainly."""
    theirs = dict(mine.named_modules())
    for name, r in ref.named_modules():
        m = theirs.get(name)
        if not isinstance(r, nn.Conv2d) or not isinstance(m, nn.Conv2d):
            continue
        label = name or "the convolution"
        for attr, get in (("kernel_size", lambda c: tuple(c.kernel_size)), ("stride", lambda c: tuple(c.stride)),
                          ("dilation", lambda c: tuple(c.dilation)), ("padding", _effective_padding),
                          ("groups", lambda c: c.groups), ("bias", lambda c: c.bias is not None)):
            if get(m) != get(r):
                return f"{label} has {attr}={get(m)}, expected {attr}={get(r)}"
    return None


def load_reference_state(mine: nn.Module, ref: nn.Module, what: str) -> None:
    """Copy the reference's weights into the learner's module, explaining any key or shape mismatch."""
    if not isinstance(mine, nn.Module):
        raise CheckFailed(f"{what}: expected an nn.Module, got {type(mine).__name__}")
    want, have = ref.state_dict(), mine.state_dict()
    missing, extra, shapes = state_dict_differences(have, want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing parameters {missing[:6]}")
        if extra:
            parts.append(f"unexpected parameters {extra[:6]}")
        raise CheckFailed(f"{what}: {'; '.join(parts)}. Use the attribute names given in the task "
                          f"(expected {sorted(want)[:12]})")
    if shapes:
        key = next(iter(shapes))  # the first in the reference's order
        hint = module_signature_mismatch(mine, ref)
        raise CheckFailed(f"{what}: parameter {key} has shape {fmt_shape(have[key])}, expected "
                          f"{fmt_shape(want[key])}" + (f" ({hint})" if hint else ""))
    mine.load_state_dict(want)


def _reject_reference(obj) -> None:
    module = getattr(obj, "__module__", "") or ""
    if module.startswith("van_edu"):
        raise CheckFailed(f"you passed van_edu's own {getattr(obj, '__name__', obj)!s}; "
                          f"the task asks for your implementation")


def task_check(task: str):
    """Decorate a check: print PASS/FAIL for ``task`` and re-raise failures for the grader."""

    def wrap(body):
        @functools.wraps(body)
        def check(*args, **kwargs):
            __tracebackhide__ = True  # noqa: F841  (IPython and pytest hide this frame)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and steady on a busy machine
            try:
                for obj in args:
                    if inspect.isfunction(obj) or inspect.isclass(obj):
                        _reject_reference(obj)
                summary = body(*args, **kwargs)
            except _NotAnswered as err:
                print(f"FAIL {task}: not answered yet: {err} still raises NotImplementedError")
                raise NotImplementedError(f"{task}: {err} still raises NotImplementedError: replace "
                                          "`raise NotImplementedError()` with your code") from None
            except CheckFailed as err:
                print(f"FAIL {task}: {err}")
                raise CheckFailed(f"{task}: {err}") from None
            finally:
                torch.set_num_threads(threads)
            print(f"PASS {task}" + (f": {summary}" if summary else ""))
            return True

        check.task = task
        return check

    return wrap


def require_callable(obj, what: str) -> None:
    if not callable(obj):
        raise CheckFailed(f"expected {what} to be a function or class, got {type(obj).__name__} {obj!r:.60}")
