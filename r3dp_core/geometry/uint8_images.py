"""Conversion of user images to the uint8 RGB arrays the official preprocessing works on."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def as_uint8_frames(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """RGB images [T,H,W,3] or [H,W,3] → contiguous uint8 numpy [T,H,W,3].

    uint8 input is taken as is; float input is read as [0,1] (ComfyUI ``IMAGE``) and mapped with
    ``round(x·255)``, which recovers the original bytes of an image that was loaded as ``u8/255``.
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
        images = np.rint(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(images)
