"""Loss helpers of Talk3D's training: the ×4 bicubic down-sampler of the 128² targets and the mouth mask/loss.

The trainer compares the raw 128² render with ``BicubicDownSample(4)`` of the 512² target frame, and weights a
mouth L2 term with the down-sampled mouth mask rounded to 0/1 (``calc_loss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bicubic_weight(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel ``W(x)`` with ``a`` (official ``BicubicDownSample.bicubic_kernel``)."""
    x = abs(x)
    if x <= 1.0:
        return (a + 2.0) * x ** 3 - (a + 3.0) * x ** 2 + 1.0
    if x < 2.0:
        return a * x ** 3 - 5.0 * a * x ** 2 + 8.0 * a * x - 4.0 * a
    return 0.0


def bicubic_kernel(factor: int = 4, a: float = -0.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The separable ``4·factor``-tap kernel ``k_i = W((i - 2·factor + 0.5) / factor)``, normalised to sum 1.

    For factor 4 every tap is a dyadic rational, so float32 and float64 give the same values.
    """
    size = 4 * factor
    taps = torch.tensor([bicubic_weight((i - math.floor(size / 2) + 0.5) / factor, a) for i in range(size)],
                        dtype=torch.float64)
    return (taps / taps.sum()).to(dtype)


class BicubicDownSample(nn.Module):
    """Anti-aliased down-sampling by an integer factor (vive3D ``BicubicDownSample``, the trainer's 512 → 128).

    Reflect-pads the rows (``3·factor`` in all, top ``⌊·/2⌋``), filters them with the :func:`bicubic_kernel` at
    stride ``factor`` (rows first), then does the same along the columns. Each channel is filtered on its own
    (the official module is fixed to 3 channels; the mask is repeated to 3 channels before it).
    Holds no state-dict entries (the kernel is a non-persistent buffer).
    """

    def __init__(self, factor: int = 4, a: float = -0.5):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", bicubic_kernel(factor, a), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, (H - factor)/factor + 1, ...]`` (512² → 128² for factor 4)."""
        channels, size, stride = x.shape[1], self.kernel.numel(), self.factor
        pad = max(size - stride, 0)
        top, bottom = pad // 2, pad - pad // 2
        k = self.kernel.to(x.dtype)
        x = F.pad(x, (0, 0, top, bottom), mode="reflect")
        x = F.conv2d(x, k.reshape(1, 1, size, 1).expand(channels, 1, size, 1), stride=(stride, 1), groups=channels)
        x = F.pad(x, (top, bottom, 0, 0), mode="reflect")
        return F.conv2d(x, k.reshape(1, 1, 1, size).expand(channels, 1, 1, size), stride=(1, stride),
                        groups=channels)


def mouth_mask_128(mouth_mask: torch.Tensor, downsample: BicubicDownSample) -> torch.Tensor:
    """The trainer's ``mouth_seg_128``: ``round(downsample(mask.repeat(1, 3, 1, 1))).to(uint8)``.

    ``torch.round`` rounds half to even, and the bicubic overshoot below 0 rounds to -0 → 0.

    Args:
        mouth_mask: ``[B, 1, 512, 512]`` 0/1 float (the data loader's ``mouthseg``).

    Returns:
        ``[B, 3, 128, 128]`` uint8 0/1; its sum over the whole batch (all 3 channels) is the loss's denominator.
    """
    return torch.round(downsample(mouth_mask.float().repeat(1, 3, 1, 1))).to(torch.uint8)


def mouth_l2_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mouth term of ``calc_loss``: ``Σ (mask·pred - mask·target)² / Σ mask`` over the whole batch.

    Args:
        prediction, target: ``[B, 3, 128, 128]`` images in [-1, 1].
        mask: ``[B, 3, 128, 128]`` from :func:`mouth_mask_128` (3 channels counted in the denominator).
    """
    weight = mask.to(prediction.dtype)
    return F.mse_loss(prediction * weight, target * weight, reduction="sum") / weight.sum()


#: Smallest image side the AlexNet LPIPS accepts; smaller renders are enlarged to it first (``tiny`` preset only).
LPIPS_MIN_SIDE = 32


def lpips_distances(lpips, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS ``[B]`` of ``[B,3,H,W]`` pairs in [-1,1] (``lpips(x, y)``: the AlexNet LPIPS or any callable like it).
    Images under :data:`LPIPS_MIN_SIDE` (only the ``tiny`` preset's 16² raw renders; the official ones are 128²)
    are bilinearly enlarged first, as AlexNet's pooling needs at least that much."""
    side = min(x.shape[-2:])
    if side < LPIPS_MIN_SIDE:
        size = [math.ceil(n * LPIPS_MIN_SIDE / side) for n in x.shape[-2:]]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    return lpips(x, y).reshape(-1)


def lpips_sum(lpips, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """:func:`lpips_distances` summed over the batch (the trainer's reduction); None when ``lpips`` is None."""
    return None if lpips is None else lpips_distances(lpips, x, y).sum()
