"""Training on several processes: joining torchrun's process group, wrapping the model, reducing sums.

Under ``torchrun`` (environment ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``) ``van_edu.train.fit``
joins the process group (NCCL on CUDA, gloo on the CPU) and wraps the model in
``DistributedDataParallel``. ``batch_size`` stays the GLOBAL batch: each rank trains on its
``batch_size / world_size`` shard of the very batch a single process would see, DDP averages the
gradients, and so the update equals the single-process one (up to rounding) for models without
BatchNorm. BatchNorm normalises with the statistics of the batch it sees: on CUDA the model's
BatchNorm becomes ``SyncBatchNorm``, which pools them over ranks. On the CPU that is impossible:
torch (checked on 2.13) raises "SyncBatchNorm expected input tensor to be on GPU" for CPU tensors,
so CPU/gloo runs keep per-rank statistics (a smaller effective BatchNorm batch) and rank 0's
running averages; the result is close to, not equal to, the single-process one. Evaluation is
sharded over ranks and the sums are all-reduced; only rank 0 writes files and shows the progress
bar. ``fit`` destroys the process group at the end if it created it.

Alone (no torchrun), every function here is the identity or a no-op, so the loop reads the same.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import VanEduError
from .runtime import pick_device

__all__ = ["DistContext", "setup_distributed", "teardown", "wrap_ddp", "broadcast_buffers",
           "all_reduce", "reduce_sums"]


@dataclass
class DistContext:
    """Where this process stands in a DDP run (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    created: bool = False  # setup_distributed created the process group, so teardown destroys it

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(preference: str) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes in the environment; pick this rank's device."""
    device = pick_device(preference)
    joined = dist.is_available() and dist.is_initialized()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not joined:
        return DistContext(), device
    if device.type == "mps":
        raise VanEduError("DDP on MPS is not supported (expected device='cpu' or a CUDA GPU under torchrun)")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not joined:
        _init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), created=not joined), device


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if `setup_distributed` created it (one joined earlier is kept).

    A DDP wrapper's reducer holds the group; freed later by the garbage collector (the wrapper
    sits in reference cycles), its gloo group's destructor joined worker threads that never ended
    once the other rank had exited, and the rank hung (seen on torch 2.13, now and then). So the
    caller drops its wrapper first and the unreachable ones are collected here, on every rank at
    the same point, while the group is still alive.
    """
    if ctx.world_size > 1:
        gc.collect()
    if ctx.created:
        dist.destroy_process_group()


_groups_created = 0  # the same on every rank: all ranks call fit equally often


def _init_process_group(backend: str) -> None:
    """init_process_group from torchrun's environment, under a store prefix of its own.

    torch names every default group "0" again after a destroy, and torchrun's store keeps the old
    group's keys; a second `fit` in the same torchrun job could then read the first group's stale
    addresses and hang (seen with gloo on torch 2.13). A fresh prefix per group avoids that.
    """
    global _groups_created
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"van_edu.fit/{_groups_created}", store)
    _groups_created += 1
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """SyncBatchNorm (on CUDA) and DistributedDataParallel around `model`; `model` itself when alone."""
    if ctx.world_size <= 1:
        return model
    if device.type == "cuda":  # CPU tensors make SyncBatchNorm raise (torch 2.13): see module doc
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (per-rank BatchNorm averages differ; rank 0's are saved)."""
    if ctx.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce(values: torch.Tensor, ctx: DistContext, op: str = "sum") -> torch.Tensor:
    """Sum (op="sum") or maximum (op="max") of `values` over ranks, in place; the identity when alone."""
    if ctx.world_size > 1:
        dist.all_reduce(values, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return values


def reduce_sums(loss_sum: torch.Tensor, correct: torch.Tensor, count: int, ctx: DistContext) -> list[float]:
    """[loss sum, correct, count] summed over ranks, as Python floats (one device sync)."""
    totals = torch.stack([loss_sum, correct.to(loss_sum.dtype),
                          torch.tensor(float(count), dtype=loss_sum.dtype).to(loss_sum.device)])
    return all_reduce(totals, ctx).tolist()
