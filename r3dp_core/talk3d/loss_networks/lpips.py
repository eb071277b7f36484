"""LPIPS v0.1 with the AlexNet trunk (``lpips.LPIPS(net='alex')``), the perceptual loss of Talk3D (spec §3.1).

Two official files make it up (see ``r3dp_core.model_files``):

* torchvision's ImageNet AlexNet ``alexnet-owt-7be5be79.pth``: only its convolutional ``features.*`` are used
  (keys ``features.0.weight`` … ``features.10.bias``); its classifier is ignored;
* the LPIPS v0.1 linear heads ``alex.pth`` (richzhang/PerceptualSimilarity): one 1×1 convolution without bias
  per compared layer, keys ``lin0.model.1.weight`` … ``lin4.model.1.weight``, shapes ``[1, C, 1, 1]``.

The distance: both images are shifted and scaled by the LPIPS ``ScalingLayer`` constants, run through AlexNet;
at each of the five ReLU outputs the features are divided by their norm over channels (+1e-10), the squared
difference is weighted per channel by the head, averaged over space, and the five layers are summed.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError
from .frozen import FrozenNetwork

#: Channels of AlexNet's five ReLU outputs that LPIPS compares.
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
#: Indices in torchvision's ``alexnet().features`` of those ReLUs (relu1 … relu5).
COMPARED_RELU_INDICES = (1, 4, 7, 9, 11)
#: lpips' ``ScalingLayer``: ImageNet statistics expressed for inputs in [-1, 1].
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
#: lpips' ``normalize_tensor`` epsilon.
FEATURE_NORM_EPS = 1e-10


def alexnet_features() -> nn.Sequential:
    """torchvision's ``AlexNet.features`` up to relu5 (the last max-pool, index 12, has no weights and LPIPS
    stops before it), with the same indices so the official ``features.N.*`` keys load unchanged."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
    )


class LayerWeights(nn.Module):
    """lpips' ``NetLinLayer``: a per-channel weighting (1×1 conv to one channel, no bias). Position 0 of
    ``model`` is lpips' dropout, which is off in inference mode, so it is an identity here; it keeps the
    official key ``model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, squared_difference: torch.Tensor) -> torch.Tensor:
        return self.model(squared_difference)


def _unit_channel_norm(features: torch.Tensor) -> torch.Tensor:
    norm = torch.sqrt(torch.sum(features**2, dim=1, keepdim=True))
    return features / (norm + FEATURE_NORM_EPS)


class LPIPS(FrozenNetwork):
    """LPIPS v0.1, AlexNet trunk. ``forward(x, y)``: ``[B,3,H,W]`` RGB in [-1, 1] each (H, W ≥ 32) → ``[B]``
    distances ≥ 0 (0 for identical images). State-dict keys: ``features.*`` (torchvision AlexNet) and
    ``lin0.model.1.weight`` … ``lin4.model.1.weight`` (the LPIPS heads)."""

    def __init__(self):
        super().__init__()
        self.features = alexnet_features()
        for index, channels in enumerate(ALEXNET_CHANNELS):
            self.add_module(f"lin{index}", LayerWeights(channels))
        # constants, not weights: neither official file holds them
        self.register_buffer("shift", torch.tensor(SCALING_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALING_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def heads(self) -> list[LayerWeights]:
        return [getattr(self, f"lin{index}") for index in range(len(ALEXNET_CHANNELS))]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise InputError(f"LPIPS compares two RGB batches of the same shape [B,3,H,W]; got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}.")
        batch = x.shape[0]
        # both images in one pass: AlexNet has no batch-dependent layer, so this equals two separate passes
        h = (torch.cat([x, y]) - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        distance = x.new_zeros(batch)
        heads = iter(self.heads)
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in COMPARED_RELU_INDICES:
                features = _unit_channel_norm(h)
                weighted = next(heads)((features[:batch] - features[batch:]) ** 2)
                distance = distance + weighted.mean(dim=(1, 2, 3))
        return distance
