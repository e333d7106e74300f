"""Global self-attention over the pixels of a feature map: the textbook module that notebooks 01
and 04 set beside LKA (a ViT's multi-head version is ``vit.SelfAttention``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalSelfAttention"]


class GlobalSelfAttention(nn.Module):
    """Single-head self-attention over all H*W pixels of a map, as the textbook writes it.

    ``softmax(Q K^T / sqrt(C)) V`` with Q, K, V and the output projection as 1x1 maps; no position
    embedding. With ``fused=False`` the N x N attention matrix (N = H*W) is built explicitly (its
    memory grows as N^2); with ``fused=True`` PyTorch's ``scaled_dot_product_attention`` computes
    the same function, on most back-ends in tiles that never hold the whole matrix (the time
    still grows as N^2). ``weights(x)`` returns the attention matrix [B, N, N].
    """

    def __init__(self, dim: int, fused: bool = False):
        super().__init__()
        self.dim, self.fused = dim, fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor):
        # [B, C, H, W] -> [B, N, C], laid out token by token: then the linear layer is one fused
        # product-and-bias (addmm), which the multiply-add counter sees whole
        tokens = x.flatten(2).transpose(1, 2).contiguous()
        return self.qkv(tokens).chunk(3, dim=-1)              # 3 x [B, N, C]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention matrix softmax(Q K^T / sqrt(C)): [B, N, N], rows sum to one."""
        q, k, _ = self._qkv(x)
        return self._softmax_scores(q, k)

    def _softmax_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(1, 2) / math.sqrt(self.dim)).softmax(-1)   # [B, N, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self._qkv(x)
        if self.fused:
            heads = (q[:, None], k[:, None], v[:, None])                        # [B, 1, N, C]
            out = F.scaled_dot_product_attention(*heads)[:, 0]                  # [B, N, C]
        else:
            out = self._softmax_scores(q, k) @ v                                                      # [B, N, C]
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)
