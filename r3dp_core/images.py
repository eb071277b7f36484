"""Conversions between the image layouts r3dp meets, each written once.

* uint8 ``[H,W,3]`` / ``[T,H,W,3]``: image files, MediaPipe, the official preprocessing;
* float ``[...,H,W,C]`` in [0,1]: ComfyUI ``IMAGE`` (C = 3, or 1 for grey, 4 with alpha);
* float ``[B,3,H,W]`` in [-1,1]: what the networks take and give.

To uint8, [0,1] values map as ``round(x·255)`` (which gives back the bytes of an image loaded as ``u8/255``)
and [-1,1] values as ``round((x+1)·127.5)``, the official output conversion.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import InputError


def unit_to_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Float values in [0,1] (clipped) → uint8 of the same shape and kind (tensor or array), computed in float32."""
    if isinstance(images, torch.Tensor):
        return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.rint(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def uint8_to_unit(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 values → float32 tensor in [0,1] of the same shape (``u8/255``)."""
    return torch.as_tensor(images).float() / 255


def as_uint8_frames(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """RGB images [T,H,W,3] or [H,W,3] → contiguous uint8 numpy [T,H,W,3].

    uint8 input is taken as is; float input is read as [0,1] (ComfyUI ``IMAGE``) with ``unit_to_uint8``.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"Expected RGB images shaped [frames, height, width, 3], got {images.shape}.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"Expected uint8 or float images in [0,1], got dtype {images.dtype}.")
        images = unit_to_uint8(images)
    return np.ascontiguousarray(images)


def comfy_to_uint8(image: torch.Tensor) -> np.ndarray:
    """A ComfyUI IMAGE ``[...,H,W,C]`` in [0,1] → RGB uint8 numpy ``[...,H,W,3]`` (alpha dropped, grey expanded)."""
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return unit_to_uint8(image[..., :3]).cpu().numpy()


def u8_image_to_tensor(u8_hwc: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``[H,W,3]`` (or ``[B,H,W,3]``) → float ``[B,3,H,W]`` in [-1,1], exactly as official inference."""
    u8 = torch.as_tensor(u8_hwc)
    x = (u8.to(torch.float32) - 127.5) / 127.5
    if x.ndim == 3:
        x = x.unsqueeze(0)
    return x.permute(0, 3, 1, 2).contiguous()


def to_comfy_image(x: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` in [-1,1] → ComfyUI IMAGE ``[B,H,W,3]`` float32 in [0,1] on the CPU."""
    return ((x.detach().float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().contiguous()


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """``[B,3,H,W]`` float in [-1,1] → uint8 numpy ``[B,H,W,3]``, as the official ``(x+1)·127.5`` then rounding."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
