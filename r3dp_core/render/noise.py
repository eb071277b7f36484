"""The renderer's random draws for a clip, reproducible per frame whatever the chunking or device."""

from __future__ import annotations

import torch

from .renderer import RenderNoise


def frame_noise(frame_ids: range, num_rays: int, coarse: int, fine: int, seed: int) -> RenderNoise:
    """The renderer's two random draws for the given frames, each frame from its own seeded CPU stream,
    so a frame renders the same whatever chunk it falls in and on every device."""
    stratified, importance = [], []
    for frame in frame_ids:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + frame)
        stratified.append(torch.rand(1, num_rays, coarse, 1, generator=generator))
        importance.append(torch.rand(num_rays, fine, generator=generator))
    return RenderNoise(torch.cat(stratified), torch.cat(importance))
