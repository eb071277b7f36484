"""Channel-stacked network output → tri-plane tensor, shared by the I2P, the motion adapter and Talk3D."""

from __future__ import annotations

import torch

#: Per-plane flip dims of Real3D-Portrait: its networks predict planes in image layout, and the flips put them
#: into the orientation the renderer samples: plane 0 (xy) and plane 1 (xz) are flipped along H, plane 2 along
#: H and W.
REAL3D_PORTRAIT_FLIPS: tuple[tuple[int, ...], ...] = ((-2,), (-2,), (-2, -1))
#: No flips: EG3D's StyleGAN2 backbone (Talk3D) already emits the planes in sampling orientation; the official
#: code only views ``[B, 96, H, W]`` as ``[B, 3, 32, H, W]``.
NO_FLIPS: tuple[tuple[int, ...], ...] = ((), (), ())


def channels_to_triplanes(x: torch.Tensor,
                          flips: tuple[tuple[int, ...], ...] = REAL3D_PORTRAIT_FLIPS) -> torch.Tensor:
    """Split ``[B, 3*C, H, W]`` into the three planes and apply per-plane flips.

    Plane k holds channels ``k*C ... k*C + C - 1``; plane k is then flipped along the dims ``flips[k]``
    (dims of the ``[B, C, H, W]`` plane, e.g. ``-2`` = H). The default is Real3D-Portrait's layout
    (:data:`REAL3D_PORTRAIT_FLIPS`); :data:`NO_FLIPS` is EG3D's plain view.

    Returns ``[B, 3, C, H, W]``: a new tensor when any plane is flipped, else a view of ``x``.
    """
    batch, channels, height, width = x.shape
    if channels % 3:
        raise ValueError(f"tri-plane channels must be a multiple of 3, got {channels}")
    if len(flips) != 3:
        raise ValueError(f"flips must name the flip dims of each of the 3 planes, got {flips!r}")
    planes = x.reshape(batch, 3, channels // 3, height, width)
    if not any(flips):
        return planes
    return torch.stack([planes[:, k].flip(dims) if dims else planes[:, k] for k, dims in enumerate(flips)], dim=1)
