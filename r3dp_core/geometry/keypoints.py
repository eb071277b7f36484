"""Torso keypoints for the HTB-SR torso warp: 68 3DMM landmarks in [-1,1] image coords, time-smoothed.

The official ``Face3DHelper`` reads the 1-based BFM ``keypoints`` as 0-based vertex ids (one vertex off);
the torso checkpoint was trained that way, so :meth:`FaceModel3DMM.lm68_helper_2d` keeps the quirk.
The torso model v2 only uses ids :data:`TORSO_KP_IDS` (jaw ends, chin, nose bridge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bfm import FaceModel3DMM

TORSO_KP_IDS = (0, 8, 16, 27)
SMOOTH_KERNEL = 7


def torso_keypoints(model: FaceModel3DMM, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor,
                    trans: torch.Tensor) -> torch.Tensor:
    """``clamp((lm2d − 0.5)/0.5, −1, 1)`` of the off-by-one 68 landmarks (official ``src_kp``/``drv_kp``).

    Args:
        id_coeff: ``[B,80]`` or ``[1,80]`` (broadcast). exp_coeff: ``[B,64]``. euler, trans: ``[B,3]``.

    Returns:
        ``[B,68,2]`` in [-1,1], x right, y down.
    """
    lm2d = model.lm68_helper_2d(id_coeff, exp_coeff, euler, trans)
    return ((lm2d - 0.5) / 0.5).clamp(-1.0, 1.0)


def _symmetric_index(length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Frame ids of ``[−pad, length + pad)`` mirrored at the ends with the edge repeated (x2 x1 x0 | x0 x1 …)."""
    i = torch.arange(-pad, length + pad, device=device) % (2 * length)
    return torch.where(i < length, i, 2 * length - 1 - i)


def smooth_features_xd(features: torch.Tensor, kernel_size: int = SMOOTH_KERNEL) -> torch.Tensor:
    """The official ``smooth_features_xd``: symmetric edge padding in time, then a ``kernel_size`` box filter.

    Padding repeats the edge frame (``x2, x1, x0 | x0, x1, …``), not torch's ``reflect``. Also defined for
    sequences shorter than ``kernel_size // 2`` (the padding keeps mirroring), where the official code fails.

    Args:
        features: ``[T,C]``.

    Returns:
        ``[T,C]``.
    """
    pad = kernel_size // 2
    padded = features[_symmetric_index(features.shape[0], pad, features.device)]  # [T+2p, C]
    weight = torch.full((1, 1, kernel_size), 1.0 / kernel_size, dtype=features.dtype, device=features.device)
    return F.conv1d(padded.T.unsqueeze(1), weight).squeeze(1).T


def smooth_torso_keypoints(keypoints: torch.Tensor, kernel_size: int = SMOOTH_KERNEL) -> torch.Tensor:
    """:func:`smooth_features_xd` over time of ``[T,68,2]`` keypoints (official ``drv_kp`` smoothing)."""
    t = keypoints.shape[0]
    return smooth_features_xd(keypoints.reshape(t, -1), kernel_size).reshape(keypoints.shape)


__all__ = ["TORSO_KP_IDS", "smooth_features_xd", "smooth_torso_keypoints", "torso_keypoints"]
