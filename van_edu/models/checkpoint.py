"""Loading the authors' ImageNet checkpoints.

The authors released ``.pth.tar`` files written by timm's checkpoint saver: the weights under the
key ``state_dict`` (with the key names that ``van_edu.models.van`` reproduces) beside the optimiser
state, the epoch and the training arguments (an ``argparse.Namespace``). They were trained at
224x224 with mean = std = 0.5 per channel. A checkpoint is untrusted data: it is read with
``weights_only=True`` and only the Namespace is allow-listed. ``load_official_checkpoint`` reads such
a file into a VAN and reports what it left aside; ``pretrained`` takes one from the Hugging Face Hub
(or from a Hub cache, offline) and loads it.

``state_dict_differences`` is the package's one comparison of a state dict against the one a
model expects (missing keys, unexpected keys, other shapes); the loader here, training's exact
resume (``van_edu.train_state``) and the grader's checks (``van_edu.grading``) all report from it.
"""
from __future__ import annotations

import argparse
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import VanEduError

__all__ = ["LoadReport", "load_official_checkpoint", "pretrained", "OFFICIAL_CHECKPOINTS",
           "state_dict_differences"]

# Where the authors' files live on the Hub: (repository, file name).
OFFICIAL_CHECKPOINTS = {
    "van_b0": ("Visual-Attention-Network/VAN-Tiny-original", "van_tiny_754.pth.tar"),
    "van_b1": ("Visual-Attention-Network/VAN-Small-original", "van_small_811.pth.tar"),
    "van_b2": ("Visual-Attention-Network/VAN-Base-original", "van_base_828.pth.tar"),
    "van_b3": ("Visual-Attention-Network/VAN-Large-original", "van_large_839.pth.tar"),
}

_HEAD_KEYS = ("head.weight", "head.bias")


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded."""

    loaded: int = 0                                     # tensors copied into the model
    missing: list[str] = field(default_factory=list)     # model weights the file lacks
    unexpected: list[str] = field(default_factory=list)  # file entries the model has no place for
    head_not_loaded: str = ""                            # why the file's head was not loaded, if it was not
    ignored: list[str] = field(default_factory=list)     # top-level file entries besides the weights

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors"]
        if self.head_not_loaded:
            lines.append(f"the file's classification head was not loaded: {self.head_not_loaded}")
        if self.missing:
            lines.append(f"{len(self.missing)} model weights were not in the file: {_few(self.missing)}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} file entries were not used: {_few(self.unexpected)}")
        if self.ignored:
            lines.append(f"ignored what the file holds besides the weights: {', '.join(self.ignored)}")
        return "; ".join(lines)


def state_dict_differences(got: dict, expected: dict) -> tuple[list[str], list[str], dict]:
    """How the state dict ``got`` differs from ``expected`` (e.g. a file's against a model's).

    Returns ``(missing, unexpected, mismatched_shapes)``: the keys of ``expected`` that ``got``
    lacks, in ``expected``'s order; the keys of ``got`` that ``expected`` lacks, in ``got``'s
    order; and ``{key: (shape in got, shape in expected)}`` for the shared keys whose shapes differ,
    in ``expected``'s order (shapes as tuples; ``None`` for a value that is not a tensor). All three
    are empty when ``got`` fits.
    """
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = {k: (_shape(got[k]), _shape(v)) for k, v in expected.items()
                  if k in got and _shape(got[k]) != _shape(v)}
    return missing, unexpected, mismatched


def _shape(value) -> tuple | None:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


# What the authors' files hold besides tensors. timm's checkpoint saver wrote them as a dict with
# epoch, arch, state_dict, optimizer (AdamW's exp_avg / exp_avg_sq: most of the file's size),
# version, metric and args, the training script's argparse.Namespace of plain values. Only the
# Namespace is not a tensor or a plain container, so it is the one class allow-listed.
SAFE_CLASSES = (argparse.Namespace,)


def _load_weights_only(path: Path):
    """``torch.load(weights_only=True)`` with ``SAFE_CLASSES`` allowed, where this torch can."""
    safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5 (a context manager)
    if safe is None:
        add = getattr(torch.serialization, "add_safe_globals", None)  # torch 2.4: process-wide
        if add is not None:
            add(list(SAFE_CLASSES))
        return torch.load(path, map_location="cpu", weights_only=True)
    with safe(list(SAFE_CLASSES)):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights in an official-format file, and the names of the top-level entries left aside.

    The weights are under ``state_dict`` (the authors' files), ``model`` or at the top level.
    Files are read with ``weights_only=True``, so no code in them runs; of the classes a pickle may
    name, only ``SAFE_CLASSES`` (the training arguments' ``argparse.Namespace``) are allowed.
    ``trust=True`` unpickles everything, for files you know. The other top-level entries
    (``optimizer``, ``args``, ``epoch``, ...) are not used; their names are returned.
    """
    path = Path(path)
    if not path.is_file():
        raise VanEduError(f"checkpoint file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False) if trust else _load_weights_only(path)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):  # not a torch.save file at all
            raise VanEduError(f"could not read {path} as a PyTorch checkpoint: {err}") from err
        old = "" if hasattr(torch.serialization, "add_safe_globals") else (
            f" (torch {torch.__version__} cannot allow-list the training arguments that the authors' "
            "files hold: torch >= 2.4 can)")
        raise VanEduError(f"{path} holds objects other than tensors{old}; if you trust the file, "
                          f"pass trust=True ({str(err).splitlines()[0]})") from err
    except Exception as err:  # truncated or not a torch file at all
        raise VanEduError(f"could not read {path} as a PyTorch checkpoint: {err}") from err
    ignored: list[str] = []
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                ignored = [str(k) for k in obj if k != key]
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VanEduError(f"{path} is not a checkpoint of weights (expected a dict of tensors, "
                          "optionally under 'state_dict')")
    # Weights saved from DistributedDataParallel carry a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in obj.items()}, ignored


def load_official_checkpoint(model: nn.Module, path: str | Path, strict: bool = True,
                             trust: bool = False) -> LoadReport:
    """Load an authors'-format checkpoint into ``model``.

    When the head's class count differs (e.g. ImageNet's 1000 vs Fashion-MNIST's 10) the file's
    head is not loaded (the model's keeps its initial values) and the rest is; a model built with
    ``num_classes=0`` has no head, and the file's is left out the same way. The report says which. Any other missing or unexpected key, or a
    shape that differs, raises ``VanEduError`` naming them when ``strict`` (the default); with
    ``strict=False`` the matching tensors are loaded and the report lists the rest.
    """
    state, ignored = read_checkpoint(path, trust)
    own = model.state_dict()
    report = LoadReport(ignored=ignored)
    if all(k in state for k in _HEAD_KEYS):
        if not any(k in own for k in _HEAD_KEYS):
            report.head_not_loaded = "the model has no head (num_classes=0)"
        elif state["head.weight"].shape != own["head.weight"].shape:
            report.head_not_loaded = (f"the class count differs (file {state['head.weight'].shape[0]}, "
                                      f"model {own['head.weight'].shape[0]}); the model's head keeps its initial values")
    if report.head_not_loaded:
        state = {k: v for k, v in state.items() if k not in _HEAD_KEYS}
    missing, report.unexpected, shapes = state_dict_differences(state, own)
    shape_errors = [f"{k}: file {shapes[k][0]} vs model {shapes[k][1]}" for k in state if k in shapes]
    report.missing = [k for k in missing if not (report.head_not_loaded and k in _HEAD_KEYS)]
    if strict and (shape_errors or report.missing or report.unexpected):
        problems = []
        if shape_errors:
            problems.append(f"{len(shape_errors)} shapes differ ({_few(shape_errors, 3)})")
        if report.missing:
            problems.append(f"the file lacks {len(report.missing)} weights the model needs ({_few(report.missing)})")
        if report.unexpected:
            problems.append(f"the file has {len(report.unexpected)} entries the model does not "
                            f"({_few(report.unexpected)})")
        raise VanEduError(f"{path} does not fit this model: " + "; ".join(problems)
                          + ". Is it the checkpoint of the same variant (e.g. van_b0 for van_tiny_754)?")
    usable = {k: v for k, v in state.items() if k in own and k not in shapes}
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def pretrained(name: str, num_classes: int = 1000, cache_dir: str | Path | None = None, *,
               download: bool = True, **kwargs) -> nn.Module:
    """A VAN with the authors' ImageNet-1K weights, downloaded through huggingface_hub.

    Needs the network (or a Hugging Face cache that already holds the file); offline it raises
    ``VanEduError`` saying so. ``download=False`` looks only in the local cache and never asks the
    network. Inputs must be normalised with mean = std = 0.5 at 224x224.
    ``features_only=True`` (with ``out_indices``, see ``create_model``) gives the backbone: the
    file's head is left out. ``model.load_report`` is what ``load_official_checkpoint`` reported.
    """
    from huggingface_hub import hf_hub_download

    from .registry import create_model

    if name not in OFFICIAL_CHECKPOINTS:
        raise VanEduError(f"no official checkpoint for {name!r}; available: {', '.join(OFFICIAL_CHECKPOINTS)}")
    repo, filename = OFFICIAL_CHECKPOINTS[name]
    try:
        path = hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=not download)
    except Exception as err:  # offline, hub unreachable, or file moved
        if not download:
            raise VanEduError(f"{filename} (from the Hub repository {repo}) is not in the local Hugging Face "
                              "cache, and download=False asked not to fetch it") from err
        raise VanEduError(
            f"could not download {filename} from the Hugging Face Hub repository {repo} "
            f"({type(err).__name__}). Are you offline? Download it where you have the network and use "
            "load_official_checkpoint(model, path).") from err
    model = create_model(name, num_classes=num_classes, **kwargs)
    model.load_report = load_official_checkpoint(model, path)   # says whether the head was left out
    return model
