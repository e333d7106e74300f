"""Tests of van_edu.runtime: the device choice, autocast dtypes, the best-of timer and the machine."""
from __future__ import annotations

import contextlib
import io
import platform
from types import SimpleNamespace

import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.runtime import (
    AMP_MODES,
    autocast,
    best_time,
    cpu_has_native_bf16,
    cpu_name,
    machine,
    machine_description,
    pick_device,
    resolve_amp,
)


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
    assert set(AMP_MODES) == {"auto", "native", "bf16", "fp16", "off"}


EPYC_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\nbugs\t\t: sysret_ss_attrs\n"
XEON_AMX_FLAGS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
OLD_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\nbugs\t\t: avx512_bf16_is_not_a_flag_here\n"


def test_native_bf16_is_read_from_the_cpu_flags_only():
    assert cpu_has_native_bf16(EPYC_FLAGS) and cpu_has_native_bf16(XEON_AMX_FLAGS)
    assert not cpu_has_native_bf16(OLD_FLAGS)          # a mention outside the flags line does not count
    assert not cpu_has_native_bf16("")                  # nothing to read (another system): float32


@pytest.mark.parametrize("native", [True, False])
def test_native_amp_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    import van_edu.runtime as runtime
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    assert resolve_amp("native", torch.device("cpu")) is (torch.bfloat16 if native else None)
    assert resolve_amp("auto", torch.device("cpu")) is None          # "auto" stays float32 on a CPU


def test_autocast_is_a_no_op_in_float32_and_bf16_on_the_cpu():
    cpu = torch.device("cpu")
    assert isinstance(autocast(cpu, None), contextlib.nullcontext)
    a = torch.randn(4, 4)
    with autocast(cpu, torch.bfloat16):
        assert (a @ a).dtype is torch.bfloat16
    assert (a @ a).dtype is torch.float32


def test_best_time_returns_the_fastest_timed_call_and_ignores_the_warmup(monkeypatch):
    """A clock the test controls: each call of fn moves it on by a chosen duration. The warm-up
    calls are the quickest of all, so counting them, or returning the mean, median or last
    duration, would give another answer than the fastest timed call, 0.3 s."""
    import van_edu.runtime as runtime

    now = [100.0]
    durations = iter([0.0001, 0.0002, 0.5, 0.3, 0.4, 0.35])       # two warm-ups, four timed calls

    def fn():
        now[0] += next(durations)

    monkeypatch.setattr(runtime, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    assert best_time(fn, repeats=4, warmup=2) == pytest.approx(0.3)
    assert next(durations, None) is None, "warmup + repeats calls in all"
    with pytest.raises(VanEduError, match="repeats must be at least 1"):
        best_time(lambda: None, repeats=0)


CPUINFO = """processor\t: 0
vendor_id\t: GenuineTest
model name\t: Test CPU 9000 @ 1.00GHz
flags\t\t: fpu

processor\t: 1
model name\t: Test CPU 9000 @ 1.00GHz
"""


@pytest.fixture
def threads_changed():
    """torch's thread count set to one it was not, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    yield before + 1
    torch.set_num_threads(before)


def test_machine_reads_the_cpu_model_from_cpuinfo_and_counts_threads(monkeypatch, threads_changed):
    import van_edu.runtime as runtime

    monkeypatch.setattr(runtime, "open", lambda path, *a, **k: io.StringIO(CPUINFO) if path == "/proc/cpuinfo"
                        else open(path, *a, **k), raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 7)
    info = machine()
    assert info["cpu"] == "Test CPU 9000 @ 1.00GHz"
    assert info["logical_cpus"] == 7 and info["torch_threads"] == threads_changed
    assert info["python"] == platform.python_version()
    assert machine_description("cpu") == f"Test CPU 9000 @ 1.00GHz, {threads_changed} threads"


@pytest.mark.parametrize("cpuinfo", [None, "processor\t: 0\nCPU implementer\t: 0x41\n"],
                         ids=["no cpuinfo", "cpuinfo without a model name"])
def test_cpu_name_falls_back_to_platform(monkeypatch, cpuinfo):
    import van_edu.runtime as runtime

    def fake_open(path, *a, **k):
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(runtime, "open", fake_open, raising=False)
    monkeypatch.setattr(runtime.platform, "processor", lambda: "testproc")
    monkeypatch.setattr(runtime.platform, "machine", lambda: "testarch")
    assert cpu_name() == "testproc"
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    assert cpu_name() == "testarch"

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
