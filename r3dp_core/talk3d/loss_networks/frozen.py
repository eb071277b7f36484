"""The base of the loss networks: frozen, always in inference mode."""

from __future__ import annotations

from torch import nn


class FrozenNetwork(nn.Module):
    """A pretrained network used only to measure images: it never trains and never leaves inference mode.

    ``train(True)`` from a parent (a training loop switching everything it holds to training mode) is ignored, so
    dropout stays off and BatchNorm keeps its running statistics, as in the official losses (``lpips.LPIPS`` puts
    itself in eval mode; Talk3D's ``IDLoss`` calls ``facenet.eval()``). Gradients still flow to the inputs; the
    weights are set ``requires_grad=False`` when they are loaded.
    """

    def train(self, mode: bool = True):
        return super().train(False)
