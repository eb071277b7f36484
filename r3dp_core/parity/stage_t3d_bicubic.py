"""Parity stage ``t3d_bicubic``: Talk3D's ×4 bicubic down-sampler and the mouth-mask rounding of its mouth loss.

Official call (``Trainer.calc_loss``): ``BicubicDownSample(512 // 128)`` on the target image and on the mouth mask
repeated to 3 channels, then ``torch.round(...).to(torch.uint8)``. Inputs: ``img_u8 [B,H,W,3]`` (converted as the
data loader does, ``u8 / 127.5 - 1``), ``mask_u8 [B,1,H,W]`` (0/1). Outputs: ``kernel [16]``, ``img_128``,
``mask_128`` and ``mouth_mask_128`` (uint8). The factor is the ratio of the input and output sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..talk3d.losses import BicubicDownSample, mouth_mask_128

if TYPE_CHECKING:
    from .case import ParityCase


def dataloader_image(u8: torch.Tensor) -> torch.Tensor:
    """``[B,H,W,3]`` uint8 → ``[B,3,H,W]`` float32 in [-1, 1], as Talk3D's data loader computes it
    (``u8.astype(float32) / 127.5 - 1``, which rounds differently from ``(u8 - 127.5) / 127.5``)."""
    return (u8.float() / 127.5 - 1.0).permute(0, 3, 1, 2)


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    img = dataloader_image(case.tensor("img_u8")).to(device)
    mask = case.tensor("mask_u8").to(device).float()
    out_side = case.tensors_meta["img_128"]["shape"][-1]
    down = BicubicDownSample(img.shape[-1] // out_side).to(device)
    return {"kernel": down.kernel, "img_128": down(img), "mask_128": down(mask.repeat(1, 3, 1, 1)),
            "mouth_mask_128": mouth_mask_128(mask, down)}
