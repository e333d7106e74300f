"""The kernel's side of a check: run the learner's code on given inputs and report what it did.

An :class:`Agent` executes one request at a time, a list of operations written by the check
(call the learner's function, build a fixture, load weights, run a forward pass, read an
attribute back, ...) and answers with their results, as data (:mod:`.wire`). It judges nothing
and knows no answer: the inputs, the weights and the seeds come in with the request, the verdict
is made by whoever sent it. The same agent serves the self-checks in a learner's notebook (in
process) and the grader (in the learner's kernel, through files: :func:`serve`).
"""
from __future__ import annotations

import copy
import os
import traceback
from contextlib import contextmanager, suppress

import numpy as np
import torch
from torch import nn

from ..conv_arithmetic import same_padding
from ..runtime import cpu_threads
from . import fixtures, wire

__all__ = ["Agent", "serve", "conv_description", "error_info", "seeded"]


def conv_description(module) -> dict:
    """Each ``nn.Conv2d``'s hyper-parameters, by name: what a signature check compares."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str):
                pad = (0, 0) if m.padding == "valid" else tuple(
                    same_padding(k, d) for k, d in zip(m.kernel_size, m.dilation))
            else:
                pad = tuple(m.padding)
            out[name] = {"kernel_size": tuple(m.kernel_size), "stride": tuple(m.stride),
                         "dilation": tuple(m.dilation), "padding": pad, "groups": m.groups,
                         "bias": m.bias is not None}
    return out


def _blame(frames: list, default: str) -> str:
    """The learner's function or method that raised (``LKA.__init__``), else ``default``."""
    frames = [fr for fr in frames if not fr.f_globals.get("__name__", "").startswith(("van_edu", "torch"))]
    if not frames:
        return default
    name, owner = frames[-1].f_code.co_name, frames[-1].f_locals.get("self")
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__name__}.{name}"
    return name if name != "<module>" else default


def error_info(err: BaseException, default: str) -> dict:
    """An exception as data: its type, message, who raised it, and whether it is a stub."""
    frames = [fr for fr, _ in traceback.walk_tb(err.__traceback__)]
    in_torch = bool(frames) and frames[-1].f_globals.get("__name__", "").startswith("torch")
    try:
        message = str(err)
    except BaseException:  # a hostile __str__
        message = "(the exception could not be printed)"
    return {"error": type(err).__name__, "message": message[:500], "where": _blame(frames, default),
            "stub": isinstance(err, NotImplementedError) and not in_torch}


class Agent:
    """Runs operations on the learner's namespace ``ns``; keeps non-data results as handles."""

    def __init__(self, ns: dict):
        self.ns = ns
        self.objects: dict[int, object] = {}

    # ---------------------------------------------------------------- values in and out
    def _keep(self, obj) -> wire.Handle:
        key = next((key for key, known in self.objects.items() if known is obj), len(self.objects) + 1)
        self.objects[key] = obj
        return wire.Handle(key, type(obj).__name__, isinstance(obj, nn.Module))

    def _resolve(self, value):
        if isinstance(value, wire.Handle):
            if value.id not in self.objects:
                raise KeyError(f"no object {value.id}")
            return self.objects[value.id]
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    def _export(self, value, names: dict | None = None):
        """A result as data: tensors, numbers, containers; anything else becomes a handle.

        With ``names`` (``id(parameter)`` -> :class:`~.wire.ParamRef`), a parameter of a module the
        agent holds is sent as a reference to it rather than as its values.
        """
        if names is not None and isinstance(value, torch.Tensor) and id(value) in names:
            return names[id(value)]
        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.Tensor)):
            return value
        if type(value) in (list, tuple):
            return type(value)(self._export(v, names) for v in value)
        if type(value) is dict:
            return {k if isinstance(k, (str, int, float, bool)) else repr(k)[:60]: self._export(v, names)
                    for k, v in value.items()}
        with suppress(Exception):  # numpy's numbers and arrays, as tensors
            if isinstance(value, (np.ndarray, np.generic)) and value.dtype != object:
                return torch.from_numpy(np.array(value))
        return self._keep(value)

    def _param_names(self) -> dict:
        names = {}
        for key, obj in self.objects.items():
            if isinstance(obj, nn.Module):
                for n, p in obj.named_parameters():
                    names.setdefault(id(p), wire.ParamRef(key, n))
        return names

    # ---------------------------------------------------------------- operations
    def run(self, op: dict):
        kind = op["op"]
        label = op.get("label") or op.get("subject") or "your code"
        if kind == "make":
            args = self._resolve(op.get("args", []))
            with seeded(op.get("seed", 0)):
                obj = fixtures.build(op["fixture"], *args)
            if op.get("state") is not None:
                obj.load_state_dict(op["state"])
            if op.get("mode"):
                obj.train(op["mode"] == "train")
            return self._keep(obj)
        if kind == "observe":
            return fixtures.observe(self._resolve(op["target"]), op["what"])
        # from here on the learner's code runs: everything it raises is reported as data
        try:
            if "subject" in op and op["subject"] not in self.ns:
                return {"error": "NameError", "message": f"name {op['subject']!r} is not defined",
                        "where": "the subject", "stub": False}
            target = self.ns[op["subject"]] if "subject" in op else self._resolve(op["target"])
            if kind == "call":
                args, kwargs = self._resolve(op.get("args", [])), self._resolve(op.get("kwargs", {}))
                with seeded(op.get("seed")):
                    result = target(*args, **kwargs)
                out = {"value": self._export(result, names=self._param_names() if op.get("param_refs") else None)}
                if op.get("args_after"):
                    out["args_after"] = self._export(list(args))
                return out
            if kind == "describe":
                return {"value": self._describe(target)}
            if kind == "attr":
                return {"value": self._export(getattr(target, op["name"]))}
            if kind == "load_state":
                target.load_state_dict(op["state"])
                return {"value": None}
            if kind == "forward":
                module = copy.deepcopy(target) if op.get("copy") else target
                if op.get("mode"):
                    module.train(op["mode"] == "train")
                for sub, mode in (op.get("submodes") or {}).items():
                    module.get_submodule(sub).train(mode == "train")
                args = self._resolve(op.get("args", []))
                with seeded(op.get("seed")), torch.no_grad():
                    result = module(*args)
                return {"value": self._export(result)}
        except BaseException as err:  # the learner's code, whatever it raised
            return error_info(err, label)
        raise ValueError(f"unknown operation {kind!r}")

    def _describe(self, obj: nn.Module) -> dict:  # the checks describe only modules (require_module)
        return {"module": True, "type": type(obj).__name__, "is_conv2d": isinstance(obj, nn.Conv2d),
                "convs": conv_description(obj),
                "state": {k: list(v.shape) for k, v in obj.state_dict().items()}}

    def handle(self, request: str) -> str:
        """One request document in, one answer document out (a list: one result per operation)."""
        ops = wire.loads(request)
        answers = []
        for op in ops:
            try:
                result = self.run(op)
            except Exception as err:  # the check's request itself was wrong
                result = {"error": type(err).__name__, "message": str(err)[:300], "where": "the check",
                          "stub": False, "agent": True}
            try:
                answers.append(wire.dumps(result))
            except BaseException as err:  # a result that is not data (a meta tensor, a hostile subclass)
                answers.append(wire.dumps({"error": "WireError", "where": op.get("label") or "your code",
                                           "message": f"the result could not be sent back: {err}"[:300],
                                           "stub": False}))
        return "[" + ",".join(answers) + "]"


@contextmanager
def seeded(seed):
    """torch's global generator seeded for a block (``seed=None``: untouched), restored after: the agent
    seeds the learner's calls with it, the checks their references."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def serve(ns: dict, request_path: str, answer_path: str) -> None:
    """The grader's probe cell: answer the request in ``request_path`` into ``answer_path``."""
    agent = ns.get("__van_edu_agent__")
    if not isinstance(agent, Agent):
        agent = ns["__van_edu_agent__"] = Agent(ns)
    with open(request_path, encoding="utf-8") as f:
        request = f.read()
    os.remove(request_path)
    with cpu_threads(1):
        answer = agent.handle(request)
    tmp = answer_path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(answer)
    os.replace(tmp, answer_path)
