"""The objects checks hand to a learner's code: small models, an optimiser, a gradient scaler.

They are built on both sides of the trust boundary from the same code: in the learner's kernel
(where the learner's ``train_step`` or ``grad_cam`` uses them) and in the grader (where the
reference gets an identical copy). Weights travel as data from the grader, so both copies hold the
same numbers. Nothing here knows an answer: these are the test bench, not the reference.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FIXTURES", "build", "observe"]


class ParamNet(nn.Module):
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


class Recorder(nn.Module):
    """A small classifier that records what each forward pass saw."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 3)
        self.seen = []

    def forward(self, x):
        h = self.fc1(x)
        self.seen.append({"dtype": str(h.dtype).removeprefix("torch."), "training": self.training,
                          "grad": torch.is_grad_enabled(), "batch": len(x)})
        return self.fc2(torch.relu(self.drop(h)))


class CountingScaler:
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


class TinyConvNet(nn.Module):
    def __init__(self, frozen_conv: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3).requires_grad_(not frozen_conv)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)
        self.scale = nn.Parameter(torch.ones(8))


class CamNet(nn.Module):
    """A two-layer conv net with the course's features/head split, for 12 x 12 images.

    Its head reads every position with its own weight (not a mean), so that the gradients differ
    from position to position, as in deeper networks.
    """

    def __init__(self, in_chans: int = 1, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 6, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(6, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8 * 6 * 6, classes)

    def forward_features(self, x):
        return self.body(x)                       # [B, 8, 6, 6]

    def forward_head(self, x):
        return self.head(x.flatten(1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _van(name: str, device: str = "cpu", **kwargs):
    from ..models import create_model
    with torch.device(device):
        return create_model(name, **kwargs)


FIXTURES = {
    "linear_10_5": lambda: nn.Linear(10, 5),
    "param_net": ParamNet,
    "recorder": Recorder,
    "recorder_dropout": lambda: Recorder(0.5),
    "tiny_conv": TinyConvNet,
    "tiny_conv_frozen": lambda: TinyConvNet(frozen_conv=True),
    "cam_net": CamNet,
    # a narrow, one-block-per-stage van_mini: CPU-light, the same code paths
    "small_van": lambda: _van("van_mini", num_classes=10, in_chans=1, embed_dims=(8, 16, 32), depths=(1, 1, 1)),
    "van_mini_3": lambda: _van("van_mini", num_classes=3, in_chans=1),
    "van_b0_meta": lambda: _van("van_b0", "meta"),
    "scaler": CountingScaler,
    "sgd": lambda model, lr, momentum: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
}


def build(name: str, *args):
    """A fixture by name, made from ``args`` (only ``sgd`` takes any: the model, lr and momentum)."""
    if name not in FIXTURES:
        raise KeyError(f"no fixture {name!r}")
    return FIXTURES[name](*args)


def observe(obj, what: str):
    """What a check reads back from a fixture after the learner used it (data only)."""
    if what == "seen":
        return list(getattr(obj, "seen", []))
    if what == "calls":
        return dict(getattr(obj, "calls", {}))
    if what == "params":
        return {n: p.detach().clone() for n, p in obj.named_parameters()}
    raise KeyError(f"cannot observe {what!r}")
