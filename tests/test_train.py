"""Tests of van_edu.train: learning, the schedule, configuration errors, and DDP.

Exact resume and refused checkpoints are tested in tests/test_train_state.py, the device and
precision choices in tests/test_runtime.py. The tiny models and synthetic data come from
tests/tiny_training.py.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

# the shared tiny models and data; `data` and `one_thread` are pytest fixtures
from tiny_training import (  # noqa: F401
    BatchNormNet,
    LayerNormNet,
    data,
    ddp_config,
    make_data,
    one_thread,
    quick_config,
    without_timing,
)
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from van_edu.errors import VanEduError
from van_edu.train import TRAIN_PRESETS, TrainConfig, WarmupCosine, evaluate, fit, make_optimizer, param_groups
from van_edu.train_state import CHECKPOINT_NAME, HISTORY_NAME

HERE = Path(__file__).resolve().parent


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


def test_eval_every_scores_every_kth_epoch_and_always_the_last(data):
    train, test = data
    torch.manual_seed(0)
    every = fit(BatchNormNet(), train, test, quick_config(epochs=5, eval_every=2))
    scored = [row["epoch"] for row in every.history if row["test_accuracy"] is not None]
    assert scored == [2, 4, 5]
    skipped = every.history[0]
    assert skipped["test_loss"] is None and set(skipped) == set(every.history[1])  # the same keys
    torch.manual_seed(0)
    each = fit(BatchNormNet(), train, test, quick_config(epochs=5))     # skipping a test changes no weight
    assert [r["train_loss"] for r in each.history] == [r["train_loss"] for r in every.history]
    assert every.test_accuracy == each.test_accuracy == each.history[-1]["test_accuracy"]


def test_evaluate_restores_training_mode(data):
    model = BatchNormNet().train()
    metrics = evaluate(model, data[1], batch_size=64)
    assert model.training and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_predict_gives_each_images_class_and_its_mean_correctness_is_the_accuracy(data):
    from van_edu.evaluation import predict
    from van_edu.images import batches

    test = data[1]
    torch.manual_seed(0)
    model = BatchNormNet().train()
    pred = predict(model, test, batch_size=7)                       # batches that do not divide N
    assert model.training and pred.dtype == torch.int64 and pred.shape == test.labels.shape
    with torch.no_grad():
        x = torch.cat([x for x, _ in batches(test, len(test), shuffle=False)])
        assert torch.equal(pred, model.eval()(x).argmax(1))
    correct = (pred == test.labels).double().mean().item()
    assert correct == pytest.approx(evaluate(model, test)["accuracy"])


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
    model.no_weight_decay = lambda: {"head.weight"}  # no such hook (no model had one): the 1-D rule alone
    assert len(param_groups(model, 0.05)[0]["params"]) == 3


# ----------------------------------------------------------------------------- configuration errors
def test_configuration_errors(data):
    train, test = data
    with pytest.raises(VanEduError, match="augment='nope'"):
        fit(BatchNormNet(), train, test, quick_config(augment="nope"))
    with pytest.raises(VanEduError, match="larger than the training set"):
        fit(BatchNormNet(), train, test, quick_config(batch_size=1024))
    with pytest.raises(VanEduError, match="num_classes=4"):
        fit(BatchNormNet(num_classes=3), train, test, quick_config())
    with pytest.raises(VanEduError, match=r"logits of shape \(32, 1000\).*expected \[batch, 4\]"):
        fit(BatchNormNet(num_classes=1000), train, test, quick_config())   # too many classes, too
    with pytest.raises(VanEduError, match=r"lr=inf \(expected a finite number > 0\)"):
        fit(BatchNormNet(), train, test, quick_config(lr=float("inf")))
    with pytest.raises(VanEduError, match=r"seed=-1 \(expected a whole number >= 0"):
        fit(BatchNormNet(), train, test, quick_config(seed=-1))
    with pytest.raises(VanEduError, match=r"epochs=0 \(expected an int >= 1\)$"):  # not warmup too
        fit(BatchNormNet(), train, test, quick_config(epochs=0))
    for bad in (0, True, 1.5):
        with pytest.raises(VanEduError, match=r"eval_every=.* \(expected an int >= 1"):
            fit(BatchNormNet(), train, test, quick_config(eval_every=bad))
    assert set(TRAIN_PRESETS) >= {"cpu", "gpu"}


def test_an_out_dir_that_is_a_file_is_refused_before_training(data, tmp_path):
    train, test = data
    blocker = tmp_path / "results"
    blocker.write_text("keep")
    with pytest.raises(VanEduError, match="out_dir .* is a file"):      # a FileExistsError before
        fit(BatchNormNet(), train, test, quick_config(), out_dir=blocker)
    assert blocker.read_text() == "keep"


class DtypeRecordingNet(BatchNormNet):
    """BatchNormNet on 3-channel images noting, at every call, the dtype of its first conv's output
    (bfloat16 only under a bf16 autocast: the input and weights are float32) and whether that
    conv's input, weight and output are channels-last."""

    def __init__(self):
        super().__init__(in_chans=3)
        self.seen = []
        self.features[0].register_forward_hook(lambda module, args, out: self.seen.append(
            (self.training, out.dtype, all(t.is_contiguous(memory_format=torch.channels_last)
                                           for t in (args[0], module.weight, out)))))


def test_bf16_autocast_and_channels_last_are_what_the_steps_run_on_cpu():
    """amp="bf16": every training forward runs its convs in bfloat16 (evaluation on a CPU in float32), and the losses
    move away from float32's by bfloat16 rounding (8 bits of mantissa) but stay within 0.05 of them
    after 4 steps; amp="off" runs float32. Both train on channels-last tensors."""
    train, test = make_data(128, seed=1, chans=3), make_data(64, seed=2, chans=3)
    runs = {}
    for amp in ("bf16", "off"):
        torch.manual_seed(0)
        model = DtypeRecordingNet()
        result = fit(model, train, test, quick_config(epochs=1, amp=amp, channels_last=True))
        runs[amp] = (model.seen, result.history[0])
    bf16_seen, bf16 = runs["bf16"]
    fp32_seen, fp32 = runs["off"]
    assert {training for training, _, _ in bf16_seen} == {True, False}   # training and evaluation
    assert {dtype for training, dtype, _ in bf16_seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype, _ in bf16_seen if not training} == {torch.float32}  # a CPU scores in float32
    assert {dtype for _, dtype, _ in fp32_seen} == {torch.float32}
    assert all(channels_last for training, _, channels_last in bf16_seen + fp32_seen if training)
    for key in ("train_loss", "test_loss"):
        assert 0 < abs(bf16[key] - fp32[key]) < 0.05, (key, bf16[key], fp32[key])


# ----------------------------------------------------------------------------- clipping and compile
def _first_step_gradients(model, data, config) -> list[torch.Tensor]:
    """The gradients the optimiser is about to apply at fit's first step (a step pre-hook on every
    optimizer, torch's public API)."""
    seen = []

    def before_step(optimizer, args, kwargs):
        if not seen:
            seen.append([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        fit(model, *data, config)
    finally:
        handle.remove()
    return seen[0]


class LoudNet(LayerNormNet):
    """LayerNormNet with logits 100x larger: its first gradients are far above a norm of 0.5."""

    def forward(self, x):
        return 100 * super().forward(x)


def test_grad_clip_bounds_the_global_gradient_norm_the_optimizer_applies(data):
    """Same weights, same first batch: with grad_clip=0.5 the applied gradients are the unclipped
    ones scaled by 0.5 / their global norm (direction kept); a bound above the norm changes nothing."""
    data = data[0].subset(64), None
    config = quick_config(epochs=1, batch_size=32)
    grads = {}
    for clip in (None, 0.5, 1e9):
        torch.manual_seed(0)
        grads[clip] = _first_step_gradients(LoudNet(), data, replace(config, grad_clip=clip))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads[None]]))
    assert norm > 5, "the test needs gradients well above the bound"
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads[0.5]]))
    assert clipped == pytest.approx(0.5, rel=1e-4)
    for free, bounded, loose in zip(grads[None], grads[0.5], grads[1e9]):
        torch.testing.assert_close(bounded, free * (0.5 / norm), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(loose, free)


def _compile_with(monkeypatch, backend):
    """Count fit's calls of torch.compile, with the backend the test picks."""
    calls = []
    real = torch.compile

    def counting_compile(model, **kw):
        calls.append(model)
        return real(model, backend=backend, **kw) if backend else real(model, **kw)

    monkeypatch.setattr(torch, "compile", counting_compile)
    return calls


def _fit_compiled_and_not(monkeypatch, data, backend):
    train, test = data[0].subset(64), data[1].subset(64)
    config = quick_config(epochs=1, batch_size=32, augment="none")
    torch.manual_seed(0)
    plain = fit(LayerNormNet(), train, test, config)
    calls = _compile_with(monkeypatch, backend)
    torch.manual_seed(0)
    model = LayerNormNet()
    compiled = fit(model, train, test, replace(config, compile=True))
    assert len(calls) == 1 and calls[0] is model          # the user's model, compiled once
    assert compiled.model is model and not isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict())   # no "_orig_mod." keys
    return plain, compiled


def test_compile_trains_through_dynamo_and_returns_the_users_model(monkeypatch, data):
    """compile=True through torch.compile's graph capture (dynamo) with the "eager" backend, which
    runs the captured graph with PyTorch's own kernels: the same losses and weights as without
    compile, and the returned model is the user's, not the compiled wrapper. (Inductor's C++ code
    generation takes ~25 s on a small CPU: tested below, marked slow.)"""
    plain, compiled = _fit_compiled_and_not(monkeypatch, data, backend="eager")
    for ours, theirs in zip(without_timing(compiled.history), without_timing(plain.history), strict=True):
        assert ours == pytest.approx(theirs)
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, msg=key)


@pytest.mark.slow
def test_compile_with_inductor_trains_like_eager(monkeypatch, data):
    """The default backend (inductor, generated C++ on the CPU): losses and weights within float32
    reordering of the uncompiled run's."""
    plain, compiled = _fit_compiled_and_not(monkeypatch, data, backend=None)
    for key in ("train_loss", "test_loss"):
        assert compiled.history[0][key] == pytest.approx(plain.history[0][key], rel=1e-4)
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, rtol=1e-3, atol=1e-5, msg=key)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
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
