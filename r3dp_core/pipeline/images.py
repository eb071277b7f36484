"""Conversions between the image layouts r3dp meets: uint8 HWC files, [-1,1] NCHW networks, ComfyUI IMAGE."""

from __future__ import annotations

import numpy as np
import torch


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


def from_comfy_image(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B,H,W,C]`` in [0,1] → ``[B,3,H,W]`` in [-1,1] (alpha dropped, gray expanded)."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return image[..., :3].permute(0, 3, 1, 2).float() * 2 - 1
