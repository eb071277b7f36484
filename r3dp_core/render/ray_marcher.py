"""Alpha compositing along rays at interval mid-points (EG3D ``MipRayMarcher2``, softplus density)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class MarchResult(NamedTuple):
    features: torch.Tensor      # [..., C] composited features mapped to ~[-1, 1] (x*2-1), unclamped
    depth: torch.Tensor         # [..., 1] expected depth, NaN (zero total weight) -> +inf, not yet clamped
    weights: torch.Tensor       # [..., S-1, 1] per-interval weights, summing to <= 1


def march_rays(features: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor) -> MarchResult:
    """Composite S depth-sorted samples per ray over their S-1 intervals.

    Args:
        features: ``[..., S, C]`` decoder features in about [0, 1].
        densities: ``[..., S, 1]`` raw decoder density.
        depths: ``[..., S, 1]`` sample depths, ascending along S.
    """
    deltas = depths[..., 1:, :] - depths[..., :-1, :]
    features_mid = (features[..., :-1, :] + features[..., 1:, :]) / 2
    densities_mid = (densities[..., :-1, :] + densities[..., 1:, :]) / 2
    depths_mid = (depths[..., :-1, :] + depths[..., 1:, :]) / 2
    # The -1 shift biases empty space towards transparency (official clamp_mode 'softplus').
    sigma = F.softplus(densities_mid - 1)
    alpha = 1 - torch.exp(-(sigma * deltas))
    # 1e-10 keeps the transmittance from collapsing to exactly 0 behind an opaque interval.
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], -2), -2)
    weights = alpha * transmittance[..., :-1, :]
    composite = torch.sum(weights * features_mid, -2)
    depth = torch.sum(weights * depths_mid, -2) / weights.sum(-2)
    depth = torch.nan_to_num(depth, float("inf"))
    return MarchResult(composite * 2 - 1, depth, weights)


def clamp_depth_per_frame(depth: torch.Tensor, sample_depth_min: torch.Tensor,
                          sample_depth_max: torch.Tensor) -> torch.Tensor:
    """Clamp composited depth ``[N,M,1]`` to each frame's sample-depth range ``[N]`` / ``[N]``.

    The official renderer clamps to the min/max sample depth of its whole call, and official inference
    renders one frame per call, so the range is per frame. It only binds for rays with zero total weight.
    """
    return torch.clamp(depth, sample_depth_min[:, None, None], sample_depth_max[:, None, None])
