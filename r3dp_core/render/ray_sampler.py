"""One ray per pixel centre of a square image (EG3D ``RaySampler``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_centers(resolution: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalized pixel centres ``[R*R, 2]`` as (x = column, y = row) in (0, 1), row-major ray order.

    Ray ``m = row * R + col`` has ``x = col/R + 0.5/R`` and ``y = row/R + 0.5/R``.
    """
    index = torch.arange(resolution, dtype=dtype, device=device)
    rows, cols = torch.meshgrid(index, index, indexing="ij")
    # Divide first, then add the half-pixel offset: this is the official rounding order.
    uv = torch.stack((cols, rows), dim=-1) / resolution + 0.5 / resolution
    return uv.reshape(-1, 2)


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor,
                resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through the pixel centres of a ``resolution x resolution`` image.

    Args:
        cam2world: ``[B,4,4]`` camera-to-world, OpenCV axes.
        intrinsics: ``[B,3,3]`` normalized intrinsics (fx, fy, cx, cy, skew in image-size units).
        resolution: image side R.

    Returns:
        origins ``[B,R*R,3]`` (the camera centre, repeated) and unit directions ``[B,R*R,3]``,
        rays in row-major pixel order.
    """
    fx = intrinsics[:, 0, 0, None]
    fy = intrinsics[:, 1, 1, None]
    cx = intrinsics[:, 0, 2, None]
    cy = intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]
    uv = pixel_centers(resolution, cam2world.device, cam2world.dtype)
    x, y = uv[:, 0], uv[:, 1]
    # Unproject to the z=1 plane; the skew terms keep the official formula (and its rounding order).
    x_cam = (x - cx + cy * skew / fy - skew * y / fy) / fx
    y_cam = (y - cy) / fy
    ones = torch.ones_like(x_cam)
    points_cam = torch.stack((x_cam, y_cam, ones, ones), dim=1)          # [B,4,M] homogeneous
    points_world = torch.bmm(cam2world, points_cam).transpose(1, 2)[..., :3]
    centers = cam2world[:, :3, 3]
    directions = F.normalize(points_world - centers[:, None, :], dim=2)
    origins = centers[:, None, :].expand_as(directions).contiguous()
    return origins, directions
