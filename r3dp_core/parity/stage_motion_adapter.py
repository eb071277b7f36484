"""Parity stage ``motion_adapter``: three SECC maps → tri-plane residual (``MotionAdapter``).

Official call: ``model.cal_secc_plane({'cond_cano', 'cond_src', 'cond_tgt'})``. Inputs: the uint8
``secc_{cano,src,tgt}_u8`` maps through the official conversion. Outputs: ``secc_planes`` and the
intermediate maps as ``dbg_*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..models.motion_adapter import MotionAdapter, MotionAdapterConfig

if TYPE_CHECKING:
    from .case import ParityCase

PREFIX = "secc_img2plane_backbone."


def build_model(case: ParityCase) -> MotionAdapter:
    """The case's motion adapter with its synthetic weights (official sub-keys, strict), in eval mode."""
    model = MotionAdapter(MotionAdapterConfig.from_hparams(case.config("secc2plane_torso")))
    weights = {k[len(PREFIX):]: v for k, v in case.state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    load_into(model, weights, source=f"synthetic weights under {PREFIX}")
    return model.eval()


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size ``secc_planes [B,3,32,256,256]`` and the ``dbg_*`` intermediates of ``case``."""
    model = build_model(case).to(device)
    cano, src, tgt = (case.image(f"secc_{which}_u8").to(device) for which in ("cano", "src", "tgt"))
    with torch.no_grad():
        out = model.forward_with_intermediates(cano, src, tgt)
    stages = {f"dbg_mix_vit_{i}": feature for i, feature in enumerate(out["mix_vit"])}
    return {"secc_planes": out["planes"], "dbg_prenet": out["prenet"], **stages,
            "dbg_fuse_head": out["fuse_head"], "dbg_to_plane_cnn": out["to_plane_cnn"]}
