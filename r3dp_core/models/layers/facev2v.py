"""Convolution blocks of the face-vid2vid style warping torso model (inference only).

Module nesting reproduces the official key layout (``.layers.{i}`` sequences, ``weight_orig``/``weight_u``/
``weight_v`` spectral-norm names, BatchNorm buffers) so checkpoints load with ``strict=True``. BatchNorm
and spectral norm always use their stored statistics, as the official modules do in ``eval()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm(nn.BatchNorm2d):
    """BatchNorm for ``[B,C,H,W]`` or ``[B,C,D,H,W]`` that always normalises with the running statistics.

    Same keys as ``nn.BatchNorm2d`` (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``); eps 1e-5. (The official SyncBatchNorm behaves like this in eval mode.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class SpectralNormConv2d(nn.Module):
    """2-D convolution whose weight is ``weight_orig / sigma`` with ``sigma = u · (W v)`` from the stored vectors.

    This is ``torch.nn.utils.spectral_norm`` in eval mode: no power iteration, so sigma is whatever the
    checkpoint's ``weight_u`` ``[O]`` and ``weight_v`` ``[I*k*k]`` give (not the exact top singular value).
    Keys: ``weight_orig [O,I,k,k]``, ``bias [O]``, buffers ``weight_u``, ``weight_v``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        super().__init__()
        self.padding = padding
        self.weight_orig = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # Checkpoints overwrite u and v; power iterations here only keep a fresh (unloaded) layer well scaled.
        u, matrix = torch.randn(out_channels), self.weight_orig.detach().flatten(1)
        for _ in range(10):
            v = F.normalize(matrix.t() @ u, dim=0)
            u = F.normalize(matrix @ v, dim=0)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)

    def sigma(self) -> torch.Tensor:
        """Scalar ``u · (W_mat v)`` with ``W_mat = weight_orig.reshape(O, -1)``."""
        return torch.dot(self.weight_u, torch.mv(self.weight_orig.flatten(1), self.weight_v))

    def weight(self) -> torch.Tensor:
        """The normalised convolution weight ``[O, I, k, k]``."""
        return self.weight_orig / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight().to(x.dtype), self.bias.to(x.dtype), padding=self.padding)


class ConvBlock(nn.Module):
    """Conv / norm / activation in the order of ``pattern`` (letters ``C``, ``N``, ``A``), under ``.layers``.

    Args:
        pattern: e.g. ``'CNA'`` (conv first) or ``'NAC'`` (pre-activation; the norm then sees ``in_channels``).
        dim: 2 or 3 (``Conv2d``/``Conv3d``).
        spectral_norm: use :class:`SpectralNormConv2d` (2-D only).
        leaky: LeakyReLU(0.2) instead of ReLU.
    """

    def __init__(self, pattern: str, in_channels: int, out_channels: int, kernel_size: int, dim: int = 2,
                 spectral_norm: bool = False, leaky: bool = False):
        super().__init__()
        padding = kernel_size // 2
        if spectral_norm:
            if dim != 2:
                raise ValueError("spectral-norm convolutions are only used in 2-D")
            conv = SpectralNormConv2d(in_channels, out_channels, kernel_size, padding)
        else:
            conv = (nn.Conv2d if dim == 2 else nn.Conv3d)(in_channels, out_channels, kernel_size, padding=padding)
        norm_channels = out_channels if pattern.index("C") < pattern.index("N") else in_channels
        make = {"C": lambda: conv, "N": lambda: FrozenBatchNorm(norm_channels),
                "A": lambda: nn.LeakyReLU(0.2) if leaky else nn.ReLU()}
        self.layers = nn.Sequential(*(make[letter]() for letter in pattern))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DownBlock(nn.Module):
    """``ConvBlock('CNA', 3×3)`` then 2×2 average pooling of H and W (depth kept in 3-D). Keys ``layers.0.*``."""

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2):
        super().__init__()
        pool = nn.AvgPool2d(2) if dim == 2 else nn.AvgPool3d((1, 2, 2))
        self.layers = nn.Sequential(ConvBlock("CNA", in_channels, out_channels, 3, dim=dim), pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class UpBlock(nn.Module):
    """Nearest ×2 upsampling of H and W (depth kept in 3-D), then ``ConvBlock('CNA', 3×3)``. Keys ``layers.1.*``."""

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2, spectral_norm: bool = False):
        super().__init__()
        scale = 2 if dim == 2 else (1, 2, 2)
        self.layers = nn.Sequential(nn.Upsample(scale_factor=scale, mode="nearest"),
                                    ConvBlock("CNA", in_channels, out_channels, 3, dim=dim,
                                              spectral_norm=spectral_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResBlock(nn.Module):
    """Pre-activation residual block ``x + [NAC 3×3, NAC 3×3](x)``. Keys ``layers.{0,1}.layers.{0,2}.*``."""

    def __init__(self, channels: int, dim: int = 2, spectral_norm: bool = False):
        super().__init__()
        self.layers = nn.Sequential(*(ConvBlock("NAC", channels, channels, 3, dim=dim, spectral_norm=spectral_norm)
                                      for _ in range(2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)
