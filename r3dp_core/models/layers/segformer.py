"""SegFormer: Mix Transformer (MiT) encoder and the all-MLP SegFormer head.

Used by the motion adapter with the MiT-b0 sizes. Attribute names follow the official state dict:
``patch_embed{1..4}``, ``block{1..4}.{j}``, ``norm{1..4}`` for the encoder; ``linear_c{1..4}.proj`` and
``linear_fuse.{conv,bn}`` (an mmcv ``ConvModule``) for the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .vit import OverlapPatchEmbed, TransformerBlock, map_to_tokens, tokens_to_map


class MixVisionTransformer(nn.Module):
    """Four-stage hierarchical transformer encoder (no classification head).

    Stage i: overlapping patch embedding (7x7/4 for the first stage, 3x3/2 after) → ``depths[i]``
    blocks with spatial-reduction ratio ``sr_ratios[i]`` → LayerNorm. Block and stage norms use
    ``norm_eps`` (1e-6 in MiT); patch-embedding and spatial-reduction norms use 1e-5.
    """

    def __init__(self, in_channels: int = 3, embed_dims: tuple[int, ...] = (32, 64, 160, 256),
                 num_heads: tuple[int, ...] = (1, 2, 5, 8), mlp_ratios: tuple[float, ...] = (4, 4, 4, 4),
                 depths: tuple[int, ...] = (2, 2, 2, 2), sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
                 qkv_bias: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        self.num_stages = len(embed_dims)
        if not len(num_heads) == len(mlp_ratios) == len(depths) == len(sr_ratios) == self.num_stages:
            raise ValueError("embed_dims, num_heads, mlp_ratios, depths and sr_ratios need one entry per stage")
        previous = in_channels
        for i, dim in enumerate(embed_dims):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(previous, dim, patch, stride))
            self.add_module(f"block{i + 1}", nn.ModuleList(
                TransformerBlock(dim, num_heads[i], mlp_ratios[i], sr_ratio=sr_ratios[i], qkv_bias=qkv_bias,
                                 norm_eps=norm_eps) for _ in range(depths[i])))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dim, eps=norm_eps))
            previous = dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: ``[B, C, H, W]`` → one map per stage, ``[B, embed_dims[i], H/(4*2^i), W/(4*2^i)]``."""
        features = []
        for i in range(self.num_stages):
            tokens, height, width = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"block{i + 1}"):
                tokens = block(tokens, height, width)
            x = tokens_to_map(getattr(self, f"norm{i + 1}")(tokens), height, width)
            features.append(x)
        return features


class TokenwiseLinear(nn.Module):
    """A Linear applied to every pixel of a feature map (official ``MLP``). Key: ``proj``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``."""
        return tokens_to_map(self.proj(map_to_tokens(x)), *x.shape[-2:])


class ConvBNReLU(nn.Module):
    """1x1 conv without bias → BatchNorm → ReLU (mmcv ``ConvModule`` naming). Keys: ``conv``, ``bn``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``."""
        return self.activate(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """All-MLP decoder: per-scale Linear to ``embed_dim``, resize to the finest scale, fuse.

    The coarser maps are resized bilinearly (align_corners=False) and concatenated coarsest first,
    ``[c4, c3, c2, c1]``, before ``linear_fuse``. Dropout is identity at inference and not modelled.
    """

    def __init__(self, in_channels: tuple[int, ...] = (32, 64, 160, 256), embed_dim: int = 256):
        super().__init__()
        self.num_scales = len(in_channels)
        for i, channels in enumerate(in_channels):
            self.add_module(f"linear_c{i + 1}", TokenwiseLinear(channels, embed_dim))
        self.linear_fuse = ConvBNReLU(self.num_scales * embed_dim, embed_dim)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: finest first, ``[B, in_channels[i], H_i, W_i]`` → ``[B, embed_dim, H_0, W_0]``."""
        size = features[0].shape[-2:]
        projected = []
        for i in reversed(range(self.num_scales)):
            x = getattr(self, f"linear_c{i + 1}")(features[i])
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            projected.append(x)
        return self.linear_fuse(torch.cat(projected, dim=1))
