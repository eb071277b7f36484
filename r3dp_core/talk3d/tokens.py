"""Talk3D's conditioning-token encoders: audio (AudioNet + AudioAttNet), blink, head rotation and landmarks.

Each encoder turns one per-frame signal into a ``token_dim`` (64) token; with the learned null token they form
the ``[B, 5, 64]`` sequence the Deltaplane U-Net cross-attends to (see :class:`~r3dp_core.talk3d.model.Talk3D`).
The audio nets are RAD-NeRF's; the official ``AudioAttNet`` works on one item at a time (``view(1, 8)``) and the
trainer loops over the batch. Here both audio nets are batched: every item is computed exactly as alone.

State-dict keys are the official ones (``encoder_conv.{0,2,4,6}``, ``encoder_fc1.{0,2}``,
``attentionConvNet.{0,2,4,6,8}``, ``attentionNet.0``, ``simplemlp.{in_layer,mlp_layers.*}``,
``encoder{1,2}.{in_layer,mlp_layers.*}``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import Talk3DConfig


def aud_eo_to_features(aud_eo: torch.Tensor) -> torch.Tensor:
    """``aud_eo.npy`` layout ``[N, window, classes]`` → ``[N, classes, window]`` (the dataset's ``permute(0,2,1)``)."""
    if aud_eo.ndim != 3:
        raise ValueError(f"expected aud_eo [N, window, classes], got {tuple(aud_eo.shape)}")
    return aud_eo.permute(0, 2, 1)


def audio_windows(features: torch.Tensor, frame_idx: torch.Tensor, context: int = 8) -> torch.Tensor:
    """The audio context of each frame (RAD-NeRF ``get_audio_features(att_mode=2)``, batched).

    Frame ``i`` takes the feature rows ``[i - context/2, i + context/2)``; rows outside ``[0, N)`` are zeros.

    Args:
        features: ``[N, C, W]`` per-video-frame audio features (``aud_eo_to_features``; official C=44, W=16).
        frame_idx: ``[B]`` integer frame indices.
        context: window length (official 8).

    Returns:
        ``[B, context, C, W]``.
    """
    count = features.shape[0]
    offsets = torch.arange(-(context // 2), context - context // 2, device=features.device)
    rows = frame_idx.to(features.device).long()[:, None] + offsets           # [B, context]
    inside = (rows >= 0) & (rows < count)
    picked = features[rows.clamp(0, max(count - 1, 0))]                      # [B, context, C, W]
    return torch.where(inside[..., None, None], picked, torch.zeros((), dtype=features.dtype,
                                                                       device=features.device))


def positional_encoding(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """NeRF positional encoding with the input included (official ``get_embedder(L, D)``).

    ``cat(x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x))``, each function applied to the whole
    ``D``-vector, so features are ordered frequency, then sin/cos, then dimension. The frequencies are exact powers
    of two, so ``x * 2^k`` is exact in any float type.

    Args:
        x: ``[..., D]``.

    Returns:
        ``[..., D * (1 + 2L)]``.
    """
    parts = [x]
    for k in range(num_frequencies):
        scaled = x * (2.0 ** k)
        parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


class Embedder(nn.Module):
    """:func:`positional_encoding` as a module (no parameters): ``[..., D]`` → ``[..., D * (1 + 2L)]``."""

    def __init__(self, input_dim: int, num_frequencies: int):
        super().__init__()
        self.input_dim = input_dim
        self.num_frequencies = num_frequencies

    @property
    def out_dim(self) -> int:
        return self.input_dim * (1 + 2 * self.num_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"Embedder expects [..., {self.input_dim}], got {tuple(x.shape)}")
        return positional_encoding(x, self.num_frequencies)


class SimpleMLP(nn.Module):
    """Official ``simpleMLP(in, out, n_layers)``: Linear → ReLU → (Linear → ReLU)* → Linear, no final activation.

    Keys: ``in_layer.{weight [out,in], bias}``, ``mlp_layers.{0..n-2}.{weight [out,out], bias}``.
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 3):
        super().__init__()
        if num_layers < 2:
            raise ValueError("simpleMLP needs at least 2 layers")
        self.in_layer = nn.Linear(in_dim, out_dim)
        self.mlp_layers = nn.ModuleList(nn.Linear(out_dim, out_dim) for _ in range(num_layers - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in]`` → ``[..., out]``."""
        x = F.relu(self.in_layer(x))
        last = len(self.mlp_layers) - 1
        for i, layer in enumerate(self.mlp_layers):
            x = layer(x)
            if i != last:
                x = F.relu(x)
        return x


class AudioNet(nn.Module):
    """Per-frame audio features → one audio feature vector (RAD-NeRF ``AudioNet(44, 64, win_size=16)``).

    Four Conv1d(k3, s2, p1) + LeakyReLU(0.02) reduce the 16 time steps to 1 (44→32→32→64→64 channels), then
    Linear → LeakyReLU(0.02) → Linear. Keys: ``encoder_conv.{0,2,4,6}.*``, ``encoder_fc1.{0,2}.*``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        config.validate()
        layers: list[nn.Module] = []
        width = config.audio_classes
        for out in config.audio_conv_channels:
            layers += [nn.Conv1d(width, out, kernel_size=3, stride=2, padding=1, bias=True),
                       nn.LeakyReLU(config.audio_leaky_slope)]
            width = out
        self.encoder_conv = nn.Sequential(*layers)
        self.encoder_fc1 = nn.Sequential(nn.Linear(width, config.token_dim), nn.LeakyReLU(config.audio_leaky_slope),
                                         nn.Linear(config.token_dim, config.token_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C, W]`` (official ``[8, 44, 16]`` per item, here any leading dims) → ``[..., token_dim]``."""
        shape = (self.config.audio_classes, self.config.audio_window)
        if tuple(x.shape[-2:]) != shape:
            raise ValueError(f"AudioNet expects [..., {shape[0]}, {shape[1]}] audio features, got {tuple(x.shape)}")
        lead = x.shape[:-2]
        y = self.encoder_conv(x.reshape(-1, *shape)).squeeze(-1)
        return self.encoder_fc1(y).reshape(*lead, -1)


class AudioAttNet(nn.Module):
    """Learned attention over the audio context (RAD-NeRF ``AudioAttNet(64, seq_len=8)``), batched.

    ``[B, 8, 64]`` → transpose → Conv1d(k3, p1) chain 64→16→8→4→2→1, each followed by LeakyReLU(0.02) (the last
    too) → ``[B, 8]`` logits → Linear(8, 8) → softmax over the 8 frames → ``Σ_t w_t x_t``. The official module only
    accepts one item (``view(1, 8)``); each item here is computed exactly as it would be alone.
    Keys: ``attentionConvNet.{0,2,4,6,8}.*``, ``attentionNet.0.*``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        config.validate()
        layers: list[nn.Module] = []
        width = config.token_dim
        for out in config.attention_conv_channels:
            layers += [nn.Conv1d(width, out, kernel_size=3, stride=1, padding=1, bias=True),
                       nn.LeakyReLU(config.audio_leaky_slope)]
            width = out
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(nn.Linear(config.audio_context, config.audio_context), nn.Softmax(dim=1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``[B, context]`` over the frames of ``x`` ``[B, context, dim]``."""
        if x.ndim != 3 or x.shape[1] != self.config.audio_context:
            raise ValueError(f"AudioAttNet expects [B, {self.config.audio_context}, dim], got {tuple(x.shape)}")
        logits = self.attentionConvNet(x.permute(0, 2, 1))                    # [B, 1, context]
        return self.attentionNet(logits.reshape(x.shape[0], self.config.audio_context))

    def forward_with_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, context, dim]`` → (smoothed feature ``[B, dim]``, weights ``[B, context]``)."""
        weights = self.attention(x)
        return (weights[..., None] * x).sum(dim=1), weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, context, dim]`` → ``[B, dim]``."""
        return self.forward_with_weights(x)[0]


class BlinkEncoder(nn.Module):
    """Blink value (OpenFace AU45_r in [0, 2]) → eye token (official ``Blinkencoder(16, 64, 3)``).

    Embedder(1, 16 octaves) → 33 → simpleMLP. The train-time jitter of the blink value belongs to the data
    loader, not here. Keys: ``simplemlp.*``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        config = config or Talk3DConfig()
        self.embed = Embedder(1, config.eye_frequencies)
        self.simplemlp = SimpleMLP(self.embed.out_dim, config.token_dim, config.mlp_layers)

    def forward(self, eye: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` (or ``[B]``) → ``[B, 1, token_dim]``."""
        if eye.ndim == 1:
            eye = eye[:, None]
        return self.simplemlp(self.embed(eye)).unsqueeze(1)


class CameraEncoder(nn.Module):
    """Head rotation and face landmarks → two tokens (official ``Cameraencoder(16, 64, 3)``).

    ``encoder1``: angles (pitch, yaw, roll in degrees) → Embedder(3, 10) → 63 → simpleMLP.
    ``encoder2``: 3 landmarks flattened to (x0, y0, x1, y1, x2, y2) → Embedder(6, 6) → 78 → simpleMLP.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        config = config or Talk3DConfig()
        self.embed_angle = Embedder(3, config.angle_frequencies)
        self.embed_landmark = Embedder(2 * config.landmark_points, config.landmark_frequencies)
        self.encoder1 = SimpleMLP(self.embed_angle.out_dim, config.token_dim, config.mlp_layers)
        self.encoder2 = SimpleMLP(self.embed_landmark.out_dim, config.token_dim, config.mlp_layers)

    def forward(self, angle: torch.Tensor, landmark: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``angle`` ``[B, 3]`` degrees, ``landmark`` ``[B, P, 2]`` or ``[B, 2P]`` in [-1, 1] →
        (rotation token ``[B, 1, D]``, landmark token ``[B, 1, D]``)."""
        landmark = landmark.flatten(1)
        rotation = self.encoder1(self.embed_angle(angle)).unsqueeze(1)
        position = self.encoder2(self.embed_landmark(landmark)).unsqueeze(1)
        return rotation, position
