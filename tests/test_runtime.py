"""Tests of van_edu.runtime: the device choice, autocast dtypes, the best-of timer and the machine."""
from __future__ import annotations

import contextlib
import platform

import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.runtime import AMP_MODES, autocast, best_time, machine, pick_device, resolve_amp


def test_amp_and_device_errors():
    with pytest.raises(VanEduError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(VanEduError, match="no CUDA GPU"):
            pick_device("cuda")
        assert pick_device("auto").type in ("cpu", "mps")


def test_pick_device_by_name():
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(VanEduError, match=r"device='gpu0' is not a device name \(expected 'auto', 'cuda'"):
        pick_device("gpu0")


def test_resolve_amp_modes_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None
    with pytest.raises(VanEduError, match="amp='fp16' needs a CUDA GPU .* device is cpu"):
        resolve_amp("fp16", cpu)
    with pytest.raises(VanEduError, match=r"amp='half' \(expected one of"):
        resolve_amp("half", cpu)
    assert set(AMP_MODES) == {"auto", "bf16", "fp16", "off"}


def test_autocast_is_a_no_op_in_float32_and_bf16_on_the_cpu():
    cpu = torch.device("cpu")
    assert isinstance(autocast(cpu, None), contextlib.nullcontext)
    a = torch.randn(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype is torch.bfloat16
    assert (a @ a).dtype is torch.float32


def test_best_time_calls_warmup_plus_repeats_times_and_returns_the_fastest():
    calls = []
    seconds = best_time(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6
    assert isinstance(seconds, float) and seconds > 0
    with pytest.raises(VanEduError, match="repeats must be at least 1"):
        best_time(lambda: None, repeats=0)


def test_machine_names_cpu_torch_and_python():
    info = machine()
    assert {"cpu", "torch", "python"} <= info.keys()
    assert info["torch"] == torch.__version__ and info["python"] == platform.python_version()
    assert isinstance(info["cpu"], str) and info["cpu"]


def test_cpu_threads_sets_and_restores_the_count_even_on_error():
    from van_edu.runtime import cpu_threads
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before
