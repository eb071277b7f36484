"""Inverse-CDF importance sampling of fine depths from the coarse pass (EG3D ``sample_importance``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PDF_EPS = 1e-5


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = PDF_EPS) -> torch.Tensor:
    """Invert the piecewise-linear CDF of ``weights`` placed on ``bins``.

    Args:
        bins: ``[R,K]`` ascending bin positions.
        weights: ``[R,J]`` non-negative weights, ``J <= K-1``; the CDF ``[R,J+1]`` (leading 0) is aligned
            with ``bins[:, :J+1]`` index for index.
        u: ``[R,S]`` uniforms in [0, 1).
        eps: added to every weight (keeps empty rays sampleable) and the flat-segment threshold.

    Returns:
        ``[R,S]`` samples, in the order of ``u`` (not sorted).
    """
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    index = torch.searchsorted(cdf, u.contiguous(), right=True)
    below = torch.clamp(index - 1, min=0)
    above = torch.clamp(index, max=cdf.shape[-1] - 1)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins_below, bins_above = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_above - cdf_below
    # A flat CDF segment (u past the last step) would divide by ~0: fall back to the lower bin.
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_below + (u - cdf_below) / denom * (bins_above - bins_below)


def sample_importance(depths: torch.Tensor, weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Fine depths ``[R,S]`` from coarse depths ``[R,D]`` and their interval weights ``[R,D-1]``.

    The weights are dilated (max-pool 2, pad 1) and smoothed (avg-pool 2) with a 0.01 floor, then the
    inner ``D-3`` of them (official off-by-one) are sampled over the ``D-1`` coarse mid-points with the
    uniforms ``u [R,S]``.
    """
    weights = F.max_pool1d(weights.unsqueeze(1), 2, 1, padding=1)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
    midpoints = 0.5 * (depths[:, :-1] + depths[:, 1:])
    return sample_pdf(midpoints, weights[:, 1:-1], u)
