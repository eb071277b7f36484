"""The one place that decides which device and dtype r3dp runs on.

``auto`` picks CUDA, then Apple's MPS, then the CPU, and the dtype fp16 on accelerators, fp32 on the CPU. On the
CPU low precision is an explicit choice: bf16 when asked for (autocast of the convolution networks; how much it
gains depends on the CPU's bf16 support), never fp16, whose CPU kernels are slow or missing.
"""

from __future__ import annotations

import resource
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import R3DPError

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``'auto'`` → cuda, mps or cpu (first available); any torch device string is accepted."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise R3DPError(f"Unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise R3DPError(f"Device {name!r} was requested but this PyTorch build sees no CUDA GPU; use --device cpu "
                        "or install a CUDA build of PyTorch.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise R3DPError(f"Device {name!r} was requested but MPS is not available on this machine; use --device cpu.")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device, *, fp16_safe: bool | None = None,
                  refuse_cpu_fp16: bool = True) -> torch.dtype:
    """The compute dtype for ``name`` on ``device``.

    Args:
        name: ``'auto'``/None → fp32 on the CPU, fp16 on an accelerator (fp32 there when ``fp16_safe`` is False);
            explicit names: fp32, fp16, bf16 (and their long forms).
        device: where the networks compute.
        fp16_safe: a host's verdict on fp16 for this accelerator (ComfyUI's ``should_use_fp16``), read by
            ``'auto'`` only; None: fp16 is taken as safe on every accelerator.
        refuse_cpu_fp16: fp16 on the CPU is refused (the CLI: the user chose the device). False: it falls back
            to fp32 with a warning (ComfyUI: the device is ComfyUI's, and a workflow's fp16 was chosen for a GPU).
    """
    if isinstance(name, torch.dtype):
        dtype = name
    elif name is None or name == "auto":
        dtype = torch.float32 if device.type == "cpu" or fp16_safe is False else torch.float16
    elif name in _DTYPES:
        dtype = _DTYPES[name]
    else:
        raise R3DPError(f"Unknown dtype {name!r}: use one of auto, fp32, fp16, bf16.")
    if device.type == "cpu" and dtype == torch.float16:
        if not refuse_cpu_fp16:
            warnings.warn(f"{name} was chosen but the networks compute on the CPU, which has no fast fp16; using "
                          "fp32", RuntimeWarning, stacklevel=2)
            return torch.float32
        raise R3DPError(f"{name} on the CPU is not supported (slow and imprecise there); use fp32 or bf16 on the "
                        "CPU, or fp16 on a GPU.")
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bfloat16():
        warnings.warn("bf16 on this CPU is emulated (it has no AVX512-BF16 or AMX) and runs many times slower than "
                      "fp32: use fp32 (the CPU's auto) here.", RuntimeWarning, stacklevel=2)
    return dtype


def cpu_has_native_bfloat16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports); elsewhere bf16 is emulated
    and far slower than fp32. True when this PyTorch build cannot tell."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if check is None else bool(check())


def enable_fast_kernels(device: torch.device) -> None:
    """Process-wide kernel choices for inference on ``device``: on CUDA, cuDNN benchmarks its convolution
    algorithms for each new input shape and keeps the fastest (the pipeline's chunks repeat a few shapes).
    Nothing changes on other devices. TF32 stays off, so float32 results stay float32-accurate."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def accelerator_api(device: torch.device, function: str) -> Callable | None:
    """``torch.accelerator.<function>`` (torch >= 2.9), else ``torch.<device type>.<function>``; None on the CPU
    or when this torch has neither."""
    if device.type == "cpu":
        return None
    return getattr(torch.accelerator, function, None) or getattr(getattr(torch, device.type, None), function, None)


def current_accelerator() -> torch.device | None:
    """The accelerator this process computes on (CUDA, MPS, XPU, ...), or None."""
    if hasattr(torch, "accelerator") and hasattr(torch.accelerator, "current_accelerator"):
        return torch.accelerator.current_accelerator()
    return torch.device("cuda") if torch.cuda.is_available() else None


def release_cached_memory(device: torch.device | None = None) -> None:
    """Return the allocator's cached blocks of ``device`` (default: the current accelerator) to the driver."""
    device = device or current_accelerator()
    empty_cache = accelerator_api(device, "empty_cache") if device is not None else None
    if empty_cache is not None:
        empty_cache()


def peak_memory_allocated_mb(device: torch.device) -> float | None:
    """Peak memory allocated by tensors on ``device`` since the last reset, in MiB; None on the CPU."""
    peak = accelerator_api(device, "max_memory_allocated")
    return peak(device) / 2**20 if peak is not None else None


def _proc_status_mb(field: str) -> float | None:
    """A memory line of Linux's ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def resident_mb() -> float | None:
    """Current resident memory of this process in MiB (Linux ``/proc``; None elsewhere)."""
    return _proc_status_mb("VmRSS")


def peak_resident_mb() -> float:
    """Peak resident memory of this process in MiB: Linux's ``VmHWM`` (restarted by ``reset_peak_resident``),
    elsewhere the peak since the process started (``ru_maxrss``: bytes on macOS, KiB on other systems)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak_resident() -> None:
    """Restart the peak that ``peak_resident_mb`` reports, where the system allows it (Linux); else nothing."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


@dataclass(frozen=True)
class Precision:
    """Where and in which dtype the networks run. Geometry and rendering statistics stay fp32."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def resolve(cls, device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto") -> Precision:
        dev = resolve_device(device)
        return cls(dev, resolve_dtype(dtype, dev))

    @property
    def is_low_precision(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self):
        """An autocast context for the networks (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.is_low_precision)
