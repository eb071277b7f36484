"""OSGDecoder: the small MLP that turns tri-plane features into density and 32 feature channels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers.eg3d import FullyConnectedLayer


@dataclass
class OSGDecoderConfig:
    """Official sizes: 32 plane channels -> 64 hidden -> 1 density + 32 features."""

    in_features: int = 32
    hidden_features: int = 64
    out_features: int = 32


class OSGDecoder(nn.Module):
    """Mean of the three plane features -> FC -> Softplus -> FC (equalized-lr layers, gain 1/sqrt(in)).

    State-dict keys ``net.0.{weight,bias}`` ``[64,32],[64]`` and ``net.2.{weight,bias}`` ``[33,64],[33]``,
    so it mounts as ``decoder`` of the full model. The official decoder also receives the ray directions
    and ignores them; they are not passed here.
    """

    def __init__(self, config: OSGDecoderConfig | None = None):
        super().__init__()
        self.config = config or OSGDecoderConfig()
        c = self.config
        self.net = nn.Sequential(
            FullyConnectedLayer(c.in_features, c.hidden_features),
            nn.Softplus(),
            FullyConnectedLayer(c.hidden_features, 1 + c.out_features),
        )

    def forward(self, plane_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``plane_features [N,3,P,C]`` into ``features [N,P,32]`` in (-0.001, 1.001) and raw
        ``density [N,P,1]`` (the ray marcher applies ``softplus(density - 1)``)."""
        n_frames, _, n_points, channels = plane_features.shape
        x = self.net(plane_features.mean(1).reshape(n_frames * n_points, channels))
        x = x.reshape(n_frames, n_points, -1)
        # The sigmoid is widened slightly so that 0 and 1 are reachable, as in the official decoder.
        features = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        return features, x[..., :1]
