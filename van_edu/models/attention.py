"""Global self-attention over the pixels of a feature map: the textbook module that notebooks 01
and 04 set beside LKA (a ViT's multi-head version is ``vit.SelfAttention``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VanEduError

__all__ = ["GlobalSelfAttention"]


class GlobalSelfAttention(nn.Module):
    """Self-attention over all H*W pixels of a map, as the textbook writes it; one head by default.

    ``softmax(Q K^T / sqrt(d)) V`` with Q, K, V and the output projection as 1x1 maps; no position
    embedding. With ``heads`` > 1 the C channels of Q, K and V are split into ``heads`` groups of
    d = C / heads, each with its own attention matrix (as a ViT does), and the output projection
    mixes the heads again; with one head d = C. With ``fused=False`` the N x N attention matrices
    (N = H*W) are built explicitly (their memory grows as N^2); with ``fused=True`` PyTorch's
    ``scaled_dot_product_attention`` computes the same function, on most back-ends in tiles that
    never hold a whole matrix (the time still grows as N^2). ``weights(x)`` returns the attention
    matrix [B, N, N] (one head) or matrices [B, heads, N, N].
    """

    def __init__(self, dim: int, fused: bool = False, heads: int = 1):
        super().__init__()
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or dim % heads:
            raise VanEduError(f"heads={heads!r} for {dim} channels (expected a whole number >= 1 that divides {dim})")
        self.dim, self.fused, self.heads = dim, fused, heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor):
        # [B, C, H, W] -> [B, N, C], laid out token by token: then the linear layer is one fused
        # product-and-bias (addmm), which the multiply-add counter sees whole; then per head
        tokens = x.flatten(2).transpose(1, 2).contiguous()
        b, n, _ = tokens.shape
        return [t.view(b, n, self.heads, -1).transpose(1, 2)              # 3 x [B, heads, N, d]
                for t in self.qkv(tokens).chunk(3, dim=-1)]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention matrices softmax(Q K^T / sqrt(d)), rows summing to one: [B, N, N] with one
        head, [B, heads, N, N] with several."""
        q, k, _ = self._qkv(x)
        w = self._softmax_scores(q, k)
        return w[:, 0] if self.heads == 1 else w

    @staticmethod
    def _softmax_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)   # [B, heads, N, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self._qkv(x)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)                       # [B, heads, N, d]
        else:
            out = self._softmax_scores(q, k) @ v                                # [B, heads, N, d]
        out = out.transpose(1, 2).reshape(b, h * w, c)                          # the heads side by side
        return self.proj(out).transpose(1, 2).reshape(b, c, h, w)
