"""The training loop of the course: one function, `fit`, whose steps are all in this file.

`fit` itself is a short list of steps (below); each step is a small function further down this file
(``_train_epoch``, ``_train_step``, ``_eval_epoch``, ...), and four modules hold what is not about
training (listed at the end), so a learner reads this file top to bottom and the rest by name.
What `fit` does, in order, for any classifier ``nn.Module`` mapping ``[B, C, H, W]`` float images to
``[B, num_classes]`` logits:

1. checks the config and ``out_dir``, picks the device (CUDA, then Apple's MPS, then the CPU) and, under
   ``torchrun``, joins the process group (NCCL on CUDA, gloo on the CPU);
2. moves the model to the device (channels-last if asked) and builds AdamW (no weight decay on
   biases, norm weights, layer scales: every 1-D parameter) with a learning rate that warms up
   linearly and then follows half a cosine down to ~0, stepped per iteration;
3. when resuming, reads ``out_dir/checkpoint.pt``, refuses one made with another config, on other
   data or for another model before anything is written, and puts the model, optimiser, scheduler
   and scaler states back;
4. wraps the model in ``DistributedDataParallel`` when distributed, and in ``torch.compile`` if
   asked;
5. for every epoch: trains with label smoothing, gradient clipping and, on a GPU, mixed precision
   (bf16 where the card supports it, else fp16 with a gradient scaler); evaluates on the test set;
   appends a row to the history; writes ``checkpoint.pt`` and ``history.json`` atomically, so an
   interrupted run never leaves half a file behind; prints one line and calls ``on_epoch_end``;
6. returns a `FitResult`: the history and the trained model, in eval mode.

On the CPU, a run resumed from its checkpoint reproduces the uninterrupted run bit for bit.

Reproducibility. The data order and augmentation are a pure function of ``(seed, epoch)`` (see
``van_edu.data.batches``). Dropout and drop-path draw from torch's global generator, which ``fit``
re-seeds at the start of every epoch from ``(seed, epoch, rank)``. The randomness of an epoch thus
never depends on what happened before it, so a resumed run needs no saved generator state, ranks
draw different masks, and changing the number of processes between runs is harmless. Weight
initialisation happens before ``fit``: call ``torch.manual_seed`` before building the model.

Distributed data parallel. ``batch_size`` stays the GLOBAL batch: each rank trains on its share of
the very batch a single process would see, so the update equals the single-process one (up to
rounding) for models without BatchNorm; evaluation is sharded over ranks, and only rank 0 writes
files and shows the progress bar.

Where the rest lives: ``van_edu.recipes`` (``TrainConfig``, the named presets, ``check_config``),
``van_edu.evaluation`` (accuracy and loss on a split, ``evaluate``),
``van_edu.runtime`` (device choice, autocast dtypes, synchronisation),
``van_edu.distributed`` (the process group, DDP and BatchNorm over ranks, reductions) and
``van_edu.train_state`` (what a checkpoint holds, atomic writes, the checks of an exact resume).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm  # the text bar: tqdm.auto would store widget state in committed notebooks

from . import train_state
from .data import AUGMENT_PRESETS, IGNORE_INDEX, ImageData, batches
from .distributed import DistContext, all_reduce, broadcast_buffers, reduce_sums, setup_distributed, teardown, wrap_ddp
from .errors import VanEduError
from .evaluation import eval_detection, eval_sums, evaluate, metrics, sum_dtype
from .fileio import check_output_dir
from .recipes import TRAIN_PRESETS, TrainConfig, check_config
from .runtime import autocast, resolve_amp, synchronize
from .train_state import CHECKPOINT_NAME

__all__ = ["TrainConfig", "TRAIN_PRESETS", "check_config", "param_groups", "WarmupCosine", "make_optimizer", "evaluate",
           "FitResult", "fit"]  # evaluate lives in van_edu.evaluation, the config in van_edu.recipes; both import from here


# ----------------------------------------------------------------------------- optimiser and schedule
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay for weight matrices and conv kernels, none for 1-D parameters.

    Decaying biases, norm scales or layer scales towards 0 only fights the normalisation; the
    1-D rule catches all of them.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class WarmupCosine:
    """The factor on the peak learning rate for optimiser step `step` (counted from 0).

    Linear warm-up ``(step + 1) / warmup_steps`` reaches 1 at the last warm-up step; then half a
    cosine falls from 1 (at ``warmup_steps``) towards 0 (at ``total_steps``, one past the last step).
    A dataclass rather than a lambda so that ``LambdaLR.state_dict`` saves it with the checkpoint.
    """

    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int):
    """AdamW over `param_groups` and its per-iteration warm-up + cosine scheduler."""
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    schedule = WarmupCosine(warmup_steps=round(config.warmup_epochs * steps_per_epoch),
                            total_steps=config.epochs * steps_per_epoch)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


# ----------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    """What `fit` returns; `history` has one dict per epoch (the same rows as history.json).

    A row: epoch (from 1), train_loss (with label smoothing, as optimised) and train_accuracy
    (under augmentation and dropout), test_loss (plain cross-entropy) and test_accuracy (None
    without test data, and on the epochs that ``config.eval_every`` skips; the last is always
    scored; over pixels for masks, with test_miou and test_iou per class too), lr (of the epoch's
    last update), seconds (training only, the slowest rank) and images_per_second (all ranks together).
    """

    history: list[dict]
    test_accuracy: float | None   # after the last epoch, a fraction; None without test data
    train_seconds: float          # training time of all epochs, evaluation excluded
    images_per_second: float      # training throughput over all epochs
    device: str
    model: nn.Module              # the trained model (unwrapped), in eval mode
    checkpoint: Path | None = None
    test_miou: float | None = None  # segmentation: mean IoU after the last epoch (van_edu.metrics)
    precision: str = "float32"      # what the training steps computed in: config.amp on this device


def fit(model: nn.Module, train: ImageData, test: ImageData | None = None,
        config: TrainConfig | None = None, out_dir: str | Path | None = None, resume: bool = False,
        *, stop_after_epoch: int | None = None,
        on_epoch_end: Callable[[dict], None] | None = None) -> FitResult:
    """Train `model` on `train`, evaluating on `test` after each epoch; see the module docstring.

    out_dir: where checkpoint.pt and history.json are written after every epoch (existing ones are
    replaced unless resuming). resume: continue from out_dir/checkpoint.pt; a missing, damaged or
    mismatched checkpoint (other model, data or config) raises VanEduError before anything is
    written. stop_after_epoch: stop once this many epochs are done in total, as if interrupted
    (the schedule still spans config.epochs; resume later to finish). on_epoch_end: called on rank 0
    with each epoch's history row, after the checkpoint is written (e.g. to plot live curves).
    """
    config = config if config is not None else TrainConfig()
    check_config(config, len(train))
    if out_dir is not None:
        check_output_dir(out_dir, "out_dir")
    ctx, device = setup_distributed(config.device)
    run = None
    try:
        run = _build_run(model, train, test, config, ctx, device)
        out = Path(out_dir) if out_dir is not None else None
        history: list[dict] = []
        if resume:  # every check comes before the first change
            if out is None:
                raise VanEduError("resume=True needs out_dir (expected the folder of an earlier run)")
            ckpt = train_state.read(out / CHECKPOINT_NAME)
            train_state.check_compatible(ckpt, run, out / CHECKPOINT_NAME)
            train_state.restore(run, ckpt)
            history = list(ckpt["history"])
        elif out is not None and ctx.main:
            out.mkdir(parents=True, exist_ok=True)
        run.net = _wrap_model(run.raw, config, ctx, device)
        last = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
        for epoch in range(len(history), last):
            scored = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
            row = {"epoch": epoch + 1, **_train_epoch(run, epoch), **_eval_epoch(run, scored)}
            history.append(row)
            if out is not None and ctx.main:
                train_state.save(run, out, epoch + 1, history)
            if config.progress and ctx.main:
                tqdm.write(_summary(row, config.epochs))
            if on_epoch_end is not None and ctx.main:
                on_epoch_end(dict(row))
        return _result(run, history, out)
    finally:
        if run is not None:
            run.net = run.raw  # drop the DDP wrapper before the group goes (see distributed.teardown)
        teardown(ctx)


# ----------------------------------------------------------------------------- one run
@dataclass
class _Run:
    """The objects one training run threads through its epochs."""

    config: TrainConfig
    ctx: DistContext
    device: torch.device
    raw: nn.Module           # the user's model: what is saved and returned
    net: nn.Module           # what the loop calls: raw, maybe DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train: ImageData
    test: ImageData | None
    steps_per_epoch: int
    checked_logits: bool = field(default=False)


def _build_run(model, train, test, config, ctx, device) -> _Run:
    """Everything a run needs, on the device, before any checkpoint is applied."""
    if config.batch_size % ctx.world_size:
        raise VanEduError(f"batch_size={config.batch_size} is the global batch and must split evenly "
                          f"over {ctx.world_size} processes (expected a multiple of {ctx.world_size})")
    amp_dtype = resolve_amp(config.amp, device)
    raw = model.to(device)
    if config.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    steps = len(train) // config.batch_size
    optimizer, scheduler = make_optimizer(raw, config, steps)
    use_scaler = amp_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda" if use_scaler else "cpu", enabled=use_scaler)
    return _Run(config, ctx, device, raw, raw, optimizer, scheduler, scaler, amp_dtype,
                train.to(device), test.to(device) if test is not None else None, steps)


def _wrap_model(raw: nn.Module, config: TrainConfig, ctx: DistContext, device: torch.device) -> nn.Module:
    """SyncBatchNorm + DDP when distributed (van_edu.distributed), then torch.compile if asked."""
    net = wrap_ddp(raw, ctx, device)
    if config.compile:
        net = torch.compile(net)
    return net


# ----------------------------------------------------------------------------- one epoch, one step
def _train_epoch(run: _Run, epoch: int) -> dict:
    """Train one epoch; the loss, accuracy, lr, seconds and images/s of the training part."""
    config, ctx = run.config, run.ctx
    run.net.train()
    torch.manual_seed(_epoch_seed(config.seed, epoch, ctx.rank))
    stream = batches(run.train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                     augment=AUGMENT_PRESETS[config.augment], drop_last=True,
                     rank=ctx.rank, world_size=ctx.world_size)
    bar = tqdm(stream, total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not (config.progress and ctx.main), leave=False, mininterval=0.5)
    loss_sum = torch.zeros((), dtype=sum_dtype(run.device), device=run.device)
    correct, count = torch.zeros((), dtype=sum_dtype(run.device), device=run.device), 0
    synchronize(run.device)
    start, lr = time.perf_counter(), config.lr
    for step, (x, y) in enumerate(bar):
        loss, step_correct, lr = _train_step(run, x, y)
        loss_sum += loss * len(y)  # on the device: no sync per step
        correct += step_correct
        count += len(y)
        if not bar.disable and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
    synchronize(run.device)
    seconds = torch.tensor([time.perf_counter() - start], dtype=loss_sum.dtype).to(run.device)
    seconds = all_reduce(seconds, ctx, op="max").item()  # the slowest rank sets the pace
    loss_sum, correct, count = reduce_sums(loss_sum, correct, count, ctx)
    accuracy = None if run.train.task == "detection" else correct / count      # a detector has no accuracy
    return {"train_loss": loss_sum / count, "train_accuracy": accuracy, "lr": lr,
            "seconds": seconds, "images_per_second": count / seconds}


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of torch's global generator for one epoch on one rank (dropout, drop-path).

    A mixed-radix code: while rank < 7,919 and epoch < 126 (126 * 7,919 + 7,918 < 1,000,003), two
    different (seed, epoch, rank) never share a seed. The radices only need to be that large; that
    they are primes does not matter. Other values would work as well, but would change every
    seeded run's dropout and drop-path masks, and so the course's recorded results.
    """
    return (seed * 1_000_003 + epoch * 7_919 + rank) % (2**63)


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimiser update; returns (mean loss, number correct, learning rate used). For masks,
    "number correct" sums each image's fraction of right pixels, so accuracy = correct / images."""
    if run.config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.amp_dtype):
        logits = run.net(x)
    own_loss = getattr(run.raw, "loss", None)                # a detector computes its own loss from the boxes
    if not run.checked_logits and own_loss is None:
        _check_logits(logits, y, run.train.num_classes)
        run.checked_logits = True
    if own_loss is not None:
        loss = own_loss(logits, y)
    else:
        loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=run.config.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.config.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the fp16-scaled ones
        nn.utils.clip_grad_norm_(run.raw.parameters(), run.config.grad_clip)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if own_loss is not None:                                  # boxes: no accuracy to count
        return loss.detach(), torch.zeros((), device=loss.device), lr
    hits = logits.detach().argmax(1) == y                     # [B] or [B, H, W]
    if hits.dim() == 1:
        return loss.detach(), hits.sum(), lr
    labelled = (y != IGNORE_INDEX).flatten(1).sum(1).clamp(min=1)    # a mask's IGNORE_INDEX pixels count nowhere
    return loss.detach(), (hits.flatten(1).sum(1) / labelled).sum(), lr


def _check_logits(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Fail with a clear message when the model's output does not fit the data: [batch, classes] for
    a label per image, [batch, classes, H, W] for a mask."""
    want = (y.shape[0], num_classes, *y.shape[1:])
    if tuple(logits.shape) != want:
        shape = "[batch, " + ", ".join([str(num_classes), *map(str, y.shape[1:])]) + "]"
        what = "a segmenter (a class score per pixel)" if y.dim() == 3 else "a classifier"
        raise VanEduError(f"the model returned logits of shape {tuple(logits.shape)}, but the data has "
                          f"{num_classes} classes (expected {shape} from {what}: build the model "
                          f"with num_classes={num_classes})")


def _eval_epoch(run: _Run, scored: bool = True) -> dict:
    """Test loss and accuracy after an epoch, sharded over ranks (rank 0's BatchNorm averages); the
    same keys, all None, when there is no test data or the epoch is not ``scored`` (eval_every)."""
    if run.test is None or not scored:
        keys = {"detection": ("test_map50", "test_map", "test_ap50"),
                "segmentation": ("test_miou", "test_iou")}.get(run.test.task if run.test is not None else "", ())
        return dict.fromkeys(("test_loss", "test_accuracy", *keys))
    run.raw.eval()
    broadcast_buffers(run.raw, run.ctx)  # per-rank BatchNorm averages differ: use rank 0's, as saved
    # On a CPU the scores are computed in float32 whatever the training's autocast: evaluation is a
    # small share of the time, and the scores then do not depend on which CPU's bf16 units ran it
    # (the bundled weights reproduce their recorded scores anywhere).
    amp_dtype = run.amp_dtype if run.device.type == "cuda" else None
    if run.test.task == "detection":
        result = eval_detection(run.raw, run.test, run.config.eval_batch_size, run.device, amp_dtype,
                                run.config.channels_last)
        return {"test_loss": result["loss"], "test_accuracy": None, "test_map50": result["map50"],
                "test_map": result["map"], "test_ap50": result["ap50"]}
    sums = eval_sums(run.raw, run.test, run.config.eval_batch_size, run.device, amp_dtype,
                     run.config.channels_last, run.ctx)
    result = metrics(*sums)
    row = {"test_loss": result["loss"], "test_accuracy": result["accuracy"]}
    if "miou" in result:                                      # segmentation: the field's standard too
        row.update(test_miou=result["miou"], test_iou=result["iou"])
    return row


# ----------------------------------------------------------------------------- reporting
def _summary(row: dict, epochs: int) -> str:
    """One line per epoch for the learner watching the run."""
    line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}"
    if row["train_accuracy"] is not None:
        line += f" acc {row['train_accuracy']:.2%}"
    if row["test_accuracy"] is not None:
        line += f" | test loss {row['test_loss']:.4f} acc {row['test_accuracy']:.2%}"
    if row.get("test_map50") is not None:
        line += f" | test loss {row['test_loss']:.4f} mAP50 {row['test_map50']:.3f} mAP {row['test_map']:.3f}"
    if row.get("test_miou") is not None:
        line += f" mIoU {row['test_miou']:.3f}"
    return line + f" | {row['images_per_second']:.0f} img/s, lr {row['lr']:.2e}"


def _result(run: _Run, history: list[dict], out: Path | None) -> FitResult:
    """Summarise the history into a FitResult; the model goes back in eval mode."""
    seconds = sum(row["seconds"] for row in history)
    images = sum(row["seconds"] * row["images_per_second"] for row in history)
    run.raw.eval()
    return FitResult(history=history,
                     test_accuracy=history[-1]["test_accuracy"] if history else None,
                     train_seconds=seconds, images_per_second=images / seconds if seconds else 0.0,
                     device=str(run.device), model=run.raw,
                     checkpoint=out / CHECKPOINT_NAME if out is not None else None,
                     test_miou=history[-1].get("test_miou") if history else None,
                     precision=str(run.amp_dtype or torch.float32).removeprefix("torch."))
