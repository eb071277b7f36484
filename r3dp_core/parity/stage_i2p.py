"""Parity stage ``i2p``: source image → canonical tri-plane (``Img2PlaneModel``).

Official call: ``model.cal_cano_plane(img)`` = ``cano_img2plane_backbone(img).view(B, 3, 32, H, W)`` +
flips. Inputs: ``img`` (``img_u8`` through the official uint8 conversion). Outputs: ``cano_planes`` and
every branch output as ``dbg_*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..models.i2p import I2PConfig, Img2PlaneModel

if TYPE_CHECKING:
    from .case import ParityCase

PREFIX = "cano_img2plane_backbone."


def build_model(case: ParityCase) -> Img2PlaneModel:
    """The case's I2P with its synthetic weights (official sub-keys, strict), in eval mode on the CPU."""
    model = Img2PlaneModel(I2PConfig.from_hparams(case.config("secc2plane_torso")))
    weights = {k[len(PREFIX):]: v for k, v in case.state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    load_into(model, weights, source=f"synthetic weights under {PREFIX}")
    return model.eval()


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size ``cano_planes [B,3,32,256,256]`` and the ``dbg_*`` branch outputs of ``case``."""
    model = build_model(case).to(device)
    with torch.no_grad():
        out = model.forward_with_intermediates(case.tensor("img").to(device))
    return {"cano_planes": out["planes"],
            **{f"dbg_{name}": out[name]
               for name in ("low_reso_encoder", "low_reso_vit", "high_reso_encoder", "triplane_predictor_vit")}}
