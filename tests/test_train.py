"""Tests of van_edu.train: learning, exact resume, refused checkpoints, the schedule, and DDP.

The models here are tiny ones of our own (one with BatchNorm and dropout, one with LayerNorm
only), so these tests do not depend on van_edu.models. The data are synthetic 16x16 noisy textures
(symmetric under horizontal flips, so augmentation keeps the label).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from van_edu.data import ImageData
from van_edu.errors import VanEduError
from van_edu.train import (CHECKPOINT_NAME, HISTORY_NAME, TRAIN_PRESETS, TrainConfig, WarmupCosine,
                           evaluate, fit, make_optimizer, param_groups, pick_device, resolve_amp)

HERE = Path(__file__).resolve().parent
TIMING_KEYS = ("seconds", "images_per_second")


# ----------------------------------------------------------------------------- data and models
def make_data(n: int, seed: int, size: int = 16, chans: int = 1) -> ImageData:
    """n noisy images of 4 texture classes that survive crops and flips, so pooling sees them.

    Horizontal stripes, vertical stripes, an X (both diagonals) and a grid of dots.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=gen) % 4
    images = torch.randint(0, 90, (n, chans, size, size), generator=gen, dtype=torch.uint8)
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inner = lambda i: (i % 4 == 1) | (i % 4 == 2)  # noqa: E731  2 of every 4 rows or columns
    masks = torch.stack([(r % 8 == 3) | (r % 8 == 4),                               # stripes across
                         (c % 8 == 3) | (c % 8 == 4),                               # stripes down
                         ((r - c).abs() <= 1) | ((r + c - (size - 1)).abs() <= 1),  # an X
                         inner(r) & inner(c)])                                      # 2x2 dots
    images[masks[labels].unsqueeze(1).expand_as(images)] = 230
    return ImageData(images=images.contiguous(), labels=labels.long(),
                     classes=["across", "down", "cross", "dots"], name="textures")


class BatchNormNet(nn.Module):
    """Two conv + BatchNorm layers, average pooling, dropout and a linear head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] tensor."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerNormNet(nn.Module):
    """Convs with LayerNorm only (no batch statistics) and a 1-D layer scale, as VAN blocks have."""

    def __init__(self, in_chans: int = 1, num_classes: int = 4, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, stride=2, padding=1), ChannelLayerNorm(width))
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.layer_scale = nn.Parameter(torch.full((width,), 0.5))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.layer_scale[:, None, None] * self.mix(x)
        return self.head(x.mean(dim=(2, 3)))


def quick_config(**changes) -> TrainConfig:
    """Two short epochs on the CPU, silent."""
    base = TrainConfig(epochs=2, batch_size=32, lr=3e-3, warmup_epochs=0.5, augment="cpu",
                       device="cpu", eval_batch_size=64, progress=False)
    return replace(base, **changes)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs run ~10x faster on one intra-op thread than on two busy cores; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return make_data(512, seed=1), make_data(128, seed=2)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def snapshot(folder: Path) -> dict:
    """Bytes and modification times of every file in `folder`."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- learning
def test_two_epochs_learn_and_write_files(data, tmp_path):
    train, test = data
    torch.manual_seed(0)
    result = fit(BatchNormNet(), train, test, quick_config(), out_dir=tmp_path)
    assert result.test_accuracy > 0.8, result.history  # chance is 0.25
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss",
                                      "test_accuracy", "lr", "seconds", "images_per_second"}
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert result.device == "cpu" and not result.model.training
    assert result.train_seconds == pytest.approx(sum(r["seconds"] for r in result.history))
    assert result.images_per_second > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, HISTORY_NAME]  # no .tmp left
    assert json.loads((tmp_path / HISTORY_NAME).read_text()) == result.history
    again = evaluate(result.model, test, batch_size=50)
    assert again["accuracy"] == pytest.approx(result.test_accuracy)
    assert again["loss"] == pytest.approx(result.history[-1]["test_loss"])


def test_evaluate_restores_training_mode(data):
    model = BatchNormNet().train()
    metrics = evaluate(model, data[1], batch_size=64)
    assert model.training and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


# ----------------------------------------------------------------------------- resume
class Interrupted(Exception):
    """Raised from the epoch hook to stand for a killed process."""


def _kill_after_first_epoch(row: dict) -> None:
    if row["epoch"] == 1:
        raise Interrupted


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """The uninterrupted two-epoch run that resumed runs must reproduce."""
    folder = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    return fit(BatchNormNet(), *data, quick_config(), out_dir=folder), folder


@pytest.mark.parametrize("interruption", ["stop_after_epoch", "exception_from_hook"])
def test_resume_reproduces_uninterrupted_run(data, full_run, tmp_path, interruption):
    train, test = data
    config = quick_config()
    full, full_dir = full_run
    torch.manual_seed(0)
    first = BatchNormNet()
    if interruption == "stop_after_epoch":
        partial = fit(first, train, test, config, out_dir=tmp_path / "cut", stop_after_epoch=1)
        assert len(partial.history) == 1
    else:
        with pytest.raises(Interrupted):
            fit(first, train, test, config, out_dir=tmp_path / "cut", on_epoch_end=_kill_after_first_epoch)

    torch.manual_seed(123)  # a fresh process: other initial weights, other generator state
    resumed = fit(BatchNormNet(), train, test, config, out_dir=tmp_path / "cut", resume=True)

    assert without_timing(resumed.history) == without_timing(full.history)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    saved = [torch.load(d / CHECKPOINT_NAME, weights_only=True) for d in (full_dir, tmp_path / "cut")]
    assert saved[0]["scheduler"] == saved[1]["scheduler"]
    for a, b in zip(saved[0]["optimizer"]["state"].values(), saved[1]["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def one_epoch_run(data, tmp_path_factory):
    """A folder holding the checkpoint of one finished epoch (of two) with quick_config()."""
    folder = tmp_path_factory.mktemp("one_epoch")
    torch.manual_seed(0)
    fit(BatchNormNet(), *data, quick_config(), out_dir=folder, stop_after_epoch=1)
    return folder


def _corrupt(folder: Path) -> None:
    path = folder / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_a_checkpoint(folder: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, folder / CHECKPOINT_NAME)


@pytest.mark.parametrize("case, damage, model, changes, message", [
    ("truncated file", _corrupt, BatchNormNet, {}, "cannot read checkpoint"),
    ("foreign file", _not_a_checkpoint, BatchNormNet, {}, "not a van_edu training checkpoint"),
    ("other model", None, LayerNormNet, {}, "another model"),
    ("other width", None, lambda: BatchNormNet(width=8), {}, "another model"),
    ("other batch size", None, BatchNormNet, {"batch_size": 64}, "batch_size=32 there, 64 now"),
    ("other lr", None, BatchNormNet, {"lr": 1e-3}, "lr=0.003 there, 0.001 now"),
])
def test_resume_refuses_bad_checkpoint_and_writes_nothing(data, one_epoch_run, tmp_path,
                                                          case, damage, model, changes, message):
    folder = tmp_path / "run"
    shutil.copytree(one_epoch_run, folder)
    if damage is not None:
        damage(folder)
    before = snapshot(folder)
    with pytest.raises(VanEduError, match=message):
        fit(model(), *data, quick_config(**changes), out_dir=folder, resume=True)
    assert snapshot(folder) == before, case


def test_resume_refuses_other_data_and_missing_checkpoint(data, one_epoch_run, tmp_path):
    with pytest.raises(VanEduError, match="other training data"):
        fit(BatchNormNet(), make_data(256, seed=3), None, quick_config(), out_dir=one_epoch_run, resume=True)
    with pytest.raises(VanEduError, match="no checkpoint"):
        fit(BatchNormNet(), *data, quick_config(), out_dir=tmp_path, resume=True)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- optimiser and schedule
def test_warmup_cosine_values():
    schedule = WarmupCosine(warmup_steps=4, total_steps=12)
    expected = {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 6: 0.5 * (1 + math.cos(math.pi / 4)), 8: 0.5, 12: 0.0}
    for step, factor in expected.items():
        assert schedule(step) == pytest.approx(factor, abs=1e-12), step
    assert WarmupCosine(0, 10)(0) == 1.0 and WarmupCosine(0, 10)(5) == pytest.approx(0.5)


def test_scheduler_steps_per_iteration():
    model = LayerNormNet()
    config = TrainConfig(epochs=3, lr=1e-2, warmup_epochs=1.0)
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch=4)  # 4 warm-up of 12 steps
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert seen[8] == pytest.approx(5e-3)  # halfway through the 8 cosine steps
    assert seen[-1] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(7 * math.pi / 8)))
    assert optimizer.param_groups[0]["lr"] == optimizer.param_groups[1]["lr"]  # both groups follow it


def test_no_weight_decay_on_one_dimensional_parameters():
    model = LayerNormNet()
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"stem.0.weight", "mix.0.weight", "head.weight"}
    assert "layer_scale" in {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    model.no_weight_decay = lambda: {"head.weight"}
    assert len(param_groups(model, 0.05)[0]["params"]) == 2


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_errors(data):
    train, test = data
    with pytest.raises(VanEduError, match="augment='nope'"):
        fit(BatchNormNet(), train, test, quick_config(augment="nope"))
    with pytest.raises(VanEduError, match="larger than the training set"):
        fit(BatchNormNet(), train, test, quick_config(batch_size=1024))
    with pytest.raises(VanEduError, match="num_classes=4"):
        fit(BatchNormNet(num_classes=3), train, test, quick_config())
    with pytest.raises(VanEduError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    assert set(TRAIN_PRESETS) >= {"cpu", "gpu"}
    if not torch.cuda.is_available():
        with pytest.raises(VanEduError, match="no CUDA GPU"):
            pick_device("cuda")
        assert pick_device("auto").type in ("cpu", "mps")


def test_bf16_autocast_and_channels_last_run_on_cpu(data):
    torch.manual_seed(0)
    train, test = data
    config = quick_config(epochs=1, amp="bf16", channels_last=True)
    result = fit(BatchNormNet(), train.subset(128), test.subset(64), config)
    assert math.isfinite(result.history[0]["train_loss"])


# ----------------------------------------------------------------------------- distributed
def test_syncbatchnorm_refuses_cpu_tensors():
    """Why fit keeps plain BatchNorm under gloo: torch's SyncBatchNorm raises for CPU input."""
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        layer = nn.SyncBatchNorm(4).train()
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            layer(torch.randn(2, 4, 3, 3))
    finally:
        dist.destroy_process_group()


def ddp_config() -> TrainConfig:
    return quick_config(batch_size=32, augment="cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_matches_single_process(data, tmp_path):
    """torchrun with 2 CPU processes gives the weights of one process on the same global batch.

    The LayerNorm model matches to rounding; the BatchNorm model only runs (each rank normalises
    with the statistics of its half batch, since SyncBatchNorm does not work on the CPU).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(HERE / "ddp_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    torch.manual_seed(0)
    single = fit(LayerNormNet(), *data, ddp_config())
    ddp = torch.load(tmp_path / "layernorm" / CHECKPOINT_NAME, weights_only=True)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for ours, theirs in zip(without_timing(single.history), without_timing(ddp["history"])):
        assert ours.keys() == theirs.keys()
        assert [theirs[k] for k in ours] == pytest.approx([ours[k] for k in ours], rel=1e-4, abs=1e-5)

    bn = json.loads((tmp_path / "batchnorm" / HISTORY_NAME).read_text())
    assert len(bn) == 2 and bn[-1]["test_accuracy"] > 0.8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batchnorm", "layernorm"]  # rank 0 only
