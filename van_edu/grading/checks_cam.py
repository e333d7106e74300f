"""Checks of exercise set 06 (Grad-CAM): the class activation map and its upsampling."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from . import fixtures
from . import reference as ref
from ._core import CheckFailed, draw, expect, fmt_shape, seeded, task_check


def _cam_hints(model, x, target) -> dict:
    raw = ref.grad_cam(model, x, target, normalize=False)
    with torch.enable_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        t = logits.argmax(1) if target is None else torch.as_tensor(target).reshape(-1).expand(len(x))
        grads, = torch.autograd.grad(logits[torch.arange(len(x)), t].sum(), feats)
    no_relu = (grads.mean((2, 3), keepdim=True) * feats).sum(1).detach()
    elementwise = F.relu((grads * feats).sum(1)).detach()
    norm = lambda c: c / c.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)  # noqa: E731
    hints = {
        "divide each map by its own maximum so that it lies in [0, 1]": raw,
        "keep only the positive evidence: apply ReLU to the weighted sum": norm(no_relu),
        "weight each channel by the MEAN of its gradient over the positions (one number per channel)": norm(elementwise),
    }
    if target is not None:
        hints["explain the class you were given (target), not the predicted one"] = ref.grad_cam(model, x, None)
    return hints


def _model(fixture: str, seed: int):
    with seeded(seed):
        return fixtures.build(fixture).eval()


@task_check("grad_cam", "van_edu.explain.grad_cam")
def grad_cam(S, hidden: bool, rng: random.Random):
    """``fn(model, x, target=None)`` -> [B, h, w] maps in [0, 1] on the last feature map."""
    tiny = _model("cam_net", draw(rng, hidden, 15))
    g = torch.Generator().manual_seed(draw(rng, hidden, 16))
    x1, x2 = torch.randn(3, 1, 12, 12, generator=g), torch.randn(2, 1, 12, 12, generator=g)
    with torch.no_grad():
        other = (tiny(x2).argmax(1) + 1) % 4  # classes the model does not predict
    cases = [("a small conv net", "cam_net", tiny, x1, None), ("a small conv net", "cam_net", tiny, x2, other)]
    if hidden:
        van = _model("small_van", rng.randrange(2**31))
        x3 = torch.randn(2, 1, 16, 16, generator=g)
        with torch.no_grad():
            one = int((van(x3).argmax(1)[0] + 1) % 10)
        cases += [("a small VAN", "small_van", van, torch.randn(2, 1, 16, 16, generator=g), None),
                  ("a small VAN", "small_van", van, x3, one), ("a small conv net", "cam_net", tiny, x1, 1)]
    for name, fixture, model, x, target in cases:
        label = f"grad_cam({name}, x {fmt_shape(x)}, target={target if not isinstance(target, torch.Tensor) else target.tolist()})"
        want = ref.grad_cam(model, x, target)
        mine = S.make(fixture, state=model.state_dict(), mode="eval")
        got = S.call(mine, x.clone(), target)
        expect(got, want, label, atol=1e-4, rtol=1e-3, hints=_cam_hints(model, x, target))
    return f"{len(cases)} maps match the reference Grad-CAM"


@task_check("upsample_cam", "van_edu.explain.upsample_maps")
def upsample_cam(S, hidden: bool, rng: random.Random):
    """``fn(cam, size)`` -> [B, H, W]: bilinear upsampling of [B, h, w] maps (align_corners=False)."""
    g = torch.Generator().manual_seed(draw(rng, hidden, 18))
    cases = [(torch.rand(2, 4, 4, generator=g), 16), (torch.rand(1, 7, 7, generator=g), (28, 28))]
    if hidden:
        cases += [(torch.rand(3, 2, 5, generator=g), (9, 20)), (torch.rand(1, 1, 1, generator=g), 5),
                  (torch.rand(2, rng.randint(1, 9), rng.randint(1, 9), generator=g), (rng.randint(1, 40), rng.randint(1, 40)))]
    for cam, size in cases:
        label = f"upsample_cam(cam {fmt_shape(cam)}, size={size})"
        got = S.call(cam.clone(), size)
        want = ref.upsample_cam(cam, size)
        shaped = (size, size) if isinstance(size, int) else size
        nearest = F.interpolate(cam[:, None], size=shaped, mode="nearest")[:, 0]
        corners = F.interpolate(cam[:, None], size=shaped, mode="bilinear", align_corners=True)[:, 0]
        if isinstance(got, torch.Tensor) and got.dim() == 4 and got.shape[1] == 1:
            raise CheckFailed(f"{label}: expected shape {fmt_shape(want)}, got {fmt_shape(got)}; "
                              "remove the channel dimension you added for F.interpolate")
        expect(got, want, label, hints={
            "use mode='bilinear' (smooth), not nearest": nearest,
            "use align_corners=False (the default: pixel centres, like image resizing)": corners,
        })
    return f"{len(cases)} maps upsampled bilinearly"
