"""Tests of van_edu.train_state through fit: exact resume, and checkpoints refused before any write.

The tiny models and synthetic data come from tests/tiny_training.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

# the shared tiny models and data; `data` and `one_thread` are pytest fixtures
from tiny_training import BatchNormNet, LayerNormNet, data, make_data, one_thread, quick_config, without_timing  # noqa: F401

from van_edu.errors import VanEduError
from van_edu.train import fit
from van_edu.train_state import CHECKPOINT_NAME


def snapshot(folder: Path) -> dict:
    """Bytes and modification times of every file in `folder`."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


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
