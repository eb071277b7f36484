"""Stage I2P: one source image → canonical tri-plane (official ``Img2PlaneModel``, composite backbone).

Two branches look at the image with 2 extra coordinate channels: a DeepLabV3 + ViT branch at
1/8 resolution that sees the whole face (``low_reso_encoder`` → ``low_reso_vit``), and a shallow CNN
at 1/2 resolution for detail (``high_reso_encoder``). ``triplane_predictor_vit`` fuses both into
3 planes of ``triplane_channels`` features at half the input resolution.

Mounted as ``cano_img2plane_backbone`` in the full model, the state-dict keys are exactly the
official ``cano_img2plane_backbone.*`` keys. It runs once per source image; cache the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelFileError
from .layers.deeplab import DeepLabV3
from .layers.triplane_layout import channels_to_triplanes
from .layers.vit import OverlapPatchEmbed, TransformerBlock, tokens_to_map


@dataclass(frozen=True)
class I2PConfig:
    """Hyper-parameters of ``Img2PlaneModel``; the defaults are the released checkpoint's.

    Smaller values of the same fields build a fast model for tests.
    """

    triplane_channels: int = 32
    """Features per plane (official ``triplane_hid_dim``); the output has 3 planes."""
    encoder_blocks: tuple[int, ...] = (3, 4, 6, 3)
    """Basic blocks per ResNet stage (ResNet-34)."""
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] = (12, 24, 36)
    vit_dim: int = 1024
    """Token width of both ViTs; must be divisible by 4 (PixelShuffle(2) after the blocks)."""
    vit_heads: int = 4
    vit_mlp_ratio: float = 2.0
    low_reso_vit_depth: int = 5
    """Blocks in ``low_reso_vit`` (5 for ``img2plane_backbone_scale='standard'``)."""
    low_reso_vit_conv_channels: int = 128
    branch_channels: int = 96
    """Output channels of ``low_reso_vit`` and of ``high_reso_encoder``."""
    high_reso_channels: tuple[int, int] = (64, 96)
    """Width of ``high_reso_encoder.first`` and of its conv stack."""
    high_reso_num_convs: int = 4
    predictor_vit_depth: int = 1
    predictor_sr_ratio: int = 2
    predictor_conv_channels: tuple[int, int] = (256, 128)
    """Widths of ``first_conv`` and ``second_conv`` (before the patch embedding)."""
    predictor_after_cat_channels: tuple[int, int, int] = (256, 128, 128)

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> I2PConfig:
        """Config for an official checkpoint's ``config.yaml`` dict.

        Raises ``ModelFileError`` for architecture variants that this port does not implement.
        """
        expected = {"triplane_feature_type": "triplane", "triplane_depth": 1,
                    "img2plane_backbone_scale": "standard", "img2plane_input_mode": "rgb"}
        for key, value in expected.items():
            if hparams.get(key, value) != value:
                raise ModelFileError(f"unsupported checkpoint config: {key}={hparams[key]!r} (only {value!r} is "
                                     "implemented, as in the released Real3D-Portrait secc2plane_torso model)")
        return cls(triplane_channels=int(hparams.get("triplane_hid_dim", cls.triplane_channels)))


def append_coordinate_channels(img: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 5, H, W]`` with channels (R, G, B, row/H, col/H).

    Both coordinates are divided by H (official quirk; identical for square images). They are
    computed in float32, as the official integer grid divided by H is, and only then cast to the
    image dtype (bf16 cannot represent row indices above 256 exactly).
    """
    batch, _, height, width = img.shape
    rows = torch.arange(height, device=img.device, dtype=torch.float32) / height
    cols = torch.arange(width, device=img.device, dtype=torch.float32) / height
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).to(img.dtype).expand(batch, 2, height, width)
    return torch.cat([img, grid], dim=1)


class LowResolutionViT(nn.Module):
    """Transformer over the 1/8-resolution DeepLab features, decoded back to 1/2 resolution.

    patch_embed (3x3/2) → ``block1..blockN`` (no final norm) → PixelShuffle(2) → [bilinear x2
    (align_corners=True) → 3x3 conv → ReLU] twice → 3x3 ``final_conv``.
    """

    def __init__(self, in_channels: int, dim: int, num_heads: int, mlp_ratio: float, depth: int,
                 conv_channels: int, out_channels: int):
        super().__init__()
        self.depth = depth
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size=3, stride=2)
        for index in range(depth):
            self.add_module(f"block{index + 1}", TransformerBlock(dim, num_heads, mlp_ratio))
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.upsample = nn.UpsamplingBilinear2d(scale_factor=2)
        self.conv_after_upsample1 = nn.Conv2d(dim // 4, conv_channels, 3, padding=1)
        self.conv_after_upsample2 = nn.Conv2d(conv_channels, conv_channels, 3, padding=1)
        self.final_conv = nn.Conv2d(conv_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, in_channels, h, w]`` → ``[B, out_channels, 4h, 4w]`` (h, w even)."""
        tokens, height, width = self.patch_embed(x)
        for index in range(self.depth):
            tokens = getattr(self, f"block{index + 1}")(tokens, height, width)
        x = self.pixel_shuffle(tokens_to_map(tokens, height, width))
        x = self.relu(self.conv_after_upsample1(self.upsample(x)))
        x = self.relu(self.conv_after_upsample2(self.upsample(x)))
        return self.final_conv(x)


class HighResoEncoder(nn.Module):
    """Shallow full-detail branch: 7x7/2 ``first`` (no activation) → N x (3x3 conv + LeakyReLU 0.01) →
    3x3 ``final``.

    ``conv_layers`` keeps the official Sequential indices (convs at 0, 2, 4, ...).
    """

    def __init__(self, in_channels: int, first_channels: int, channels: int, num_convs: int, out_channels: int):
        super().__init__()
        self.first = nn.Conv2d(in_channels, first_channels, 7, stride=2, padding=3)
        layers: list[nn.Module] = []
        for index in range(num_convs):
            layers += [nn.Conv2d(first_channels if index == 0 else channels, channels, 3, padding=1),
                       nn.LeakyReLU(0.01)]
        self.conv_layers = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, in_channels, H, W]`` → ``[B, out_channels, H/2, W/2]``."""
        return self.final(self.conv_layers(self.first(x)))


class TriplanePredictorViT(nn.Module):
    """Fuses both branches at 1/2 resolution and predicts the channel-stacked planes.

    cat(low, high) → 2 x (3x3 conv + LeakyReLU) → patch_embed (3x3/2) → blocks with spatial-reduced
    attention → PixelShuffle(2) → cat(shuffled, low) → 3 x (3x3 conv + LeakyReLU) → 3x3 ``final_conv``.
    """

    def __init__(self, branch_channels: int, conv_channels: tuple[int, int], dim: int, num_heads: int,
                 mlp_ratio: float, depth: int, sr_ratio: int, after_cat_channels: tuple[int, int, int],
                 out_channels: int):
        super().__init__()
        self.depth = depth
        self.first_conv = nn.Conv2d(2 * branch_channels, conv_channels[0], 3, padding=1)
        self.second_conv = nn.Conv2d(conv_channels[0], conv_channels[1], 3, padding=1)
        self.patch_embed = OverlapPatchEmbed(conv_channels[1], dim, patch_size=3, stride=2)
        for index in range(depth):
            self.add_module(f"block{index + 1}", TransformerBlock(dim, num_heads, mlp_ratio, sr_ratio=sr_ratio))
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.first_conv_after_cat = nn.Conv2d(dim // 4 + branch_channels, after_cat_channels[0], 3, padding=1)
        self.second_conv_after_cat = nn.Conv2d(after_cat_channels[0], after_cat_channels[1], 3, padding=1)
        self.third_conv_after_cat = nn.Conv2d(after_cat_channels[1], after_cat_channels[2], 3, padding=1)
        self.final_conv = nn.Conv2d(after_cat_channels[2], out_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.01)

    def forward(self, feat_low: torch.Tensor, feat_high: torch.Tensor) -> torch.Tensor:
        """feat_low, feat_high: ``[B, branch_channels, H, W]`` → ``[B, out_channels, H, W]`` (H, W even)."""
        x = self.lrelu(self.first_conv(torch.cat([feat_low, feat_high], dim=1)))
        x = self.lrelu(self.second_conv(x))
        tokens, height, width = self.patch_embed(x)
        for index in range(self.depth):
            tokens = getattr(self, f"block{index + 1}")(tokens, height, width)
        x = torch.cat([self.pixel_shuffle(tokens_to_map(tokens, height, width)), feat_low], dim=1)
        x = self.lrelu(self.first_conv_after_cat(x))
        x = self.lrelu(self.second_conv_after_cat(x))
        x = self.lrelu(self.third_conv_after_cat(x))
        return self.final_conv(x)


class Img2PlaneModel(nn.Module):
    """Source image → canonical tri-plane. Keys: ``low_reso_encoder.*``, ``low_reso_vit.*``,
    ``high_reso_encoder.*``, ``triplane_predictor_vit.*``.
    """

    def __init__(self, config: I2PConfig | None = None):
        super().__init__()
        self.config = config = config or I2PConfig()
        in_channels = 3 + 2  # RGB + coordinate channels
        self.low_reso_encoder = DeepLabV3(in_channels, config.encoder_blocks, config.encoder_widths,
                                          config.aspp_channels, config.aspp_rates)
        self.low_reso_vit = LowResolutionViT(config.aspp_channels, config.vit_dim, config.vit_heads,
                                             config.vit_mlp_ratio, config.low_reso_vit_depth,
                                             config.low_reso_vit_conv_channels, config.branch_channels)
        self.high_reso_encoder = HighResoEncoder(in_channels, config.high_reso_channels[0],
                                                 config.high_reso_channels[1], config.high_reso_num_convs,
                                                 config.branch_channels)
        self.triplane_predictor_vit = TriplanePredictorViT(
            config.branch_channels, config.predictor_conv_channels, config.vit_dim, config.vit_heads,
            config.vit_mlp_ratio, config.predictor_vit_depth, config.predictor_sr_ratio,
            config.predictor_after_cat_channels, 3 * config.triplane_channels)

    def forward_with_intermediates(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like ``forward`` but also returns every branch output (for parity debugging).

        Keys: ``low_reso_encoder`` ``[B,256,H/8,W/8]``, ``low_reso_vit`` and ``high_reso_encoder``
        ``[B,96,H/2,W/2]``, ``triplane_predictor_vit`` ``[B,96,H/2,W/2]`` (before the plane flips),
        ``planes`` ``[B,3,32,H/2,W/2]`` (sizes for the default config).
        """
        if img.ndim != 4 or img.shape[1] != 3 or img.shape[-2] % 16 or img.shape[-1] % 16:
            raise ValueError(f"expected an RGB batch [B,3,H,W] with H, W multiples of 16, got {tuple(img.shape)}")
        x = append_coordinate_channels(img)
        out = {"low_reso_encoder": self.low_reso_encoder(x)}
        out["low_reso_vit"] = self.low_reso_vit(out["low_reso_encoder"])
        out["high_reso_encoder"] = self.high_reso_encoder(x)
        out["triplane_predictor_vit"] = self.triplane_predictor_vit(out["low_reso_vit"], out["high_reso_encoder"])
        out["planes"] = channels_to_triplanes(out["triplane_predictor_vit"])
        return out

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: ``[B, 3, H, W]`` RGB in [-1, 1] (non-head pixels -1; official H = W = 512).

        Returns the canonical planes ``[B, 3, triplane_channels, H/2, W/2]`` (``[B,3,32,256,256]``),
        H and W must be multiples of 16.
        """
        return self.forward_with_intermediates(img)["planes"]
