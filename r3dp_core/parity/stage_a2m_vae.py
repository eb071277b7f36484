"""Parity stage ``a2m_vae``: HuBERT + f0 + mouth amplitude (+ recorded latent noise) → expression coefficients.

Official call: ``model.forward(batch, ret, train=False, temperature=T)`` with ``prior_dist.sample`` replaced
by the stored ``eps``. Every output named ``pred_t<T>`` (``p`` for the decimal point: ``pred_t0p2`` is
T = 0.2) is produced at its temperature, with ``dbg_z_p_t<T>``; the temperature-independent intermediates
are ``dbg_cond_proj``, ``dbg_g_sqz`` and ``dbg_f0_coarse``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..models.a2m_vae import A2MConfig, AudioToMotionVAE

if TYPE_CHECKING:
    from .case import ParityCase

_PRED = re.compile(r"^pred_t(\d+(?:p\d+)?)$")


def build_model(case: ParityCase) -> AudioToMotionVAE:
    """The case's A2M model, variant detected from its synthetic weights (strict), in eval mode."""
    weights = case.state_dict("audio2secc_vae")
    model = AudioToMotionVAE(A2MConfig.from_state_dict(weights))
    load_into(model, weights, source="synthetic audio2secc_vae weights")
    return model.eval()


def temperatures(case: ParityCase) -> dict[str, float]:
    """``{suffix: temperature}`` for every ``pred_t<suffix>`` output of the case."""
    found = {}
    for name in case.names("output"):
        if m := _PRED.match(name):
            found[m.group(1)] = float(m.group(1).replace("p", "."))
    return found


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full ``pred_t*`` ``[B,T,64]`` outputs and the ``dbg_*`` intermediates of ``case``."""
    model = build_model(case).to(device)
    hubert, f0, blink, mouth_amp = model.prepare_inputs(
        case.tensor("hubert"), case.tensor("f0") if model.config.use_pitch else None,
        case.tensor("blink"), case.tensor("mouth_amp"))
    eps = case.tensor("eps").to(device)
    y_mask = case.tensor("y_mask").to(device)[..., None]
    outputs: dict[str, torch.Tensor] = {}
    for suffix, temperature in temperatures(case).items():
        result = model.run(hubert, f0, blink, mouth_amp, eps * temperature)
        outputs[f"pred_t{suffix}"] = result.exp * y_mask
        outputs[f"dbg_z_p_t{suffix}"] = result.z_p
    outputs["dbg_cond_proj"] = result.cond
    outputs["dbg_g_sqz"] = result.g_sqz
    if result.f0_coarse is not None:
        outputs["dbg_f0_coarse"] = result.f0_coarse
    return outputs
