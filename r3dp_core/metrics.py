"""Image quality metrics: how far a rendered frame is from a reference (the fast inference paths against float32,
Talk3D's renders against the person's frames)."""

from __future__ import annotations

import math

import torch


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2, i.e. the usual PSNR of [0, 1]
    images); ``inf`` when identical."""
    mse = (image.double() - reference.double()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)
