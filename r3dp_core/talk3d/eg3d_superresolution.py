"""EG3D's 8× "dual-channel" super-resolution (official ``SuperresolutionHybrid8XDC``), driven by real styles.

Talk3D keeps EG3D's stock super-resolution: two StyleGAN2 blocks take the 128² volume-rendered feature image
(32 channels, its first three the raw RGB) to a 512² RGB image. Unlike Real3D-Portrait's HTB-SR (all-ones
styles, folded weights) the styles here are the identity's learned ``w``: the last row of ``ws`` (``[B, 14,
512]`` from the mapping network) drives all six modulated layers. Noise is off (``superresolution_noise_mode
'none'``) and the output is not clamped.

Precision: the official module sets ``sr_num_fp16_res=4``, which makes both blocks fp16 **on CUDA only** (off
CUDA they force fp32) and clamps every block activation to ±256 (``conv_clamp=256``, on every device). r3dp
keeps the ±256 clamp everywhere but does not switch the dtype by device: the blocks run in the dtype r3dp's
device policy (:mod:`r3dp_core.device`) gives them, float32 unless the caller runs them under autocast (see
``eg3d_generator.prepare_for_inference``). Under fp16/bf16 autocast the modulated, demodulated weights are
still computed in float32 and only the convolutions run in low precision, so the official fp16
pre-normalisation of weights and styles (an overflow guard that is exact in real arithmetic) is not needed.
Parity is checked in float32, which is what the official code computes on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.layers.stylegan2 import SynthesisBlock


@dataclass(frozen=True)
class EG3DSuperresolutionConfig:
    """Sizes of ``SuperresolutionHybrid8XDC`` as VIVE3D builds it (1,649,578 parameters)."""

    channels: int = 32
    """Channels of the rendered feature image (the decoder's output width); its first 3 are the raw RGB."""
    input_resolution: int = 128
    """Side the blocks expect; other feature-image sizes are resized to it (bilinear, antialiased)."""
    img_resolution: int = 512
    """Output side: ``block0`` doubles to 256, ``block1`` to 512."""
    block0_channels: int = 256
    """Width of ``block0`` (256²)."""
    block1_channels: int = 128
    """Width of ``block1`` (512²)."""
    w_dim: int = 512
    """Style width."""
    sr_num_fp16_res: int = 4
    """Official ``sr_num_fp16_res``: > 0 sets ``conv_clamp = 256`` (and fp16 on CUDA officially, see module)."""
    antialias: bool = True
    """Antialiasing of the input resize (``sr_antialias``); unused at the official 128² input."""

    @property
    def conv_clamp(self) -> float | None:
        """±clamp of every block activation: 256 when ``sr_num_fp16_res > 0`` (official), else None."""
        return 256.0 if self.sr_num_fp16_res > 0 else None


class SuperresolutionHybrid8XDC(nn.Module):
    """Feature image ``[B, 32, 128, 128]`` + styles → RGB ``[B, 3, 512, 512]`` (unclamped).

    Keys (relative to ``superresolution.``): ``block0.*``, ``block1.*`` (each ``resample_filter``, ``conv0.*``,
    ``conv1.*``, ``torgb.*``; see :class:`~r3dp_core.models.layers.stylegan2.SynthesisBlock`).
    """

    def __init__(self, config: EG3DSuperresolutionConfig | None = None):
        super().__init__()
        self.config = cfg = config or EG3DSuperresolutionConfig()
        if cfg.img_resolution != 4 * cfg.input_resolution:
            raise ValueError(f"the 8X SR doubles twice: img_resolution must be 4 x input_resolution "
                             f"({4 * cfg.input_resolution}), got {cfg.img_resolution}")
        self.block0 = SynthesisBlock(cfg.channels, cfg.block0_channels, cfg.w_dim, 2 * cfg.input_resolution,
                                     conv_clamp=cfg.conv_clamp)
        self.block1 = SynthesisBlock(cfg.block0_channels, cfg.block1_channels, cfg.w_dim, cfg.img_resolution,
                                     conv_clamp=cfg.conv_clamp)

    def block_styles(self, ws: torch.Tensor) -> torch.Tensor:
        """The ``[B, 3, w_dim]`` styles each block uses: ``ws`` itself when it has 3 rows, else its last row
        repeated 3 times (official: ``ws[:, -1:].repeat(1, 3, 1)`` for the backbone's 14 rows); a ``[B, w_dim]``
        ``w`` is repeated too."""
        if ws.ndim == 2:
            ws = ws.unsqueeze(1)
        if ws.ndim != 3 or ws.shape[-1] != self.config.w_dim:
            raise InputError(f"ws must be [B, rows, {self.config.w_dim}] or [B, {self.config.w_dim}], "
                             f"got {list(ws.shape)}")
        return ws if ws.shape[1] == 3 else ws[:, -1:].expand(-1, 3, -1)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: str = "none",
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Super-resolve B frames.

        Args:
            rgb: ``[B, 3, h, w]`` raw rendered RGB (``x[:, :3]``), unclamped.
            x: ``[B, channels, h, w]`` rendered feature image; resized to ``input_resolution`` if needed.
            ws: ``[B or 1, rows, w_dim]`` styles (see :meth:`block_styles`); a batch of 1 serves every frame.
            noise_mode: ``'none'`` as officially configured; ``'const'``/``'random'`` for experiments.

        Returns:
            ``[B, 3, img_resolution, img_resolution]``, unclamped, in at least float32.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.channels:
            raise InputError(f"feature image must be [B, {cfg.channels}, H, W], got {list(x.shape)}")
        styles = self.block_styles(ws)
        if styles.shape[0] not in (1, x.shape[0]):
            raise InputError(f"ws batch {styles.shape[0]} must be 1 or match the {x.shape[0]} feature images")
        styles = styles.expand(x.shape[0], -1, -1).to(x.device)
        if x.shape[-1] != cfg.input_resolution:
            size = (cfg.input_resolution, cfg.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=cfg.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=cfg.antialias)
        x, rgb = self.block0(x, rgb, styles, noise_mode, generator)
        _, rgb = self.block1(x, rgb, styles, noise_mode, generator)
        return rgb
