"""Inference speed-ups for the video model that keep the plain float32 results (or stay within 40 dB of them).

:func:`optimize_for_inference` prepares a loaded :class:`~r3dp_core.models.secc2plane_torso.Secc2PlaneTorso`
in place for the streaming path of :mod:`r3dp_core.pipeline.stream` (which already batches frames and computes
the portrait's canonical planes and super-resolution reference once):

* the super-resolution's constant-style convolution weights are folded once (exact);
* on CUDA, cuDNN benchmarks its convolution algorithms per input shape (:func:`~r3dp_core.device.enable_fast_kernels`);
* convolution weights are stored channels-last, the layout tensor cores want (exact up to summation order);
* optionally, the per-frame networks run under autocast in bfloat16 or float16. Only the convolution-heavy
  stages are switched (:data:`LOW_PRECISION_STAGES`); each returns float32, so the tri-plane sum, the volume
  renderer (whose importance sampling is ill-conditioned) and the head/torso/background compositing between
  the super-resolution blocks stay in float32;
* optionally, ``torch.compile`` of the per-frame stages (``mode="reduce-overhead"`` adds CUDA graphs); where
  compiling is not possible (no C++ compiler or Triton, an unsupported Python) a warning is logged and the stage
  runs eagerly.

The state dict is unchanged, so a model can still be saved; load new weights into a fresh model, not into an
optimized one (the folded weights would be dropped, the wrappers kept).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .device import Precision, enable_fast_kernels
from .errors import R3DPError

#: Sub-modules of the video model that run under autocast in low precision: the convolution-heavy networks.
#: ``superresolution.bg_encoder`` runs once per portrait; the rest per frame.
LOW_PRECISION_STAGES = (
    "secc_img2plane_backbone",
    "superresolution.block0",
    "superresolution.torso_model",
    "superresolution.torso_encoder",
    "superresolution.fuse_head_torso_convs",
    "superresolution.head_torso_block",
    "superresolution.fuse_fg_bg_convs",
    "superresolution.block1",
    "superresolution.bg_encoder",
)
#: Networks worth compiling: the per-frame ones (the low-precision stages but the once-per-portrait background
#: encoder, whose cached output must not live in a CUDA-graph memory pool) and the renderer's decoder MLP.
COMPILED_STAGES = (*(name for name in LOW_PRECISION_STAGES if name != "superresolution.bg_encoder"), "decoder")

_LOW_PRECISION = (torch.float16, torch.bfloat16)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

log = logging.getLogger(__name__)


def optimize_for_inference(model: nn.Module, precision: Precision | torch.dtype | None = None, *,
                           channels_last: bool = True, compile: bool | str = False) -> nn.Module:
    """Prepare ``model`` (a loaded ``Secc2PlaneTorso``) for fast inference, in place; returns it.

    Args:
        model: the video model on its target device, weights loaded, float32.
        precision: ``Precision`` or dtype of the per-frame networks: float32 (or None) keeps full precision,
            bfloat16 / float16 run :data:`LOW_PRECISION_STAGES` under autocast on the model's device type.
            bfloat16 is accepted on the CPU too (autocast there is how the tests check it).
        channels_last: store convolution weights channels-last (tensor-core layout on GPUs; on the CPU, one
            thread, full-size model, it made the HTB-SR 16 % and the motion adapter 7 % faster too).
        compile: ``torch.compile`` :data:`COMPILED_STAGES`: False (default), True (mode ``"default"``) or a mode
            of :data:`COMPILE_MODES` (``"reduce-overhead"`` adds CUDA graphs). The first chunks then take extra
            time to compile, and each new chunk size compiles again. Where compiling fails, the stage runs eagerly
            after a logged warning.

    Raises:
        R3DPError: the model was optimized before, or the dtype is not float32/bfloat16/float16, or the device
            has no autocast for it, or ``compile`` names an unknown mode.
    """
    dtype = precision.dtype if isinstance(precision, Precision) else (precision or torch.float32)
    if dtype not in (torch.float32, *_LOW_PRECISION):
        raise R3DPError(f"optimize_for_inference runs float32, bfloat16 or float16, not {dtype}.")
    if getattr(model, "_r3dp_optimized", False):
        raise R3DPError("This model was already optimized for inference; build a fresh model to change settings.")
    compile_mode = "default" if compile is True else (compile or None)
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise R3DPError(f"Unknown torch.compile mode {compile_mode!r}: use one of {', '.join(COMPILE_MODES)}.")
    device = next(model.parameters()).device
    low_precision = dtype in _LOW_PRECISION
    if low_precision and not torch.amp.is_autocast_available(device.type):
        raise R3DPError(f"{dtype} autocast is not available on {device.type}; use float32 there.")
    enable_fast_kernels(device)
    model.eval().requires_grad_(False)
    model.htbsr.fold_constant_styles()
    if channels_last:
        convert_to_channels_last(model)
    # CUDA graphs replay into the same memory: results that outlive the call (cached, or handed to the
    # caller like the torso occlusion maps) must be copies.
    copy_outputs = compile_mode == "reduce-overhead"
    for name in dict.fromkeys((*LOW_PRECISION_STAGES, *COMPILED_STAGES)):
        module = model.get_submodule(name)
        compiled = compile_mode is not None and name in COMPILED_STAGES
        autocast = low_precision and name in LOW_PRECISION_STAGES
        if compiled:
            compile_forward(module, name, compile_mode)
        if autocast or (compiled and copy_outputs):
            wrap_forward(module, device.type, dtype if autocast else None, copy_outputs)
    model._r3dp_optimized = True
    return model


def convert_to_channels_last(module: nn.Module) -> None:
    """Store every 4-D parameter/buffer (2-D conv weights, incl. folded ones) channels-last and every 5-D one
    (3-D conv weights) channels-last-3d. Convolutions then produce channels-last activations."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim in formats:
                param.data = param.data.contiguous(memory_format=formats[param.ndim])
        for owner in module.modules():
            for name, buffer in owner._buffers.items():
                if buffer is not None and buffer.ndim in formats:
                    owner._buffers[name] = buffer.contiguous(memory_format=formats[buffer.ndim])


def compile_forward(module: nn.Module, name: str, mode: str) -> None:
    """Run ``module``'s forward through ``torch.compile(mode=mode)``. If torch.compile is unavailable, or the
    compilation of a call fails (torch compiles lazily, at the first call of each input shape), a warning is
    logged and the module runs eagerly from then on; errors of the forward itself still propagate."""
    eager = module.forward
    try:
        from torch._dynamo.exc import TorchDynamoException

        compiled = torch.compile(eager, mode=mode)
    except (ImportError, RuntimeError) as exc:
        log.warning("r3dp: torch.compile is not available here (%s); %s runs without it", exc, name)
        return

    @functools.wraps(eager)
    def forward(*args, **kwargs):
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(*args, **kwargs)
            except TorchDynamoException as exc:
                log.warning("r3dp: torch.compile failed for %s (%s); it runs without compiling",
                            name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                compiled = None
        return eager(*args, **kwargs)

    module.forward = forward


def wrap_forward(module: nn.Module, device_type: str, autocast_dtype: torch.dtype | None,
                 copy_outputs: bool = False) -> None:
    """Wrap ``module``'s forward (the call stays eager around an already compiled forward).

    With ``autocast_dtype`` the forward runs under ``torch.autocast(device_type, autocast_dtype)`` and tensors
    that come out in that dtype are cast to float32 for the float32 code around the stage. Parameters stay
    float32 (autocast casts them per call), so normalisations, softmaxes and reductions keep autocast's
    float32 policy. With ``copy_outputs`` every other output tensor is cloned.
    """
    forward = module.forward

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == autocast_dtype:
            return tensor.float()
        return tensor.clone() if copy_outputs else tensor

    @functools.wraps(forward)
    def stage_forward(*args, **kwargs):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = forward(*args, **kwargs)
        return map_tensors(out, convert)

    module.forward = stage_forward


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor, through tuples, NamedTuples, lists, dicts and dataclasses."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: map_tensors(getattr(value, f.name), fn)
                                             for f in dataclasses.fields(value) if f.init})
    return value
