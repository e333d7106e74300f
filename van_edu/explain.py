"""Looking inside trained models: Grad-CAM, effective receptive fields, LKA attention maps.

Every model of the course splits into ``forward_features(x)`` (the last feature map
``[B, C, h, w]``) and ``forward_head(features)`` (mean pooling and a linear layer), so one
Grad-CAM serves VAN, ViT and ResNet alike.

* ``grad_cam``: Selvaraju et al. (2017) on the last feature map: each channel weighted by the mean
  gradient of the chosen logit over the map, summed, ReLU; optionally upsampled to the image.
* ``effective_receptive_field``: Luo et al. (2016): how strongly each input pixel moves the centre
  unit of an output map, from the gradient of that unit, averaged over inputs. A receptive field
  says which pixels *can* matter; the effective one says how much they *do*.
* ``lka_attention_maps``: the attention map ``Conv1x1(DW-D-Conv(DW-Conv(u)))`` that each LKA
  multiplies its input by, recorded with forward hooks on every ``spatial_gating_unit``.
* ``top_pixels``, ``matched_pixels``, ``delete_pixels``: a deletion test of a saliency map. Delete
  each image's most salient pixels and compare with a control that deletes as many pixels in the
  same places that matter for the comparison (as many on the garment, as many on the background):
  otherwise a map that merely points at the garment would beat a control that hits background.

Notebook 08 applies them to the comparison's trained models (``van_edu.models.load_bundled_model``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VanEduError
from .lka import LKA

__all__ = ["grad_cam", "upsample_maps", "effective_receptive_field", "erf_radius", "lka_attention_maps",
           "top_pixels", "matched_pixels", "delete_pixels"]


def grad_cam(model: nn.Module, images: torch.Tensor, target=None, *, normalize: bool = True,
             size=None) -> torch.Tensor:
    """Grad-CAM maps ``[B, h, w]`` on the model's last feature map (``[B, H, W]`` with ``size``).

    ``target``: the class to explain, an int for all images or one per image; ``None`` explains
    the predicted class. ``normalize`` divides each map by its own maximum (all-zero maps stay
    zero). ``size`` (an int or ``(H, W)``) upsamples bilinearly, e.g. to the image's size.
    The model's mode is left as it is: call it in evaluation mode.
    """
    if images.dim() != 4:
        raise VanEduError(f"grad_cam expects images [B, C, H, W], got shape {list(images.shape)}")
    with torch.no_grad():
        features = model.forward_features(images)                 # [B, C, h, w]
    features.requires_grad_(True)      # d logit / d features needs only the head's graph
    with torch.enable_grad():
        logits = model.forward_head(features)                     # [B, classes]
        if target is None:
            target = logits.argmax(1)
        target = torch.as_tensor(target, device=logits.device).reshape(-1).expand(len(images))
        score = logits[torch.arange(len(images), device=logits.device), target].sum()
        grads, = torch.autograd.grad(score, features)             # [B, C, h, w]
    weights = grads.mean(dim=(2, 3), keepdim=True)                # [B, C, 1, 1]: one per channel
    cam = F.relu((weights * features.detach()).sum(1))            # [B, h, w]
    if normalize:
        cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return upsample_maps(cam, size) if size is not None else cam


def upsample_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of ``[B, h, w]`` maps to ``[B, H, W]``; ``size`` an int or ``(H, W)``."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def effective_receptive_field(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                              position=None) -> torch.Tensor:
    """How much each input pixel moves one output unit: ``[H, W]``, maximum 1.

    ``fn`` maps ``[B, C, H, W]`` to a map ``[B, C', h, w]`` (a module, or a model's
    ``forward_features``); ``inputs`` are the images (random or real) to average over. The unit
    is the output at ``position`` (``(row, col)``; default the centre), summed over channels;
    the result is ``|d unit / d input|`` averaged over images and input channels, divided by its
    maximum. The default centre of a map with an even side has no middle unit: there the unit is
    the sum of the two (or four) middle ones, whose fields together are centred on the image.
    Modules should be in evaluation mode: then images do not interact (BatchNorm uses its running
    statistics) and one backward pass gives every image's gradient.
    """
    if inputs.dim() != 4:
        raise VanEduError(f"effective_receptive_field expects inputs [B, C, H, W], got {list(inputs.shape)}")
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        if out.dim() != 4:
            raise VanEduError(f"fn must return a map [B, C, h, w], got shape {list(out.shape)}")
        if position is not None:
            unit = out[:, :, position[0], position[1]]
        else:  # the middle unit, or the two middle ones along an even side
            rows = slice((out.shape[2] - 1) // 2, out.shape[2] // 2 + 1)
            cols = slice((out.shape[3] - 1) // 2, out.shape[3] // 2 + 1)
            unit = out[:, :, rows, cols]
        grad, = torch.autograd.grad(unit.sum(), x)                 # [B, C, H, W]
    erf = grad.abs().mean(dim=(0, 1))                              # [H, W]
    return erf / erf.max().clamp_min(1e-30)


def erf_radius(erf: torch.Tensor, mass: float = 0.9, centre=None) -> int:
    """The smallest r such that the square of side 2r+1 around ``centre`` (default: the pixel of
    largest value) holds ``mass`` of the map's total: a one-number size of an effective field."""
    if not 0.0 < mass <= 1.0:
        raise VanEduError(f"mass must be in (0, 1], got {mass}")
    h, w = erf.shape
    if centre is None:
        flat = int(erf.argmax())
        centre = (flat // w, flat % w)
    cy, cx = centre
    rows = torch.arange(h, device=erf.device)[:, None]
    cols = torch.arange(w, device=erf.device)[None, :]
    distance = torch.maximum((rows - cy).abs(), (cols - cx).abs())  # Chebyshev distance, [H, W]
    total = erf.sum()
    for r in range(max(h, w)):
        if erf[distance <= r].sum() >= mass * total - 1e-12 * total:
            return r
    return max(h, w) - 1


def lka_attention_maps(model: nn.Module, images: torch.Tensor, reduce: str | None = "mean_abs"
                       ) -> dict[str, torch.Tensor]:
    """The attention map of every LKA in ``model`` for ``images``, by block name.

    A forward hook on each ``LKA`` module (``...attn.spatial_gating_unit``) recomputes
    ``attention_map(u)`` from the module's input ``u`` during one forward pass. ``reduce``:
    ``"mean_abs"`` gives ``[B, h, w]`` (mean of the absolute attention over channels: where the block
    amplifies or suppresses most), ``"mean"`` the signed channel mean, ``None`` the full
    ``[B, C, h, w]``. Keys are the module names without ``.attn.spatial_gating_unit``.
    """
    if reduce not in (None, "mean", "mean_abs"):
        raise VanEduError(f"reduce must be None, 'mean' or 'mean_abs', got {reduce!r}")
    maps: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, inputs, output):
            attn = module.attention_map(inputs[0]).detach()       # [B, C, h, w]
            if reduce == "mean_abs":
                attn = attn.abs().mean(1)
            elif reduce == "mean":
                attn = attn.mean(1)
            maps[name.removesuffix(".attn.spatial_gating_unit")] = attn
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, LKA)]
    if not handles:
        raise VanEduError(f"{type(model).__name__} has no LKA module (expected a VAN)")
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return maps



# --- Deletion tests: delete what a map highlights, against a control matched to it --------------
def top_pixels(scores: torch.Tensor, count, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask ``[N, P]`` of each image's ``count`` highest-scoring pixels.

    ``scores``: ``[N, ...]`` (flattened to ``[N, P]``); ``count``: one int for all images or one per
    image (``[N]``); ``allowed`` (``[N, P]`` bool), if given: choose only among these pixels, of
    which each image must have at least its ``count``. Ties are broken by position."""
    scores = scores.flatten(1).float()
    counts = torch.as_tensor(count, device=scores.device).expand(scores.shape[0])
    if allowed is not None:
        if (allowed.sum(1) < counts).any():
            raise VanEduError("top_pixels: an image has fewer allowed pixels than its count")
        scores = scores.masked_fill(~allowed, -torch.inf)
    rank = scores.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # 0 = the highest score
    return rank < counts[:, None]


def matched_pixels(scores: torch.Tensor, like: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The highest-scoring pixels of each image in the same numbers as the mask ``like`` has inside
    and outside ``region`` (all ``[N, P]``; ``scores`` may be ``[N, ...]``): a control that deletes
    as many garment pixels and as many background pixels as the map it is compared with. Random
    ``scores`` give a random matched control; a turned saliency map, the map's shape elsewhere."""
    like, region = like.bool(), region.bool()
    inside = top_pixels(scores, (like & region).sum(1), region)
    outside = top_pixels(scores, (like & ~region).sum(1), ~region)
    return inside | outside


def delete_pixels(images: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
    """``images`` ``[N, C, H, W]`` with the pixels of ``mask`` (``[N, H*W]`` or ``[N, H, W]``) set to
    ``fill`` in every channel (e.g. the black of the background after normalising)."""
    n, _, h, w = images.shape
    keep = ~mask.reshape(n, 1, h, w).bool()
    return torch.where(keep, images, torch.full_like(images, fill))
