"""The course's trained models: ``build_model``'s architecture with the weights of a plain state
dict, such as the demo comparison's in ``notebooks/assets/compare`` (read by notebooks 07 and 08)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import VanEduError
from .build import build_model

__all__ = ["load_bundled_model"]


def load_bundled_model(name: str, folder: str | Path, data, device=None, **options) -> nn.Module:
    """``build_model(name, data, **options)`` with the weights of ``<folder>/<name>.pt`` (a plain
    state dict, or a ``fit()`` checkpoint), loaded strictly, in evaluation mode. For a segmentation
    or detection data set the options default to those the run recorded in ``<folder>/results.json``
    (``model_options``: the FPN's size, the backbone's levels). Raises VanEduError when the file is
    missing or does not fit the model (another architecture or data set)."""
    path = Path(folder) / f"{name}.pt"
    if not path.is_file():
        raise VanEduError(f"no trained weights at {path} (expected a state dict saved with torch.save)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]                                    # a fit() checkpoint also works
    if not options and getattr(data, "task", "") in ("segmentation", "detection"):
        options = _recorded_options(Path(folder), name)
    model = build_model(name, data, **options)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VanEduError(f"{path} does not fit {name} built for this data "
                          f"({data.in_chans} channels, {data.num_classes} classes): {err}") from err
    model.eval()
    return model.to(device) if device is not None else model


def _recorded_options(folder: Path, name: str) -> dict:
    """The ``model_options`` of ``name``'s run in ``<folder>/results.json`` ({} if none recorded)."""
    results = folder / "results.json"
    if not results.is_file():
        return {}
    runs = [r for r in json.loads(results.read_text()).get("runs", []) if r.get("model") == name]
    options = dict(runs[0].get("model_options", {})) if runs else {}
    if options.get("out_indices") is not None:
        options["out_indices"] = tuple(options["out_indices"])      # JSON made the tuple a list
    return options
