"""SegFormer-style transformer pieces shared by the I2P ViTs and the MiT-b0 motion-adapter encoder.

Tokens are row-major flattened feature maps: ``[B, N = H*W, C]``. The blocks have no positional
embedding; the 3x3 depth-wise convolution inside the Mix-FFN is what makes them position aware,
which is why every block needs the map size ``(H, W)`` next to its tokens.

Attribute names (``q``, ``kv``, ``proj``, ``sr``, ``norm``, ``fc1``, ``dwconv.dwconv``, ``fc2``,
``norm1``, ``norm2``, ``attn``, ``mlp``) are the official state-dict names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H*W, C]`` row-major tokens → ``[B, C, H, W]`` feature map."""
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` feature map → ``[B, H*W, C]`` row-major tokens."""
    return feature_map.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping windows (padding ``k//2``) followed by LayerNorm.

    Keys: ``proj.{weight,bias}``, ``norm.{weight,bias}``.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int, norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """x: ``[B, C_in, H, W]`` → (tokens ``[B, H'*W', D]``, H', W') with H' = ceil(H / stride)."""
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(map_to_tokens(x)), height, width


class SpatialReductionAttention(nn.Module):
    """Multi-head self-attention whose keys/values may come from a strided-conv downsampled map.

    With ``sr_ratio > 1`` keys and values are computed from ``norm(sr(x))``, a ``sr_ratio``-times
    smaller token map (this is what keeps the I2P's 128x128-token block affordable). ``kv`` packs
    k in its first ``dim`` outputs and v in the next ``dim``, each split into heads in order.

    Keys: ``q``, ``kv``, ``proj`` (Linear) and, only when ``sr_ratio > 1``, ``sr`` (Conv2d) and
    ``norm`` (LayerNorm).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 sr_norm_eps: float = 1e-5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: ``[B, N = height*width, dim]`` → ``[B, N, dim]``."""
        batch, num_tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).reshape(batch, num_tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(map_to_tokens(self.sr(tokens_to_map(x, height, width))))
        kv = self.kv(x).reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(head_dim)) v; the fused kernel avoids materialising the
        # 16384x4096-per-head attention matrix of the I2P's triplane block where it can.
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(batch, num_tokens, dim))


class TokenDepthwiseConv(nn.Module):
    """3x3 depth-wise convolution applied to tokens viewed as their feature map. Key: ``dwconv``."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: ``[B, H*W, C]`` → ``[B, H*W, C]``."""
        return map_to_tokens(self.dwconv(tokens_to_map(x, height, width)))


class MixFFN(nn.Module):
    """``fc2(GELU(dwconv(fc1(x))))`` with the exact (erf) GELU. Keys: ``fc1``, ``dwconv.dwconv``, ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = TokenDepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: ``[B, H*W, dim]`` → ``[B, H*W, dim]``."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))


class TransformerBlock(nn.Module):
    """Pre-norm block ``x += attn(norm1(x)); x += mlp(norm2(x))`` (drop-path is identity at inference).

    Keys: ``norm1``, ``attn.*``, ``norm2``, ``mlp.*``. ``norm_eps`` is the eps of ``norm1``/``norm2``
    (1e-5 in the I2P, 1e-6 in MiT); the spatial-reduction norm always uses 1e-5.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int = 1, qkv_bias: bool = True,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: ``[B, height*width, dim]`` → same shape."""
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)
