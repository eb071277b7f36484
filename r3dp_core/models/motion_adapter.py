"""Stage MA: SECC maps → tri-plane residual (official ``SegFormerSECC2PlaneBackbone``).

The canonical (identity, neutral), source and driving SECC renderings are stacked to 9 channels,
squeezed to 3 by an equalized-lr 1x1 ``prenet``, encoded by MiT-b0 + SegFormer head at 1/4
resolution and decoded by ``to_plane_cnn`` into a residual that is added to the canonical planes
of the I2P (``fuse_planes``). Runs once per driving frame; frames are independent, so batch them.

Mounted as ``secc_img2plane_backbone`` in the full model, the state-dict keys are exactly the
official ``secc_img2plane_backbone.*`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelFileError
from .layers.eg3d import Conv2dLayer
from .layers.segformer import MixVisionTransformer, SegFormerHead
from .layers.triplane_layout import channels_to_triplanes


@dataclass(frozen=True)
class MotionAdapterConfig:
    """Hyper-parameters of the motion adapter; the defaults are the released checkpoint's (MiT-b0).

    Smaller values of the same fields build a fast model for tests.
    """

    triplane_channels: int = 32
    """Features per plane (official ``triplane_hid_dim``)."""
    prenet_channels: int = 3
    """Channels the 9-channel SECC stack is reduced to before MiT."""
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (4, 4, 4, 4)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    head_channels: int = 256
    """SegFormer head embedding width."""
    plane_cnn_channels: int = 256

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> MotionAdapterConfig:
        """Config for an official checkpoint's ``config.yaml`` dict.

        Raises ``ModelFileError`` for architecture variants that this port does not implement.
        """
        expected = {"secc_segformer_scale": "b0", "pncc_cond_mode": "cano_src_tgt",
                    "triplane_feature_type": "triplane", "triplane_depth": 1}
        for key, value in expected.items():
            if hparams.get(key, value) != value:
                raise ModelFileError(f"unsupported checkpoint config: {key}={hparams[key]!r} (only {value!r} is "
                                     "implemented, as in the released Real3D-Portrait secc2plane_torso model)")
        return cls(triplane_channels=int(hparams.get("triplane_hid_dim", cls.triplane_channels)))


class MotionAdapter(nn.Module):
    """SECC (cano, src, tgt) → plane residual. Keys: ``prenet.*``, ``mix_vit.*``, ``fuse_head.*``,
    ``to_plane_cnn.{0,2,4,7}.*``.
    """

    def __init__(self, config: MotionAdapterConfig | None = None):
        super().__init__()
        self.config = config = config or MotionAdapterConfig()
        self.prenet = Conv2dLayer(3 * 3, config.prenet_channels, kernel_size=1)
        self.mix_vit = MixVisionTransformer(config.prenet_channels, config.embed_dims, config.num_heads,
                                            config.mlp_ratios, config.depths, config.sr_ratios)
        self.fuse_head = SegFormerHead(config.embed_dims, config.head_channels)
        width = config.plane_cnn_channels
        self.to_plane_cnn = nn.Sequential(
            nn.Conv2d(config.head_channels, width, 3, padding=1), nn.LeakyReLU(0.01),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.01),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.01),
            nn.UpsamplingBilinear2d(scale_factor=2),  # align_corners=True, as in the official model
            nn.Conv2d(width, 3 * config.triplane_channels, 3, padding=1),
        )

    def forward_with_intermediates(self, cond_cano: torch.Tensor, cond_src: torch.Tensor,
                                   cond_tgt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like ``forward`` but also returns the intermediate maps (for parity debugging).

        Keys: ``prenet`` ``[B,3,H,W]``, ``mix_vit`` (list of the 4 stage maps), ``fuse_head``
        ``[B,256,H/4,W/4]``, ``to_plane_cnn`` ``[B,96,H/2,W/2]`` (before the flips), ``planes``.
        """
        conds = (cond_cano, cond_src, cond_tgt)
        batch = max(c.shape[0] for c in conds)
        shape = cond_tgt.shape[1:]
        if len(shape) != 3 or shape[0] != 3 or shape[1] % 32 or shape[2] % 32:
            raise ValueError(f"expected SECC maps [B,3,H,W] with H, W multiples of 32, got {tuple(cond_tgt.shape)}")
        if any(c.shape[1:] != shape or c.shape[0] not in (1, batch) for c in conds):
            names = ("cond_cano", "cond_src", "cond_tgt")
            shapes = ", ".join(f"{name} {tuple(c.shape)}" for name, c in zip(names, conds))
            raise ValueError(f"SECC maps must all be [B or 1, {', '.join(map(str, shape))}] with one B; got {shapes}")
        x = torch.cat([c.expand(batch, *shape) for c in conds], dim=1)
        out: dict = {"prenet": self.prenet(x)}
        out["mix_vit"] = self.mix_vit(out["prenet"])
        out["fuse_head"] = self.fuse_head(out["mix_vit"])
        out["to_plane_cnn"] = self.to_plane_cnn(out["fuse_head"])
        out["planes"] = channels_to_triplanes(out["to_plane_cnn"])
        return out

    def forward(self, cond_cano: torch.Tensor, cond_src: torch.Tensor, cond_tgt: torch.Tensor) -> torch.Tensor:
        """SECC maps ``[B or 1, 3, H, W]`` in [-1, 1] (background -1; official H = W = 512).

        ``cond_cano`` (identity, neutral expression) and ``cond_src`` (first driving frame) are
        usually shared by all frames and may have batch 1; ``cond_tgt`` holds the driving frames.
        Returns the plane residual ``[B, 3, triplane_channels, H/2, W/2]`` (``[B,3,32,256,256]``).
        """
        return self.forward_with_intermediates(cond_cano, cond_src, cond_tgt)["planes"]


def fuse_planes(cano_planes: torch.Tensor, secc_planes: torch.Tensor) -> torch.Tensor:
    """Final tri-plane of a frame: ``cano_planes + secc_planes`` (official ``phase1_plane_fusion_mode='add'``).

    ``cano_planes`` ``[1 or B, 3, C, H, W]`` (one source image) broadcasts over the frames of
    ``secc_planes`` ``[B, 3, C, H, W]``.
    """
    return cano_planes + secc_planes
