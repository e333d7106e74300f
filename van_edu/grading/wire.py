"""The data that crosses between a learner's kernel and the grader: JSON that runs no code when read.

What the grader sends (inputs, weights, seeds) and what the kernel sends back (the learner's
outputs) are written with :func:`dumps` and read with :func:`loads`: plain JSON in which a tensor
is ``{"$t": dtype, "shape": [...], "b64": raw little-endian bytes}`` and a few other values carry a
tag. Reading never calls ``pickle`` or ``torch.load``, accepts only a fixed list of dtypes, checks
every tensor's byte count against its shape, and refuses documents over a size limit, so a kernel
that writes anything at all can at most make its own answer unreadable.
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass

import torch

__all__ = ["Handle", "ParamRef", "WireError", "dumps", "loads", "MAX_BYTES"]

MAX_BYTES = 64 * 2**20  # a kernel's answer larger than this is refused unread (the largest real one: ~4 MB)
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16,
    torch.int32, torch.int64, torch.bool)}


class WireError(ValueError):
    """A document that is not what :func:`dumps` writes (or is too large)."""


@dataclass(frozen=True)
class Handle:
    """An object that is not data (a learner's module, a fixture), kept in the kernel: its id there, its class
    name, whether it is a module."""

    id: int
    type: str = "object"
    module: bool = False


@dataclass(frozen=True)
class ParamRef:
    """A parameter of the module behind handle ``owner``, by its name in ``named_parameters()`` (so that
    ``param_groups`` answers can be judged)."""

    owner: int
    name: str


def _encode(value, depth: int = 0):
    if depth > 40:
        raise WireError("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"$bigint": str(value)}
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else {"$float": repr(value)}
    if isinstance(value, torch.dtype):
        return {"$dtype": str(value).removeprefix("torch.")}
    if isinstance(value, Handle):
        return {"$obj": value.id, "type": value.type, "module": value.module}
    if isinstance(value, ParamRef):
        return {"$param": [value.owner, value.name]}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype not in _DTYPES.values():
            raise WireError(f"dtype {t.dtype} cannot be sent")
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out = {"$t": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
               "b64": base64.b64encode(raw).decode("ascii")}
        if isinstance(value, torch.nn.Parameter):
            out["parameter"] = True
        if value.requires_grad:
            out["requires_grad"] = True
        return out
    if isinstance(value, (list, tuple)):
        items = [_encode(v, depth + 1) for v in value]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, dict):
        return {"$dict": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    raise WireError(f"a {type(value).__name__} cannot be sent")


def dumps(value) -> str:
    """``value`` as a JSON document (:class:`WireError` for what cannot be sent)."""
    return json.dumps(_encode(value, 0), allow_nan=False)  # _encode bounds the depth


def _tensor(doc: dict) -> torch.Tensor:
    dtype = _DTYPES.get(doc.get("$t"))
    shape = doc.get("shape")
    if dtype is None:
        raise WireError(f"unknown dtype {doc.get('$t')!r:.40}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(type(s) is int and 0 <= s for s in shape):
        raise WireError("a tensor's shape must be a short list of sizes")
    raw = base64.b64decode(doc.get("b64", ""), validate=True)
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if numel * itemsize != len(raw):
        raise WireError(f"a tensor of shape {shape} needs {numel * itemsize} bytes, got {len(raw)}")
    t = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).clone() if numel else torch.empty(shape, dtype=dtype)
    if doc.get("parameter"):
        t = torch.nn.Parameter(t, requires_grad=bool(doc.get("requires_grad")))
    return t


def _decode(doc, depth: int = 0):
    if depth > 40:
        raise WireError("nested too deeply")
    if doc is None or isinstance(doc, (bool, int, float, str)):
        return doc
    if isinstance(doc, list):
        return [_decode(v, depth + 1) for v in doc]
    if not isinstance(doc, dict):
        raise WireError(f"unexpected {type(doc).__name__}")
    if "$t" in doc:
        return _tensor(doc)
    if "$tuple" in doc:
        return tuple(_decode(v, depth + 1) for v in _list(doc["$tuple"]))
    if "$dict" in doc:
        out = {}
        for pair in _list(doc["$dict"]):
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("a dict entry must be a [key, value] pair")
            key = _decode(pair[0], depth + 1)
            try:
                out[key] = _decode(pair[1], depth + 1)
            except TypeError:  # an unhashable key
                raise WireError("a dict key must be a plain value") from None
        return out
    if "$float" in doc:
        text = doc["$float"]
        if text not in ("nan", "inf", "-inf"):
            raise WireError(f"bad float {text!r:.20}")
        return float(text)
    if "$bigint" in doc:
        return int(str(doc["$bigint"])[:5000])
    if "$dtype" in doc:
        dtype = _DTYPES.get(doc["$dtype"])
        if dtype is None:
            raise WireError(f"unknown dtype {doc['$dtype']!r:.40}")
        return dtype
    if "$obj" in doc:
        return Handle(_int(doc["$obj"]), str(doc.get("type", "object"))[:80], bool(doc.get("module")))
    if "$param" in doc:
        pair = _list(doc["$param"])
        if len(pair) != 2:
            raise WireError("a parameter reference is [owner, name]")
        return ParamRef(_int(pair[0]), str(pair[1])[:200])
    raise WireError("an object without a known tag")


def _list(v) -> list:
    if not isinstance(v, list):
        raise WireError("expected a list")
    return v


def _int(v) -> int:
    if type(v) is not int:
        raise WireError("expected an integer id")
    return v


def loads(text: str | bytes):
    """Read a document written by :func:`dumps`; :class:`WireError` for anything else."""
    if len(text) > MAX_BYTES:
        raise WireError(f"the answer is larger than {MAX_BYTES // 2**20} MiB")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise WireError(f"not JSON ({type(err).__name__})") from None
    try:
        return _decode(doc)  # which bounds the depth
    except (ValueError, TypeError) as err:
        raise WireError(str(err)[:200]) from None
