"""DeepLabV3 with a dilated ResNet (BasicBlock) encoder, as used by the I2P low-resolution branch.

The official model is segmentation_models_pytorch's DeepLabV3 with two changes: the encoder's
first convolution takes 5 channels (RGB + 2 coordinate channels) and the decoder has all its
BatchNorms removed (the convolutions there have no bias either). Output stride is 8: layer3 and
layer4 keep their resolution and use dilation 2 and 4 instead of stride 2 on *every* convolution
(smp's ``replace_strides_with_dilation``, padding ``(k//2)*d``).

Attribute names match the official state dict (``encoder.conv1``, ``encoder.layer3.0.downsample.1``,
``decoder.0.convs.4.1``, ``decoder.0.project.0``, ``decoder.1``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Keys: ``conv1``, ``bn1``, ``conv2``, ``bn2`` and, when the shape changes, ``downsample.{0,1}``
    (1x1 conv, BN).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, C_out, H/stride, W/stride]``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class DilatedResNet(nn.Module):
    """ResNet-18/34-style encoder with output stride 8 (no ``avgpool``/``fc``).

    Stem ``conv1`` 7x7/2 → BN → ReLU → maxpool 3/2, then four layers; layer2 has stride 2, layer3
    and layer4 use stride 1 with dilation 2 and 4. Only the last feature map is returned.
    """

    def __init__(self, in_channels: int = 5, blocks: tuple[int, ...] = (3, 4, 6, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError(f"need 4 stages, got blocks={blocks} widths={widths}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        in_ch = widths[0]
        for index, (num_blocks, width, stride, dilation) in enumerate(zip(blocks, widths, strides, dilations)):
            layer = [BasicBlock(in_ch, width, stride=stride, dilation=dilation)]
            layer += [BasicBlock(width, width, dilation=dilation) for _ in range(num_blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
            in_ch = width
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, widths[-1], H/8, W/8]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPPPooling(nn.Sequential):
    """Image-level ASPP branch: global average → 1x1 conv → ReLU → bilinear resize back. Key: ``1.weight``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``."""
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling without BatchNorm and without conv biases.

    Branches: 1x1 conv, one dilated 3x3 conv per rate, image pooling; each followed by ReLU. Their
    concatenation is projected by 1x1 conv → ReLU → Dropout(0.5) (identity at inference).
    Keys: ``convs.0.0``, ``convs.{1..R}.0``, ``convs.{R+1}.1``, ``project.0``.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (12, 24, 36)):
        super().__init__()
        branches = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU())]
        branches += [nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=False),
                                   nn.ReLU()) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3(nn.Module):
    """Dilated ResNet encoder + ``decoder = Sequential(ASPP, 3x3 conv)``; no segmentation head.

    The decoder's final 3x3 conv has no bias and no activation.
    """

    def __init__(self, in_channels: int = 5, blocks: tuple[int, ...] = (3, 4, 6, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512), decoder_channels: int = 256,
                 atrous_rates: tuple[int, ...] = (12, 24, 36)):
        super().__init__()
        self.encoder = DilatedResNet(in_channels, blocks, widths)
        self.decoder = nn.Sequential(
            ASPP(self.encoder.out_channels, decoder_channels, atrous_rates),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C_in, H, W]`` → ``[B, decoder_channels, H/8, W/8]``."""
        return self.decoder(self.encoder(x))
