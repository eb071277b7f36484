"""Parity stage ``t3d_tokens``: Talk3D's conditioning tokens (audio, eye, null, rotation, landmarks).

Official path: ``get_audio_features(att_mode=2)`` windows of ``aud_eo`` per frame, ``AudioNet`` and
``AudioAttNet`` per item (batched here), ``Blinkencoder``, ``Cameraencoder`` and the learned ``null_vector``,
concatenated as ``Trainer.predict_delta_plane`` does. Inputs: ``aud_eo [N,16,44]``, ``frame_idx [B]``, ``eye [B,1]``,
``angle [B,3]``, ``landmark [B,3,2]``. Outputs: ``tokens [B,5,64]``, each token, and the audio intermediates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..talk3d.model import Talk3DNetworks, load_talk3d
from ..talk3d.tokens import aud_eo_to_features, audio_windows

if TYPE_CHECKING:
    from .case import ParityCase


def weights_model(case: ParityCase, default: str = "talk3d") -> str:
    """The manifest the case's weights come from (``manifest_<model>.json``) as the ``model`` name."""
    manifest = (case.meta.get("weights_manifest") or {}).get("file", f"manifest_{default}.json")
    return manifest.removeprefix("manifest_").removesuffix(".json")


def build_model(case: ParityCase) -> Talk3DNetworks:
    """All Talk3D networks with the case's synthetic weights (flat official keys, strict), in eval mode."""
    model = weights_model(case)
    return load_talk3d(case.state_dict(model), source=f"synthetic weights of manifest_{model}.json")


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every token ``[B,1,64]``, ``tokens [B,5,64]``, ``aud_windows [B,8,44,16]``, ``audio_net_out [B,8,64]`` and
    ``audio_att_weights [B,8]`` of ``case``."""
    model = build_model(case).to(device)
    features = aud_eo_to_features(case.tensor("aud_eo").to(device))
    windows = audio_windows(features, case.tensor("frame_idx"), model.config.audio_context)
    out = model.tokens_with_intermediates(windows, case.tensor("eye").to(device), case.tensor("angle").to(device),
                                          case.tensor("landmark").to(device))
    return {"aud_windows": windows, "audio_net_out": out["audio_net_out"],
            "audio_att_weights": out["audio_att_weights"], "tok_audio": out["audio"], "tok_eye": out["eye"],
            "tok_null": out["null"], "tok_rot": out["rotation"], "tok_ldm": out["landmarks"], "tokens": out["tokens"]}
