"""StyleGAN2/EG3D building blocks with equalized learning rate.

Only the inference behaviour of the official layers is reproduced. Parameters keep the official
names (``weight``, ``bias``, ``resample_filter``) so official checkpoints load unchanged; the
runtime gains (``1/sqrt(fan_in)``) are applied in ``forward`` exactly as the official layers do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}


def bias_act(x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "linear", dim: int = 1,
             gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Bias add, activation, gain and optional clamp (EG3D ``bias_act`` reference semantics).

    Args:
        x: any shape; ``bias`` is broadcast along ``dim``.
        act: ``'linear'``, ``'relu'`` or ``'lrelu'`` (slope 0.2).
        gain: defaults to the activation's own gain (sqrt(2) for relu/lrelu, 1 for linear).
    """
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    gain = _ACTIVATION_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """The separable FIR filter EG3D stores as ``resample_filter``: ``outer(f, f) / sum(f)**2``."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer: ``y = act(x @ (W * lr/sqrt(in)).T + b * lr)``.

    Keys: ``weight [out, in]``, ``bias [out]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``[..., in]`` → ``[..., out]``."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            # addmm, as the official layer does, keeps the rounding identical.
            flat = x.reshape(-1, x.shape[-1])
            return torch.addmm(b.unsqueeze(0), flat, w.t()).reshape(*x.shape[:-1], self.out_features)
        y = x.matmul(w.t())
        return bias_act(y, b, act=self.activation, dim=y.ndim - 1)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalized-lr 2-D convolution without resampling: ``act(conv(x, W/sqrt(in*k*k)) + b)``.

    Keys: ``weight [out, in, k, k]``, ``bias [out]``, ``resample_filter [4, 4]`` (buffer stored by
    the official layer even when it does not resample).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", conv_clamp: float | None = None):
        super().__init__()
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x: ``[B, in, H, W]`` → ``[B, out, H, W]``."""
        w = self.weight.to(x.dtype) * self.weight_gain
        y = F.conv2d(x, w, padding=self.padding)
        act_gain = _ACTIVATION_GAIN[self.activation] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(y, b, act=self.activation, gain=act_gain, clamp=clamp)
