"""Channel-stacked network output → tri-plane tensor, shared by the I2P and the motion adapter."""

from __future__ import annotations

import torch


def channels_to_triplanes(x: torch.Tensor) -> torch.Tensor:
    """Split ``[B, 3*C, H, W]`` into the three planes and apply the official per-plane flips.

    Plane k holds channels ``k*C ... k*C + C - 1``. The networks predict planes in image layout;
    the flips put them into the orientation the renderer samples: plane 0 (xy) and plane 1 (xz) are
    flipped along H, plane 2 (zy) along H and W.

    Returns ``[B, 3, C, H, W]`` (a new tensor; ``x`` is not modified).
    """
    batch, channels, height, width = x.shape
    if channels % 3:
        raise ValueError(f"tri-plane channels must be a multiple of 3, got {channels}")
    planes = x.reshape(batch, 3, channels // 3, height, width)
    return torch.stack([planes[:, 0].flip(-2), planes[:, 1].flip(-2), planes[:, 2].flip(-2, -1)], dim=1)
