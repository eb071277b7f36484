"""StyleGAN2 synthesis layers as EG3D's super-resolution module uses them (inference only).

Pure PyTorch: the official CUDA plugins (``upfirdn2d``, ``bias_act``) are replaced by ordinary
convolutions that compute the same functions. Parameter and buffer names match the official layers
(``weight``, ``bias``, ``noise_strength``, ``noise_const``, ``resample_filter``, ``affine.*``) so official
checkpoints load with ``strict=True``.

Every modulated layer takes its style from ``w``. When ``w`` is ``None`` the layer uses the constant
style of an all-ones ``w`` — what Real3D-Portrait's super-resolution always feeds — and the modulated,
demodulated weight no longer depends on the sample; :meth:`fold_constant_style` then caches it once so a
batch of frames runs through one ordinary convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .eg3d import FullyConnectedLayer, bias_act, setup_filter

_DEMODULATION_EPS = 1e-8
_LRELU_GAIN = math.sqrt(2.0)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, padding: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-insertion upsampling, zero padding, then a 2-D FIR filter (EG3D ``upfirdn2d``, no downsampling).

    Args:
        x: ``[B, C, H, W]``.
        f: ``[fh, fw]`` filter, applied as a true convolution (flipped), multiplied by ``gain``.
        up: upsampling factor; each input pixel lands on ``(up*i, up*j)``, the rest are zeros.
        padding: ``(x0, x1, y0, y1)`` zeros added left, right, top, bottom after upsampling (non-negative).
        bias: ``[C]`` added to the filtered result (in the same convolution), or None.

    Returns:
        ``[B, C, H*up + y0 + y1 - fh + 1, W*up + x0 + x1 - fw + 1]``.
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(batch, channels, height * up, width * up)
    # The convolution pads the symmetric part itself: a padded copy of x took half the filter's time on the CPU.
    x0, x1, y0, y1 = padding
    pad_x, pad_y = min(x0, x1), min(y0, y1)
    if (x0, x1, y0, y1) != (pad_x, pad_x, pad_y, pad_y):
        x = F.pad(x, (x0 - pad_x, x1 - pad_x, y0 - pad_y, y1 - pad_y))
    weight = (f.to(x.dtype) * gain).flip((0, 1))[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, weight, bias, padding=(pad_y, pad_x), groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """×2 upsampling with the 4×4 FIR ``f`` (gain 4 keeps the DC level): ``[B,C,H,W]`` → ``[B,C,2H,2W]``."""
    return upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4.0)


def modulated_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Per-sample modulated (and optionally demodulated) convolution weight.

    Args:
        weight: ``[O, I, k, k]``.
        styles: ``[B, I]`` scales of the input channels.

    Returns:
        ``[B, O, I, k, k]``; with ``demodulate`` every output filter has unit L2 norm (eps 1e-8).
    """
    w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + _DEMODULATION_EPS).rsqrt()
    return w


def upsampling_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, groups: int = 1,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """×2 upsampling 3×3 convolution as EG3D's ``conv2d_resample(up=2, padding=1)`` computes it.

    A stride-2 transposed convolution (``[B,C,H,W]`` → ``[B,O,2H+1,2W+1]``) followed by the FIR filter
    ``f`` with gain 4 and one pixel of zero padding per side → ``[B, O, 2H, 2W]``.

    Args:
        weight: ``[O, I/groups, 3, 3]`` in the ordinary (``conv2d``) layout.
        bias: ``[O]`` added to the result, or None.
    """
    out_channels, in_per_group, kh, kw = weight.shape
    w = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    x = F.conv_transpose2d(x, w.to(x.dtype), stride=2, groups=groups)
    return upfirdn2d(x, f, padding=(1, 1, 1, 1), gain=4.0, bias=bias)


def lrelu_with_gain(x: torch.Tensor) -> torch.Tensor:
    """``bias_act(x, act='lrelu')``: LeakyReLU(0.2)·√2. In place when autograd does not need ``x`` (inference):
    the layers' outputs are the largest tensors of the super-resolution, and fresh copies cost a third of their
    activation time on the CPU."""
    if torch.is_grad_enabled() and x.requires_grad:
        return bias_act(x, act="lrelu")
    return F.leaky_relu_(x, 0.2).mul_(_LRELU_GAIN)


def _drop_folded_weight(module: nn.Module, *args) -> None:
    module.folded_weight = None


class _ConstantStyleMixin:
    """Caching of the effective weight for the all-ones style; dropped whenever weights are (re)loaded."""

    def _init_folding(self) -> None:
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_load_state_dict_pre_hook(_drop_folded_weight)

    def constant_style_weight(self) -> torch.Tensor:
        """The effective ``[O, I, k, k]`` weight for ``w = ones`` (cached by :meth:`fold_constant_style`)."""
        if self.folded_weight is not None:
            return self.folded_weight
        ones = torch.ones(1, self.affine.in_features, device=self.weight.device, dtype=self.weight.dtype)
        return self.effective_weight(ones)[0]

    @torch.no_grad()
    def fold_constant_style(self) -> None:
        """Precompute the constant-style weight once (inference speed-up; state dict unchanged)."""
        self.folded_weight = None
        self.folded_weight = self.constant_style_weight().detach().clone()


class SynthesisLayer(_ConstantStyleMixin, nn.Module):
    """Modulated 3×3 convolution with demodulation, bias and LeakyReLU(0.2)·√2 (StyleGAN2 ``SynthesisLayer``).

    No noise is added (the official SR runs with ``noise_mode='none'``); ``noise_const`` and
    ``noise_strength`` exist only so checkpoints load. ``up=2`` upsamples by two first.

    Keys: ``weight [O,I,k,k]``, ``bias [O]``, ``noise_strength []``, ``noise_const [res,res]``,
    ``resample_filter [4,4]``, ``affine.{weight [I,w_dim], bias [I]}``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1):
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"SynthesisLayer supports up=1 or up=2, not {up}")
        if up == 2 and kernel_size != 3:
            raise ValueError("the upsampling SynthesisLayer is implemented for 3x3 kernels only")
        self.up = up
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter())
        self._init_folding()

    def effective_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``w [B, w_dim]`` → modulated, demodulated weight ``[B, O, I, k, k]``."""
        return modulated_weight(self.weight, self.affine(w), demodulate=True)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, I, H, W]``, ``w [B, w_dim]`` or None (all-ones style) → ``[B, O, H*up, W*up]``."""
        if w is None:
            weight, groups, batch = self.constant_style_weight(), 1, None
        else:
            # One grouped convolution with per-sample weights (the official fused_modconv path).
            batch = x.shape[0]
            weight, groups = self.effective_weight(w).flatten(0, 1), batch
            x = x.reshape(1, -1, *x.shape[2:])
        weight, bias = weight.to(x.dtype), self.bias.to(x.dtype)
        # The bias joins the (last) convolution unless the batch is folded into its groups.
        conv_bias = bias if batch is None else None
        if self.up == 2:
            y = upsampling_conv2d(x, weight, self.resample_filter, groups=groups, bias=conv_bias)
        else:
            y = F.conv2d(x, weight, conv_bias, padding=self.padding, groups=groups)
        if batch is not None:
            y = bias_act(y.reshape(batch, -1, *y.shape[2:]), bias)
        return lrelu_with_gain(y)


class ToRGBLayer(_ConstantStyleMixin, nn.Module):
    """Modulated 1×1 convolution without demodulation, plus bias (StyleGAN2 ``ToRGBLayer``).

    The style is ``affine(w) / sqrt(I)``. Keys: ``weight [C,I,1,1]``, ``bias [C]``, ``affine.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self._init_folding()

    def effective_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``w [B, w_dim]`` → modulated weight ``[B, C, I, 1, 1]``."""
        return modulated_weight(self.weight, self.affine(w) * self.weight_gain, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, I, H, W]``, ``w [B, w_dim]`` or None (all-ones style) → ``[B, C, H, W]``."""
        if w is None:
            y = F.conv2d(x, self.constant_style_weight().to(x.dtype))
        else:
            batch = x.shape[0]
            weight = self.effective_weight(w).flatten(0, 1).to(x.dtype)
            y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight, groups=batch).reshape(batch, -1, *x.shape[2:])
        return bias_act(y, self.bias.to(y.dtype))


class SynthesisBlock(nn.Module):
    """StyleGAN2 'skip' block with ×2 upsampling: ``conv0`` (up) → ``conv1``; ``img = up(img) + torgb(x)``.

    Keys: ``resample_filter``, ``conv0.*``, ``conv1.*``, ``torgb.*``. ``ws [B, 3, w_dim]`` feeds conv0,
    conv1 and torgb in that order; ``ws=None`` means the all-ones style everywhere.
    """

    upsamples = True

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int = 3):
        super().__init__()
        self.register_buffer("resample_filter", setup_filter())
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if self.upsamples else 1)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B,I,H,W]``, ``img [B,3,H,W]`` → ``x [B,O,2H,2W]``, ``img [B,3,2H,2W]`` (H,W kept without up)."""
        w0, w1, w2 = (None, None, None) if ws is None else ws.unbind(1)
        x = self.conv0(x, w0)
        x = self.conv1(x, w1)
        if self.upsamples:
            img = upsample2d(img, self.resample_filter)
        return x, img + self.torgb(x, w2)

    def fold_constant_styles(self) -> None:
        """Cache the all-ones-style weights of the three modulated layers."""
        for layer in (self.conv0, self.conv1, self.torgb):
            layer.fold_constant_style()


class SynthesisBlockNoUp(SynthesisBlock):
    """:class:`SynthesisBlock` at constant resolution: plain ``conv0`` and ``img = img + torgb(x)``."""

    upsamples = False
