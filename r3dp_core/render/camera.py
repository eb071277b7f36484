"""EG3D 25-number camera: ``[cam2world 4x4 row-major (16) | normalized intrinsics 3x3 row-major (9)]``.

cam2world uses OpenCV axes (x right, y down, +z forward). Intrinsics are normalized by the image size, so
one camera renders at any resolution (the pipeline's focal length is 2985.29/700, centre 0.5).
"""

from __future__ import annotations

import torch

from ..errors import InputError

CAMERA_SIZE = 25


def split_camera(camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``camera [B,25]`` into ``cam2world [B,4,4]`` and normalized intrinsics ``[B,3,3]``."""
    if camera.ndim != 2 or camera.shape[1] != CAMERA_SIZE:
        raise InputError(f"camera must be [B, {CAMERA_SIZE}] (cam2world 4x4 + intrinsics 3x3), "
                         f"got {tuple(camera.shape)}")
    return camera[:, :16].reshape(-1, 4, 4), camera[:, 16:].reshape(-1, 3, 3)
