"""Device and dtype policy."""

from __future__ import annotations

import pytest
import torch

from r3dp_core.device import Precision, enable_fast_kernels, resolve_device, resolve_dtype
from r3dp_core.errors import R3DPError


def test_auto_picks_an_available_device():
    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif torch.backends.mps.is_available():
        assert device.type == "mps"
    else:
        assert device == torch.device("cpu")


def test_explicit_device_and_dtype_names():
    assert resolve_device("cpu") == torch.device("cpu")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("fp32", cpu) is torch.float32
    assert resolve_dtype("bf16", cpu) is torch.bfloat16          # low precision on the CPU only when asked for
    assert Precision.resolve("cpu", "bfloat16").is_low_precision
    assert resolve_dtype("auto", torch.device("cuda")) is torch.float16
    assert resolve_dtype("bf16", torch.device("cuda")) is torch.bfloat16


def test_bf16_on_a_cpu_that_emulates_it_warns_and_names_the_faster_choice(monkeypatch):
    import warnings

    from r3dp_core import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="bf16 on this CPU is emulated.*use fp32"):
        assert resolve_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bf16", cpu) is torch.bfloat16
        assert resolve_dtype("bf16", torch.device("cuda")) is torch.bfloat16  # only the CPU is checked
    assert isinstance(device.cpu_has_native_bfloat16(), bool)


def test_a_hosts_fp16_verdict_and_its_cpu_fallback():
    """ComfyUI decides whether fp16 is safe on its GPU and may compute on the CPU whatever a workflow chose: the
    one dtype rule takes its verdict for 'auto' and turns a workflow's fp16 into fp32 there, with a warning."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cuda, fp16_safe=False) is torch.float32
    assert resolve_dtype("auto", cuda, fp16_safe=True) is torch.float16
    assert resolve_dtype("fp16", cuda, fp16_safe=False) is torch.float16  # an explicit choice is kept
    assert resolve_dtype("auto", cpu, fp16_safe=True) is torch.float32
    with pytest.raises(R3DPError, match="fp16 on the CPU is not supported"):
        resolve_dtype("fp16", cpu)
    with pytest.warns(RuntimeWarning, match="fp16 was chosen but the networks compute on the CPU"):
        assert resolve_dtype("fp16", cpu, refuse_cpu_fp16=False) is torch.float32


def test_bad_choices_say_what_to_use():
    with pytest.raises(R3DPError, match="Unknown dtype 'fp8'.*auto, fp32, fp16, bf16"):
        resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(R3DPError, match="fp16 on the CPU is not supported.*fp32 or bf16 on the CPU"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(R3DPError, match="half on the CPU is not supported"):
        resolve_dtype("half", torch.device("cpu"))
    with pytest.raises(R3DPError, match="Unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(R3DPError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_precision_autocast_is_noop_in_fp32():
    precision = Precision.resolve("cpu", "fp32")
    assert not precision.is_low_precision
    with precision.autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype is torch.float32


def test_fast_kernels_turn_on_cudnn_benchmarking_for_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    enable_fast_kernels(torch.device("cpu"))
    enable_fast_kernels(torch.device("mps"))
    assert torch.backends.cudnn.benchmark is False
    enable_fast_kernels(torch.device("cuda", 0))     # only a flag: works without a GPU
    assert torch.backends.cudnn.benchmark is True
    assert not torch.backends.cuda.matmul.allow_tf32  # float32 stays float32-accurate


def test_accelerator_memory_helpers_are_no_ops_on_the_cpu(monkeypatch):
    from r3dp_core.device import accelerator_api, peak_memory_allocated_mb, release_cached_memory

    cpu = torch.device("cpu")
    assert accelerator_api(cpu, "empty_cache") is None and peak_memory_allocated_mb(cpu) is None
    calls = []
    monkeypatch.setattr(torch.accelerator, "empty_cache", lambda: calls.append("empty"))
    monkeypatch.setattr(torch.accelerator, "max_memory_allocated", lambda device=None: 3 * 2**20)
    release_cached_memory(cpu)
    assert calls == []
    fake = torch.device("meta")  # any non-CPU device goes through torch.accelerator
    release_cached_memory(fake)
    assert calls == ["empty"] and peak_memory_allocated_mb(fake) == 3.0


def test_process_memory_readers_agree_and_the_peak_holds(monkeypatch):
    import sys

    from r3dp_core import device

    now, peak = device.resident_mb(), device.peak_resident_mb()
    if sys.platform.startswith("linux"):
        assert 1 < now <= peak       # this interpreter has torch loaded: far more than a MiB resident
    ballast = torch.ones(64 * 2**20 // 4)    # 64 MiB, touched
    assert device.peak_resident_mb() >= peak and (now is None or device.peak_resident_mb() >= now + 32)
    del ballast
    # without /proc (macOS, Windows): the current reading is unknown and the peak comes from getrusage
    monkeypatch.setattr(device, "_proc_status_mb", lambda field: None)
    assert device.resident_mb() is None and device.peak_resident_mb() > 1
    device.reset_peak_resident()     # never raises, whatever the system allows
