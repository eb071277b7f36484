"""Parity stage ``full_forward``: the whole video model for the frames of a case (official ``model.forward``).

Official call: ``model.forward(img=ref_head_img, camera, cond={cond_cano, cond_src, cond_tgt, ref_torso_img,
bg_img, segmap, kp_s, kp_d}, ret={}, cache_backbone=True, use_cached_backbone=False)`` with the renderer's two
random draws replaced by the case's ``noise_stratified`` / ``noise_importance_u``. Outputs: ``image``,
``image_raw``, ``image_depth``, ``weights_img``, ``image_feature``, ``feature_image``, ``plane``,
``occlusion``, ``occlusion_2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..models.secc2plane_torso import Secc2PlaneTorso, Secc2PlaneTorsoConfig
from ..render import RenderNoise
from .case import segmap_to_onehot

if TYPE_CHECKING:
    from .case import ParityCase


def build_model(case: ParityCase) -> Secc2PlaneTorso:
    """The full model with the case's synthetic weights (all 1030 official keys, strict), folded, eval."""
    model = Secc2PlaneTorso(Secc2PlaneTorsoConfig.from_hparams(case.config("secc2plane_torso")))
    load_into(model, case.state_dict("secc2plane_torso"), source="synthetic secc2plane_torso weights")
    model.fold_constant_styles()
    return model.eval()


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size outputs of ``case``."""
    model = build_model(case).to(device)
    noise = RenderNoise(case.tensor("noise_stratified"), case.tensor("noise_importance_u"))
    with torch.no_grad():
        out = model(case.image("ref_head_u8").to(device), case.tensor("camera").to(device),
                    case.image("secc_cano_u8").to(device), case.image("secc_src_u8").to(device),
                    case.image("secc_tgt_u8").to(device), case.image("ref_torso_u8").to(device),
                    case.image("bg_u8").to(device), segmap_to_onehot(case.tensor("segmap_idx")).to(device),
                    case.tensor("kp_s").to(device), case.tensor("kp_d").to(device), noise=noise)
    return {"image": out.image, "image_raw": out.image_raw, "image_depth": out.image_depth,
            "weights_img": out.weights_img, "image_feature": out.image_feature, "feature_image": out.feature_image,
            "plane": out.plane, "occlusion": out.occlusion, "occlusion_2": out.occlusion_2}
