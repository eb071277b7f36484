"""Parity stage ``htbsr``: rendered features + weights + torso/background/segmap/keypoints → 512² frame.

Official call: ``_forward_sr(feature_image[:, :3], feature_image, cond, ret={'weights_img': w})`` then
``clamp(-1, 1)`` (all-ones styles, no noise). r3dp runs the same computation as
``HTBSR.prepare_reference`` (once) + ``HTBSR.render_frames`` with folded constant-style weights. Outputs:
``image``, ``occlusion``, ``occlusion_2``, ``deformed_torso_hid`` and every ``dbg_*`` of the sidecar,
captured from the sub-modules with forward hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..checkpoint import load_into
from ..models.htbsr import HTBSR, HTBSRConfig
from .case import segmap_to_onehot

if TYPE_CHECKING:
    from .case import ParityCase

PREFIX = "superresolution."


def build_model(case: ParityCase) -> HTBSR:
    """The case's HTB-SR with its synthetic weights (official sub-keys, strict), folded, in eval mode."""
    model = HTBSR(HTBSRConfig.from_hparams(case.config("secc2plane_torso")))
    weights = {k[len(PREFIX):]: v for k, v in case.state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    load_into(model, weights, source=f"synthetic weights under {PREFIX}")
    model.fold_constant_styles()
    return model.eval()


def debug_taps(model: HTBSR) -> dict[str, tuple[nn.Module, Callable]]:
    """Sidecar name → (module, function of that module's output) for every intermediate the cases store."""
    torso = model.torso_model
    return {
        "dbg_block0_x": (model.block0, lambda out: out[0]),
        "dbg_block0_rgb": (model.block0, lambda out: out[1]),
        "dbg_torso_appearance_feats": (torso.appearance_extractor, lambda out: out),
        "dbg_torso_deformation": (torso.motion_field_estimator, lambda out: out.deformation),
        "dbg_torso_occlusion": (torso.motion_field_estimator, lambda out: out.occlusion),
        "dbg_torso_occlusion_2_pre": (torso.motion_field_estimator, lambda out: out.occlusion_2),
        "dbg_torso_rgb": (torso.deform_based_generator, lambda out: out[0]),
        "dbg_torso_hid": (torso.deform_based_generator, lambda out: out[1]),
        "deformed_torso_hid": (torso.deform_based_generator, lambda out: out[1]),
        "dbg_x_torso": (model.torso_encoder, lambda out: out),
        "dbg_x_bg": (model.bg_encoder, lambda out: out),
        "dbg_fuse_head_torso": (model.fuse_head_torso_convs, lambda out: out),
        "dbg_head_torso_block_x": (model.head_torso_block, lambda out: out[0]),
        "dbg_head_torso_block_rgb": (model.head_torso_block, lambda out: out[1]),
        "dbg_fuse_fg_bg": (model.fuse_fg_bg_convs, lambda out: out),
    }


@contextmanager
def capture(taps: dict[str, tuple[nn.Module, Callable]]):
    """Record the tapped sub-module outputs into the yielded dict while the context is active."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str, pick: Callable):
        return lambda _module, _inputs, out: captured.__setitem__(name, pick(out))

    handles = [module.register_forward_hook(hook(name, pick)) for name, (module, pick) in taps.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def htbsr_inputs(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The SR inputs of a case in the official float layouts (uint8 images and class map converted)."""
    return {"ref_torso_img": case.image("ref_torso_u8").to(device), "bg_img": case.image("bg_u8").to(device),
            "segmap": segmap_to_onehot(case.tensor("segmap_idx")).to(device),
            "kp_source": case.tensor("kp_s").to(device), "kp_driving": case.tensor("kp_d").to(device)}


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size outputs and ``dbg_*`` intermediates of ``case``."""
    model = build_model(case).to(device)
    inputs = htbsr_inputs(case, device)
    with torch.no_grad(), capture(debug_taps(model)) as captured:
        reference = model.prepare_reference(inputs["ref_torso_img"], inputs["bg_img"], inputs["segmap"],
                                            inputs["kp_source"])
        out = model.render_frames(case.tensor("feature_image").to(device), case.tensor("weights_image").to(device),
                                  inputs["kp_driving"], reference)
    return {"image": out.image, "occlusion": out.occlusion, "occlusion_2": out.occlusion_2, **captured}
