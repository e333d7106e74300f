"""Resuming training: writing training checkpoints atomically and resuming from them exactly.

(The authors' ImageNet checkpoints are another thing: ``van_edu.models.checkpoint`` reads them.)

After every epoch ``van_edu.train.fit`` writes ``checkpoint.pt`` (everything a resume needs: the
model, optimiser, scheduler and gradient-scaler states, the history, the config and a signature
of the training data) and ``history.json`` (the per-epoch rows, for people and plots), both through
``van_edu.fileio.atomic_write``, so an interrupted run never leaves half a file behind.

A resume reads the checkpoint with ``weights_only`` loading (a checkpoint is untrusted data) and
refuses it, before anything is changed, when it was made with another config (the fields in
``RESUME_KEYS``, which change a run's trajectory), on other training data, or for another model.
Since the randomness of an epoch depends only on ``(seed, epoch, rank)`` (see ``van_edu.train``),
restoring these states is all an exact resume needs.

The functions take the loop's state ``run`` (``van_edu.train``'s ``_Run``) and use its fields
``config``, ``train``, ``raw`` (the model), ``optimizer``, ``scheduler`` and ``scaler``.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from .data import ImageData
from .errors import VanEduError
from .fileio import atomic_write
from .models.checkpoint import state_dict_differences

__all__ = ["CHECKPOINT_NAME", "HISTORY_NAME", "CHECKPOINT_FORMAT", "RESUME_KEYS", "data_signature",
           "save", "read", "check_compatible", "check_state_dict", "restore"]

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
CHECKPOINT_FORMAT = 1
# Fields of TrainConfig that change the trajectory of a run: a checkpoint resumes only under the same.
RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing",
               "grad_clip", "augment", "amp", "seed")
_KEYS = {"format", "epoch", "history", "config", "data", "model", "optimizer", "scheduler", "scaler"}


def data_signature(data: ImageData) -> dict:
    """What a checkpoint remembers of the training set, to refuse resuming on other data."""
    return {"size": len(data), "shape": list(data.images.shape[1:]), "num_classes": data.num_classes}


def save(run, out_dir: Path, epochs_done: int, history: list[dict]) -> None:
    """checkpoint.pt (everything resume needs) and history.json, both atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT, "epoch": epochs_done, "history": history,
        "config": asdict(run.config), "data": data_signature(run.train),
        "model_class": type(run.raw).__qualname__, "model": run.raw.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
    }
    atomic_write(out_dir / CHECKPOINT_NAME, lambda p: torch.save(payload, p))
    atomic_write(out_dir / HISTORY_NAME, lambda p: p.write_text(json.dumps(history, indent=2)))


def read(path: Path) -> dict:
    """Load a checkpoint written by `fit` (tensors and plain values only), or explain why not."""
    if not path.is_file():
        raise VanEduError(f"resume=True but there is no checkpoint at {path} "
                          "(expected one written by an earlier fit(..., out_dir=...))")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise VanEduError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}); expected a "
                          "complete file written by van_edu.train.fit") from err
    if (not isinstance(ckpt, dict) or not _KEYS <= ckpt.keys() or ckpt["format"] != CHECKPOINT_FORMAT
            or not all(isinstance(ckpt[k], dict) for k in ("config", "data", "model", "optimizer"))
            or not isinstance(ckpt["history"], list)):
        raise VanEduError(f"{path} is not a van_edu training checkpoint of format {CHECKPOINT_FORMAT} "
                          f"(expected a dict with keys {sorted(_KEYS)})")
    return ckpt


def check_compatible(ckpt: dict, run, path: Path) -> None:
    """Refuse a checkpoint of another config, data set or model, before anything is changed."""
    saved, now = ckpt["config"], asdict(run.config)
    diffs = [f"{k}={saved.get(k)!r} there, {now[k]!r} now" for k in RESUME_KEYS if saved.get(k) != now[k]]
    if diffs:
        raise VanEduError(f"checkpoint {path} was made with another config: {'; '.join(diffs)} "
                          "(expected the same values, or a new out_dir / resume=False)")
    if ckpt["data"] != data_signature(run.train):
        raise VanEduError(f"checkpoint {path} was made on other training data: {ckpt['data']} there, "
                          f"{data_signature(run.train)} now (expected the same data set)")
    check_state_dict(ckpt["model"], run.raw.state_dict(), f"checkpoint {path} "
                     f"(model {ckpt.get('model_class')!r}; this one is {type(run.raw).__qualname__!r})")
    sizes = [len(g["params"]) for g in ckpt["optimizer"]["param_groups"]]
    if sizes != [len(g["params"]) for g in run.optimizer.param_groups]:
        raise VanEduError(f"checkpoint {path}: its optimiser has parameter groups of sizes {sizes}, "
                          "expected the grouping of this model")


def check_state_dict(saved: dict, expected: dict, what: str) -> None:
    """Same keys and shapes, or a VanEduError listing the first differences."""
    missing, extra, mismatched = state_dict_differences(saved, expected)
    shapes = [f"{k}: {got} vs {want}" for k, (got, want) in mismatched.items()]
    if missing or extra or shapes:
        raise VanEduError(f"{what} holds weights of another model: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}, other shapes {shapes[:5]} "
                          "(expected the state dict of the model being trained)")


def restore(run, ckpt: dict) -> None:
    """Put the saved model, optimiser, scheduler and scaler states back in place."""
    run.raw.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
