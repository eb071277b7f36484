"""Tri-plane feature lookup: project 3-D points onto three axis-aligned planes and sample them bilinearly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

# Plane axis matrices (rows) of the official renderer. A point p lands on plane k at the first two
# coordinates of ``p @ inverse(PLANE_AXES[k])``: plane 0 -> (x, y), plane 1 -> (x, z), plane 2 -> (z, x).
# (EG3D's public code has the same third plane; its paper intends (z, y).)
PLANE_AXES = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
])
# The matrices are permutations, whose inverse is the transpose, so ``p @ inverse(A)`` picks coordinate
# ``argmax(A[j])`` for output j. Gathering instead of multiplying gives the same values without a matmul.
PLANE_COORDINATES = PLANE_AXES.argmax(dim=-1)[:, :2]                 # [3, 2]: (grid x -> W, grid y -> H)


def project_onto_planes(points: torch.Tensor) -> torch.Tensor:
    """2-D coordinates of ``points [..., 3]`` on the three planes: ``[3, ..., 2]`` (x indexes W, y H)."""
    index = PLANE_COORDINATES.to(points.device)
    return torch.stack([points[..., index[k]] for k in range(len(index))])


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinear features of the three planes at world points.

    Args:
        planes: ``[B,3,C,H,W]``, or ``[1,3,C,H,W]`` shared by every frame.
        points: ``[N,P,3]`` world coordinates; the box ``[-box_warp/2, box_warp/2]^3`` maps onto the planes.
        box_warp: side of the world box covered by the planes.

    Returns:
        ``[N,3,P,C]`` features (zeros outside the planes; ``align_corners=False``).
    """
    n_frames, n_points, _ = points.shape
    n_planes, channels, height, width = planes.shape[1:]
    # Shared planes: sample every frame's points in one call instead of copying the planes per frame.
    shared = planes.shape[0] == 1
    if not shared and planes.shape[0] != n_frames:
        raise InputError(f"planes batch {planes.shape[0]} does not match {n_frames} frames (or 1)")
    grid = project_onto_planes(points * (2 / box_warp))                 # [3, N, P, 2]
    # grid_sample batch = (plane batch, plane); shared planes take all frames' points in one row.
    grid = grid.reshape(n_planes, 1, n_frames * n_points, 2) if shared else \
        grid.transpose(0, 1).reshape(n_frames * n_planes, 1, n_points, 2)
    features = F.grid_sample(planes.reshape(-1, channels, height, width), grid.to(planes.dtype),
                             mode="bilinear", padding_mode="zeros", align_corners=False)
    # [B*3, C, 1, N*P/B] -> [N, 3, P, C]
    features = features.reshape(planes.shape[0], n_planes, channels, -1, n_points).permute(0, 3, 1, 4, 2)
    return features.reshape(n_frames, n_planes, n_points, channels)
