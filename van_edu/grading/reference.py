"""Reference answers of the exercises, one per task: what the checks compare learners' code with.

The course's own code where it holds the answer (Eq. (3), LKA, the VAN block, Grad-CAM and its
upsampling, ...), a thin wrapper where the task asks for another signature (the schedule as a
function of the step), and here what the package has no function for (attention on plain tensors,
a training step, accuracy on tensors, ...).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..complexity import count_params as count_parameters
from ..conv_arithmetic import same_padding, stack_receptive_field
from ..explain import grad_cam
from ..explain import upsample_maps as upsample_cam
from ..lka import LKA, best_dilation, conv_params, decomposition, mobilenet_params
from ..lka import lka_params as eq3_params
from ..models.layers import linear_drop_path_rates as drop_path_rates
from ..models.van import Attention, Block, OverlapPatchEmbed
from ..runtime import autocast
from ..train import WarmupCosine

__all__ = ["same_padding", "decompose", "eq3_params", "best_dilation", "stack_receptive_field", "table2_row",
           "depthwise_conv", "effective_kernel", "LKA", "Attention", "OverlapPatchEmbed", "stage_sizes",
           "drop_path_rates", "Block", "attention", "attention_macs", "lka_macs", "count_parameters",
           "warmup_cosine", "train_step", "accuracy", "grad_cam", "upsample_cam"]


# --- set 1: the arithmetic of LKA (same_padding, eq3_params, best_dilation: the course's, imported above) ---
def decompose(kernel_size: int, dilation: int) -> tuple[int, int]:
    """(DW-Conv kernel, DW-D-Conv kernel) = (2d - 1, ceil(K / d))."""
    d = decomposition(kernel_size, dilation)
    return d.dw_kernel, d.dwd_kernel


def table2_row(channels: int, kernel_size: int = 21, dilation: int = 3) -> dict:
    return {"standard": conv_params(kernel_size, channels),
            "mobilenet": mobilenet_params(kernel_size, channels),
            "van": eq3_params(kernel_size, dilation, channels)}


# --- set 2: the LKA module -------------------------------------------------------------------
def depthwise_conv(channels: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=same_padding(kernel, dilation),
                     dilation=dilation, groups=channels)


def effective_kernel(w_dw: torch.Tensor, w_dwd: torch.Tensor, dilation: int) -> torch.Tensor:
    """The single kernel equal to DW-Conv (``w_dw``) then DW-D-Conv (``w_dwd``, dilated).

    Two cross-correlations in a row are one cross-correlation with the full convolution of the
    kernels; ``conv_transpose2d`` computes exactly that sum, dilation included.
    """
    out = F.conv_transpose2d(w_dw[None, None].double(), w_dwd[None, None].double(), dilation=dilation)
    return out[0, 0].to(w_dw.dtype)


# --- set 3: the VAN architecture ------------------------------------------------------------
def stage_sizes(image_size: int, stem_kernel: int = 7, stem_stride: int = 4, num_stages: int = 4) -> list[int]:
    """Side of the feature map after each stage's overlapping patch embedding."""
    sizes, side = [], image_size
    for s in range(num_stages):
        k, st = (stem_kernel, stem_stride) if s == 0 else (3, 2)
        side = (side + 2 * (k // 2) - k) // st + 1
        sizes.append(side)
    return sizes


# --- set 4: cost ------------------------------------------------------------------------------
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])   # [..., Nq, Nk]
    return scores.softmax(dim=-1) @ v                           # [..., Nq, Dv]


def attention_macs(height: int, width: int, dim: int) -> int:
    """Multiply-adds of global self-attention on N = height * width tokens: 4 N C^2 + 2 N^2 C."""
    n = height * width
    return 4 * n * dim * dim + 2 * n * n * dim


def lka_macs(height: int, width: int, dim: int, kernel_size: int = 21, dilation: int = 3) -> int:
    """Eq. (4): F(K, d) = P(K, d) * H * W."""
    return eq3_params(kernel_size, dilation, dim) * height * width


# --- set 5: training --------------------------------------------------------------------------
def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    return WarmupCosine(warmup_steps, total_steps)(step)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer, amp_dtype=None, scaler=None) -> float:
    model.train()
    with autocast(x.device, amp_dtype):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        correct += (logits.argmax(1) == y[start:start + batch_size]).sum().item()
    return correct / len(x)
