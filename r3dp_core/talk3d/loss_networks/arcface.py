"""ArcFace IR-SE50, the face-identity network of Talk3D's identity loss (spec §3.1).

The network is ``Backbone(112, 50, 'ir_se')`` of pSp/e4e (``models/encoders/model_irse.py``, itself from
TreB1eN/InsightFace_Pytorch), weights ``model_ir_se50.pth`` with its key names: ``input_layer.*`` (3×3 conv,
BatchNorm, PReLU), ``body.0`` … ``body.23`` (IR-SE bottlenecks in four stages of 3, 4, 14, 3 units, the first unit
of each stage with stride 2), ``output_layer.*`` (BatchNorm2d, dropout, flatten, Linear 512·7·7→512, BatchNorm1d).
Each bottleneck: ``res_layer`` = BN, 3×3 conv, PReLU, 3×3 conv (the stride), BN, squeeze-excitation (reduction 16);
``shortcut_layer`` = a strided 1×1 max-pool (same width) or a strided 1×1 conv + BN (wider); output = sum.

Talk3D's ``IDLoss`` feeds the whole (face-masked) 512² image through ``AdaptiveAvgPool2d(112)`` — no face crop, unlike
pSp — and compares the L2-normalised embeddings; :class:`IdentityEncoder` does the same pooling first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .frozen import FrozenNetwork

INPUT_SIZE = 112
EMBEDDING_DIM = 512
#: IR-SE50: (input width, width, units) of the four stages.
STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
SE_REDUCTION = 16


def _pooling_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """``[size_out, size_in]``: row ``i`` averages inputs ``⌊i·n/m⌋ … ⌈(i+1)·n/m⌉ - 1``, PyTorch's adaptive windows."""
    rows = torch.arange(size_out)
    starts = (rows * size_in) // size_out
    ends = ((rows + 1) * size_in + size_out - 1) // size_out
    columns = torch.arange(size_in)
    inside = (columns[None, :] >= starts[:, None]) & (columns[None, :] < ends[:, None])
    weights = inside.double() / (ends - starts).double()[:, None]
    return weights.to(device=like.device, dtype=like.dtype)


def adaptive_average_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` for ``[B,C,H,W]`` as two matrix products (the windows are rectangles, so
    the mean separates into rows and columns). MPS refuses the pooling itself when ``size`` does not divide H and W
    (Talk3D pools 512² to 112²); the products run and differentiate on every device."""
    if x.shape[-2:] == (size, size):
        return x
    rows = _pooling_matrix(x.shape[-2], size, x)
    columns = _pooling_matrix(x.shape[-1], size, x)
    return rows @ x @ columns.T


class SqueezeExcitation(nn.Module):
    """Channel gates from the spatial mean (keys ``fc1.weight``, ``fc2.weight``: 1×1 convs without bias)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit (``bottleneck_IR_SE``): ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        if in_channels == channels:
            # a 1×1 max-pool with a stride only subsamples; it has no weights
            self.shortcut_layer = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(channels))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            SqueezeExcitation(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IdentityEncoder(FrozenNetwork):
    """ArcFace IR-SE50 face embedding. ``forward(x)``: ``[B,3,H,W]`` RGB in [-1, 1], any size (pooled to 112²
    first, as Talk3D's ``IDLoss``) → ``[B,512]``, unit L2 norm. The identity loss of two images is
    ``1 - (f(a) * f(b)).sum(-1)``. Always in inference mode (BatchNorm running statistics, no dropout)."""

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False),
                                         nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_channels, channels, count in STAGES:
            units.append(BottleneckIRSE(in_channels, channels, stride=2))
            units += [BottleneckIRSE(channels, channels, stride=1) for _ in range(count - 1)]
        self.body = nn.Sequential(*units)
        final = INPUT_SIZE // 2 ** len(STAGES)           # 7
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Identity(),                               # the official dropout: off in inference mode
            nn.Flatten(),
            nn.Linear(512 * final * final, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"the identity encoder takes RGB images [B,3,H,W]; got {tuple(x.shape)}.")
        h = adaptive_average_pool(x, INPUT_SIZE)
        embedding = self.output_layer(self.body(self.input_layer(h)))
        # the official l2_norm divides by the norm without an epsilon
        return embedding / torch.norm(embedding, p=2, dim=1, keepdim=True)
