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
# The "fixed" matrices of EG3D issue #67 (Talk3D, the ``ffhq-fixed-triplane512-128`` checkpoint): the third
# plane is ``[[0,0,1],[0,1,0],[1,0,0]]``, so plane 2 -> (z, y), the layout the EG3D paper describes.
FIXED_PLANE_AXES = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
])
#: Plane layouts by name (``RenderConfig.plane_axes``): ``"eg3d"`` (Real3D-Portrait, the default) and
#: ``"eg3d_fixed"`` (Talk3D).
PLANE_LAYOUTS = {"eg3d": PLANE_AXES, "eg3d_fixed": FIXED_PLANE_AXES}


def plane_coordinates(axes: torch.Tensor) -> torch.Tensor:
    """``[3, 2]`` point-coordinate indices (grid x -> W, grid y -> H) of each plane for axis matrices ``[3,3,3]``.

    The matrices are permutations, whose inverse is the transpose, so ``p @ inverse(A)`` picks coordinate
    ``argmax(A[j])`` for output j. Gathering instead of multiplying gives the same values without a matmul.
    """
    return axes.argmax(dim=-1)[:, :2]


PLANE_COORDINATES = plane_coordinates(PLANE_AXES)                   # [3, 2]: (grid x -> W, grid y -> H)
_LAYOUT_COORDINATES = {name: plane_coordinates(axes) for name, axes in PLANE_LAYOUTS.items()}


def layout_coordinates(plane_axes: str) -> torch.Tensor:
    """The ``[3, 2]`` coordinate indices of a named plane layout (see ``PLANE_LAYOUTS``)."""
    if plane_axes not in _LAYOUT_COORDINATES:
        raise InputError(f"unknown plane layout {plane_axes!r}; known: {', '.join(_LAYOUT_COORDINATES)}")
    return _LAYOUT_COORDINATES[plane_axes]


def project_onto_planes(points: torch.Tensor, plane_axes: str = "eg3d") -> torch.Tensor:
    """2-D coordinates of ``points [..., 3]`` on the three planes of layout ``plane_axes``: ``[3, ..., 2]``
    (x indexes W, y H)."""
    index = layout_coordinates(plane_axes).to(points.device)
    return torch.stack([points[..., index[k]] for k in range(len(index))])


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                     plane_axes: str = "eg3d") -> torch.Tensor:
    """Bilinear features of the three planes at world points.

    Args:
        planes: ``[B,3,C,H,W]``, or ``[1,3,C,H,W]`` shared by every frame.
        points: ``[N,P,3]`` world coordinates; the box ``[-box_warp/2, box_warp/2]^3`` maps onto the planes.
        box_warp: side of the world box covered by the planes.
        plane_axes: plane layout, ``"eg3d"`` (x,y), (x,z), (z,x) or ``"eg3d_fixed"`` (x,y), (x,z), (z,y).

    Returns:
        ``[N,3,P,C]`` features (zeros outside the planes; ``align_corners=False``).
    """
    n_frames, n_points, _ = points.shape
    n_planes, channels, height, width = planes.shape[1:]
    # Shared planes: sample every frame's points in one call instead of copying the planes per frame.
    shared = planes.shape[0] == 1
    if not shared and planes.shape[0] != n_frames:
        raise InputError(f"planes batch {planes.shape[0]} does not match {n_frames} frames (or 1)")
    grid = project_onto_planes(points * (2 / box_warp), plane_axes)     # [3, N, P, 2]
    # grid_sample batch = (plane batch, plane); shared planes take all frames' points in one row.
    grid = grid.reshape(n_planes, 1, n_frames * n_points, 2) if shared else \
        grid.transpose(0, 1).reshape(n_frames * n_planes, 1, n_points, 2)
    features = F.grid_sample(planes.reshape(-1, channels, height, width), grid.to(planes.dtype),
                             mode="bilinear", padding_mode="zeros", align_corners=False)
    # [B*3, C, 1, N*P/B] -> [N, 3, P, C]
    features = features.reshape(planes.shape[0], n_planes, channels, -1, n_points).permute(0, 3, 1, 4, 2)
    return features.reshape(n_frames, n_planes, n_points, channels)
