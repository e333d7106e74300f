"""Small pieces shared by the architectures: drop path and its rates, the initialisation of linear
layers and norms, and the pooling classifier head every model ends with."""
from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: during training, drop a whole residual branch per sample with probability p.

    Kept samples are scaled by 1 / (1 - p) so the expected value is unchanged; at evaluation it is
    the identity.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # [B, 1, ...]
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


def linear_drop_path_rates(total: float, depths) -> list[list[float]]:
    """Drop-path rates rising linearly from 0 to ``total`` over all blocks, split per stage."""
    n = sum(depths)
    rates = [total * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def init_linear_and_norm(m: nn.Module) -> bool:
    """Linear: trunc-normal weights (std 0.02), zero bias; LayerNorm: 1 and 0. True if ``m`` was one."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
        return True
    if isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
        return True
    return False


class MeanPoolHead:
    """The classifier end of every course model, mixed into the network's class.

    The network defines ``forward_features(x) -> [B, C, h, w]`` and a ``head`` (a linear layer, or
    ``nn.Identity`` for no classes); this adds ``forward_head`` (the mean over all positions, then
    ``head``) and ``forward``. The head stays the network's own ``head`` attribute, so the
    state-dict keys are ``head.weight`` and ``head.bias``, as in the authors' checkpoints.
    """

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))                                    # [B, C]: mean over all positions
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
