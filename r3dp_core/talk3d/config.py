"""Hyper-parameters of Talk3D's trained networks (token encoders, audio nets, Deltaplane U-Net)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Talk3DConfig:
    """Every hyper-parameter of the five trained Talk3D modules and the null token, in one place.

    The defaults are the official values (``Trainer.setup_models``: ``Deltaplane_Predictor(96)``,
    ``AudioNet(44, 64)``, ``AudioAttNet(64)``, ``Blinkencoder(16, 64, 3)``, ``Cameraencoder(16, 64, 3)``,
    ``null_vector = randn(1, 1, 64)``), so ``Talk3DConfig()`` builds modules whose state-dict keys and shapes are
    those of an official checkpoint. Smaller values of the same fields build fast models for tests.
    """

    # --- conditioning tokens -------------------------------------------------------------------------------------
    token_dim: int = 64
    """Width of every conditioning token (official ``dim_aud`` and the encoders' output width)."""
    audio_classes: int = 44
    """Audio feature channels: wav2vec2 CTC logit classes of the ``aud_eo.npy`` layout."""
    audio_window: int = 16
    """Audio feature frames per video frame (``win_size``); halved by each AudioNet conv down to 1."""
    audio_conv_channels: tuple[int, ...] = (32, 32, 64, 64)
    """AudioNet's stride-2 Conv1d widths (``encoder_conv.{0,2,4,6}``); ``2**len`` must equal ``audio_window``."""
    audio_context: int = 8
    """Video frames of audio the attention net smooths over (``seq_len``; window ``[i-4, i+4)`` of frame i)."""
    attention_conv_channels: tuple[int, ...] = (16, 8, 4, 2, 1)
    """AudioAttNet's Conv1d widths (``attentionConvNet.{0,2,4,6,8}``); the last must be 1."""
    audio_leaky_slope: float = 0.02
    """LeakyReLU slope of AudioNet and AudioAttNet (after every conv, the last one too)."""
    eye_frequencies: int = 16
    """NeRF positional-encoding octaves of the blink value (AU45): 1 → 33 features."""
    angle_frequencies: int = 10
    """Octaves of the head angles (pitch, yaw, roll in degrees): 3 → 63 features."""
    landmark_frequencies: int = 6
    """Octaves of the flattened landmarks (nose tip, lm45, lm36; x, y): 6 → 78 features."""
    landmark_points: int = 3
    """2-D landmarks per frame fed to the landmark encoder."""
    mlp_layers: int = 3
    """Linear layers of each token encoder's ``simpleMLP`` (ReLU between them, none after the last)."""
    null_tokens: int = 1
    """Learned null tokens (official ``--num_null_vector 1``); the token sequence has ``4 + null_tokens`` items."""

    # --- Deltaplane U-Net --------------------------------------------------------------------------------------
    triplane_channels: int = 32
    """Channels per plane of the EG3D tri-plane (``img_channels = 3 * 32 = 96``)."""
    plane_resolution: int = 256
    """Tri-plane side; the bottleneck is ``plane_resolution / 2**len(down_channels)`` (32) per side."""
    down_channels: tuple[int, ...] = (64, 128, 256)
    """Per-plane output channels of the three encoder blocks (``Downnet{1,2,3}_*``); each halves the side."""
    up_channels: tuple[int, ...] = (128, 64, 32)
    """Per-plane output channels of the three decoder blocks (``Upnet{1,2,3}_*``); each doubles the side. The
    first two must equal the encoder's skip widths (``down_channels[1]``, ``down_channels[0]``), the last
    ``triplane_channels``."""
    unet_leaky_slope: float = 0.01
    """LeakyReLU slope after each conv + BatchNorm of the U-Net blocks (``nn.LeakyReLU()`` default)."""
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    transformer_layers: int = 2
    """Transformer blocks in the bottleneck (``Transformer2DModel(..., n_layers=2)``)."""
    attention_heads: int = 4
    attention_head_dim: int = 64
    """Per-head width; ``heads * head_dim`` must equal ``down_channels[-1]`` (256). Softmax scale 1/sqrt(64)."""
    norm_groups: int = 32
    """GroupNorm groups of the bottleneck's input norm (per plane)."""
    norm_eps: float = 1e-5
    """eps of that GroupNorm and of the blocks' LayerNorms."""
    feed_forward_mult: int = 4
    """GEGLU hidden width = ``mult * 256`` (1024); its input projection is twice that (2048)."""

    @property
    def bottleneck_resolution(self) -> int:
        return self.plane_resolution >> len(self.down_channels)

    @property
    def bottleneck_channels(self) -> int:
        return self.down_channels[-1]

    @property
    def num_tokens(self) -> int:
        return 4 + self.null_tokens

    def validate(self) -> None:
        """Raise ``ValueError`` for inconsistent fields."""
        if 2 ** len(self.audio_conv_channels) != self.audio_window:
            raise ValueError(f"audio_window {self.audio_window} needs {self.audio_window.bit_length() - 1} "
                             f"stride-2 convs, got {len(self.audio_conv_channels)} audio_conv_channels")
        if self.attention_conv_channels[-1] != 1:
            raise ValueError("attention_conv_channels must end with 1 (one attention logit per frame)")
        if self.audio_context % 2:
            raise ValueError(f"audio_context must be even (window [i-n/2, i+n/2)), got {self.audio_context}")
        if len(self.up_channels) != len(self.down_channels):
            raise ValueError("down_channels and up_channels must have the same length")
        skips = tuple(reversed(self.down_channels[:-1]))
        if tuple(self.up_channels[:-1]) != skips or self.up_channels[-1] != self.triplane_channels:
            raise ValueError(f"up_channels {self.up_channels} must be the skip widths {skips} then "
                             f"triplane_channels {self.triplane_channels}")
        if self.attention_heads * self.attention_head_dim != self.bottleneck_channels:
            raise ValueError("attention_heads * attention_head_dim must equal down_channels[-1]")
        if self.plane_resolution % (1 << len(self.down_channels)):
            raise ValueError(f"plane_resolution {self.plane_resolution} is not divisible by "
                             f"2**{len(self.down_channels)}")
