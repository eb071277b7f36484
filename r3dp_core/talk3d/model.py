"""Talk3D's trained networks as one module: the five checkpoint modules and the learned null token.

The official checkpoint (``Trainer.save_model_weights``) is a dict holding one plain ``state_dict()`` per module
(``deltaplane_predictor``, ``blink_encoder``, ``camera_encoder``, ``audio_net``, ``audio_att_net``), the bare
tensor ``null_vector`` ``[1, 1, 64]`` and training state (``epoch``, ``iter``, ``optimizer``, ``scheduler``, and
``superresolution`` after fine-tuning). :class:`Talk3DNetworks`' own state dict is exactly the flat form of it,
``<module>.<key>`` and bare ``null_vector`` (:func:`flatten_checkpoint`), so it loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_into
from .config import Talk3DConfig
from .deltaplane import DeltaplanePredictor
from .tokens import AudioAttNet, AudioNet, BlinkEncoder, CameraEncoder

#: The checkpoint's module entries, in the official order of ``Trainer.save_model_weights``.
MODULES = ("deltaplane_predictor", "blink_encoder", "camera_encoder", "audio_net", "audio_att_net")
#: Token order of ``Trainer.predict_delta_plane`` (with one null token).
TOKEN_ORDER = ("audio", "eye", "null", "rotation", "landmarks")


class Talk3DNetworks(nn.Module):
    """The five trained Talk3D modules + ``null_vector``; state-dict keys = the flat official checkpoint keys.

    At the defaults: 426 entries, 17,586,277 parameters (17,512,000 of them in the U-Net).
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        config.validate()
        self.deltaplane_predictor = DeltaplanePredictor(config)
        self.blink_encoder = BlinkEncoder(config)
        self.camera_encoder = CameraEncoder(config)
        self.audio_net = AudioNet(config)
        self.audio_att_net = AudioAttNet(config)
        self.null_vector = nn.Parameter(torch.randn(1, config.null_tokens, config.token_dim))

    def tokens_with_intermediates(self, audio_windows: torch.Tensor, eye: torch.Tensor, angle: torch.Tensor,
                                  landmark: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like :meth:`tokens`, also returning every token and the audio intermediates.

        Keys: ``audio_net_out`` ``[B, 8, 64]``, ``audio_att_weights`` ``[B, 8]``, ``audio``, ``eye``, ``null``,
        ``rotation``, ``landmarks`` (each ``[B, 1 (null: null_tokens), 64]``) and ``tokens`` ``[B, 5, 64]``.
        """
        features = self.audio_net(audio_windows)
        audio, weights = self.audio_att_net.forward_with_weights(features)
        batch = audio.shape[0]
        rotation, landmarks = self.camera_encoder(angle, landmark)
        out = {"audio_net_out": features, "audio_att_weights": weights, "audio": audio.unsqueeze(1),
               "eye": self.blink_encoder(eye), "null": self.null_vector.repeat(batch, 1, 1),
               "rotation": rotation, "landmarks": landmarks}
        out["tokens"] = torch.cat([out[name] for name in TOKEN_ORDER], dim=1)
        return out

    def tokens(self, audio_windows: torch.Tensor, eye: torch.Tensor, angle: torch.Tensor,
               landmark: torch.Tensor) -> torch.Tensor:
        """The conditioning tokens of ``Trainer.predict_delta_plane``, in the official order.

        Args:
            audio_windows: ``[B, 8, 44, 16]`` (:func:`~r3dp_core.talk3d.tokens.audio_windows`).
            eye: ``[B, 1]`` blink value (AU45_r, clipped to [0, 2]).
            angle: ``[B, 3]`` head pitch, yaw, roll in degrees.
            landmark: ``[B, 3, 2]`` nose tip, landmark 45, landmark 36 in [-1, 1] image coordinates.

        Returns:
            ``[B, 5, 64]``: audio, eye, null, rotation, landmarks.
        """
        return self.tokens_with_intermediates(audio_windows, eye, angle, landmark)["tokens"]

    def forward(self, planes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """ΔP ``[B, 96, 256, 256]`` for identity planes ``[B, 96, 256, 256]`` and tokens ``[B, 5, 64]``."""
        return self.deltaplane_predictor(planes, tokens)


def flatten_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The official nested checkpoint dict → the flat ``<module>.<key>`` / ``null_vector`` state dict.

    A dict that is already flat passes through. Training state (``epoch``, ``iter``, ``optimizer``, ``scheduler``)
    and the fine-tuned ``superresolution`` are left out: they are not part of these networks.
    """
    if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    flat: dict[str, torch.Tensor] = {}
    for name in MODULES:
        if name in checkpoint:
            flat.update({f"{name}.{key}": value for key, value in checkpoint[name].items()})
    if "null_vector" in checkpoint:
        flat["null_vector"] = checkpoint["null_vector"]
    return flat


def load_talk3d(checkpoint: Mapping[str, Any], config: Talk3DConfig | None = None,
                source: str = "Talk3D checkpoint") -> Talk3DNetworks:
    """:class:`Talk3DNetworks` with ``checkpoint``'s weights (nested or flat), loaded strictly; in eval mode."""
    model = Talk3DNetworks(config)
    load_into(model, flatten_checkpoint(checkpoint), source=source)
    return model.eval()
