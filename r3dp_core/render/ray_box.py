"""Ray limits from the slab test against the tri-plane box ``[-box_warp/2, box_warp/2]^3``."""

from __future__ import annotations

import torch

MISS_START = -1.0
MISS_END = -2.0


def ray_box_intersection(origins: torch.Tensor, directions: torch.Tensor,
                         box_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances of rays through an axis-aligned, origin-centred cube (EG3D slab test).

    Args:
        origins, directions: ``[..., 3]``; directions need not be normalized, zero components are allowed
            (IEEE ``1/0 = ±inf`` makes that slab unbounded).
        box_size: side length of the cube.

    Returns:
        t_near, t_far ``[..., 1]``. Rays that miss get ``t_near = -1``, ``t_far = -2``. ``t_near`` is not
        clamped at 0, so a ray starting inside the box gets a negative start.
    """
    half = box_size / 2
    inv_dir = 1 / directions
    # The near plane of each slab is the max plane when the ray runs towards -axis.
    toward_negative = inv_dir < 0
    near_plane = torch.where(toward_negative, half, -half).to(origins.dtype)
    far_plane = -near_plane
    t_near_axes = (near_plane - origins) * inv_dir
    t_far_axes = (far_plane - origins) * inv_dir

    t_near, t_far = t_near_axes[..., 0], t_far_axes[..., 0]
    hit = torch.ones_like(t_near, dtype=torch.bool)
    # Slabs are merged in x, y, z order and each merge checks against the interval so far; torch.maximum /
    # minimum propagate NaN (0 * inf for an origin on a slab plane) exactly like the official code.
    for axis in (1, 2):
        axis_near, axis_far = t_near_axes[..., axis], t_far_axes[..., axis]
        hit = hit & ~((t_near > axis_far) | (axis_near > t_far))
        t_near = torch.maximum(t_near, axis_near)
        t_far = torch.minimum(t_far, axis_far)
    t_near = torch.where(hit, t_near, torch.full_like(t_near, MISS_START))
    t_far = torch.where(hit, t_far, torch.full_like(t_far, MISS_END))
    return t_near.unsqueeze(-1), t_far.unsqueeze(-1)


def ray_limits(origins: torch.Tensor, directions: torch.Tensor,
               box_size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sampling interval per ray, with missing rays given a stand-in interval per frame.

    A missing ray gets ``start = min`` and ``end = max`` of the *starts* of the frame's hitting rays (the
    official quirk: max of the starts, not of the ends). The official renderer takes these statistics over
    its whole call, and official inference renders one frame per call, so they are taken per frame here.
    A frame in which no ray hits keeps ``-1 / -2``.

    Args:
        origins, directions: ``[N,M,3]`` for N frames of M rays.
        box_size: the tri-plane box side (``box_warp``).

    Returns:
        start ``[N,M,1]``, end ``[N,M,1]`` and is_valid ``[N,M,1]`` bool (``end > start`` before filling).
    """
    start, end = ray_box_intersection(origins, directions, box_size)
    is_valid = end > start
    inf = torch.tensor(float("inf"), dtype=start.dtype, device=start.device)
    frame_min = torch.where(is_valid, start, inf).amin(dim=(1, 2), keepdim=True)
    frame_max = torch.where(is_valid, start, -inf).amax(dim=(1, 2), keepdim=True)
    fill = ~is_valid & is_valid.any(dim=1, keepdim=True)
    start = torch.where(fill, frame_min, start)
    end = torch.where(fill, frame_max, end)
    return start, end, is_valid
