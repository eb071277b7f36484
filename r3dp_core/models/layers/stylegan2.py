"""StyleGAN2 networks as EG3D uses them (inference only): synthesis layers and blocks, the synthesis network
(constant input, per-layer noise) and the mapping network (with truncation).

Pure PyTorch: the official CUDA plugins (``upfirdn2d``, ``bias_act``) are replaced by ordinary
convolutions that compute the same functions. Parameter and buffer names match the official layers
(``weight``, ``bias``, ``noise_strength``, ``noise_const``, ``resample_filter``, ``affine.*``, ``const``,
``w_avg``, ``embed.*``, ``fc<i>.*``) so official checkpoints load with ``strict=True``.

Every modulated layer takes its style from ``w``. When ``w`` is ``None`` the layer uses the constant
style of an all-ones ``w`` — what Real3D-Portrait's super-resolution always feeds — and the modulated,
demodulated weight no longer depends on the sample; :meth:`fold_constant_style` then caches it once so a
batch of frames runs through one ordinary convolution.

Noise (``noise_mode``): ``'none'`` adds nothing (both super-resolutions), ``'const'`` adds the stored
``noise_const * noise_strength`` (EG3D's backbone as Talk3D runs it), ``'random'`` fresh Gaussian noise per
sample times ``noise_strength``. It is added after the convolution, before bias and activation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .eg3d import FullyConnectedLayer, bias_act, setup_filter

_DEMODULATION_EPS = 1e-8
_LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("none", "const", "random")


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


def _check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, not {noise_mode!r}")


class SynthesisLayer(_ConstantStyleMixin, nn.Module):
    """Modulated 3×3 convolution with demodulation, noise, bias and LeakyReLU(0.2)·√2 (StyleGAN2
    ``SynthesisLayer``), optionally clamped to ``±conv_clamp``.

    ``up=2`` upsamples by two first. Noise follows ``noise_mode`` (module docstring); the SRs run with
    ``'none'``, where ``noise_const`` and ``noise_strength`` only exist so checkpoints load.

    Keys: ``weight [O,I,k,k]``, ``bias [O]``, ``noise_strength []``, ``noise_const [res,res]``,
    ``resample_filter [4,4]``, ``affine.{weight [I,w_dim], bias [I]}``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, conv_clamp: float | None = None):
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"SynthesisLayer supports up=1 or up=2, not {up}")
        if up == 2 and kernel_size != 3:
            raise ValueError("the upsampling SynthesisLayer is implemented for 3x3 kernels only")
        self.up = up
        self.resolution = resolution
        self.padding = kernel_size // 2
        #: activations are clamped to ±conv_clamp after the activation gain (official ``act_clamp``); None: no clamp
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter())
        self._init_folding()

    def noise(self, batch: int, noise_mode: str, like: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The noise added to the ``[batch, O, res, res]`` convolution output: None (``'none'``), the stored
        ``noise_const * noise_strength`` ``[res, res]`` (``'const'``) or ``randn([batch,1,res,res]) *
        noise_strength`` (``'random'``, drawn with ``generator`` on its device, else on ``like``'s)."""
        _check_noise_mode(noise_mode)
        if noise_mode == "none":
            return None
        if noise_mode == "const":
            return (self.noise_const * self.noise_strength).to(like.dtype)
        device = generator.device if generator is not None else like.device
        noise = torch.randn(batch, 1, self.resolution, self.resolution, generator=generator, device=device)
        return (noise.to(like.device) * self.noise_strength).to(like.dtype)

    def effective_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``w [B, w_dim]`` → modulated, demodulated weight ``[B, O, I, k, k]``."""
        return modulated_weight(self.weight, self.affine(w), demodulate=True)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None, noise_mode: str = "none",
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``x [B, I, H, W]``, ``w [B, w_dim]`` or None (all-ones style) → ``[B, O, H*up, W*up]``.

        ``noise_mode``: ``'none'`` (default), ``'const'`` or ``'random'`` (drawn with ``generator``).
        """
        noise = self.noise(x.shape[0], noise_mode, x, generator)
        if w is None:
            weight, groups, batch = self.constant_style_weight(), 1, None
        else:
            # One grouped convolution with per-sample weights (the official fused_modconv path).
            batch = x.shape[0]
            weight, groups = self.effective_weight(w).flatten(0, 1), batch
            x = x.reshape(1, -1, *x.shape[2:])
        weight, bias = weight.to(x.dtype), self.bias.to(x.dtype)
        # The bias joins the (last) convolution unless the batch is folded into its groups or noise comes first.
        conv_bias = bias if batch is None and noise is None else None
        if self.up == 2:
            y = upsampling_conv2d(x, weight, self.resample_filter, groups=groups, bias=conv_bias)
        else:
            y = F.conv2d(x, weight, conv_bias, padding=self.padding, groups=groups)
        if batch is not None:
            y = y.reshape(batch, -1, *y.shape[2:])
        if noise is not None:
            y = y + noise.to(y.dtype)
        if conv_bias is None:
            y = bias_act(y, bias)
        y = lrelu_with_gain(y)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class ToRGBLayer(_ConstantStyleMixin, nn.Module):
    """Modulated 1×1 convolution without demodulation, plus bias (StyleGAN2 ``ToRGBLayer``), optionally
    clamped to ``±conv_clamp``.

    The style is ``affine(w) / sqrt(I)``. Keys: ``weight [C,I,1,1]``, ``bias [C]``, ``affine.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
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
        return bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """StyleGAN2 'skip' block with ×2 upsampling: ``conv0`` (up) → ``conv1``; ``img = up(img) + torgb(x)``.

    With ``in_channels=0`` it is the network's first block: a learned constant ``const [O,res,res]`` replaces
    the input and ``conv0`` (``x = conv1(const)``; ``img = torgb(x)``).

    Keys: ``resample_filter``, ``const`` (first block only), ``conv0.*`` (others), ``conv1.*``, ``torgb.*``.
    ``ws [B, num_conv + num_torgb, w_dim]`` feeds conv0, conv1 and torgb in that order; ``ws=None`` means the
    all-ones style everywhere. The image is accumulated in at least float32 (the official block casts the
    ToRGB output to float32).
    """

    upsamples = True

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int = 3,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if self.upsamples else 1,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        #: style rows used by the convolutions and by the ToRGB layer (official ``num_conv``/``num_torgb``)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def _layers(self) -> tuple[nn.Module, ...]:
        return (self.conv1, self.torgb) if self.in_channels == 0 else (self.conv0, self.conv1, self.torgb)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor | None = None,
                noise_mode: str = "none", generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B,I,H,W]``, ``img [B,3,H,W]`` → ``x [B,O,2H,2W]``, ``img [B,3,2H,2W]`` (H,W kept without up).

        The first block (``in_channels=0``) takes ``x=None, img=None`` and makes ``B = ws.shape[0]`` (1 when
        ``ws`` is None) samples of size ``res``. ``noise_mode``/``generator``: see :class:`SynthesisLayer`.
        """
        rows = self.num_conv + self.num_torgb
        if ws is None:
            styles = [None] * rows
        elif ws.ndim != 3 or ws.shape[1] != rows:
            raise ValueError(f"this block takes ws [B, {rows}, w_dim], got {list(ws.shape)}")
        else:
            styles = ws.unbind(1)
        if self.in_channels == 0:
            batch = 1 if ws is None else ws.shape[0]
            x = self.const.unsqueeze(0).expand(batch, -1, -1, -1)
            x = self.conv1(x, styles[0], noise_mode, generator)
        else:
            x = self.conv0(x, styles[0], noise_mode, generator)
            x = self.conv1(x, styles[1], noise_mode, generator)
        y = self.torgb(x, styles[-1])
        y = y.to(torch.promote_types(y.dtype, torch.float32))
        if img is None:
            return x, y
        if self.upsamples:
            img = upsample2d(img, self.resample_filter)
        return x, img + y

    def fold_constant_styles(self) -> None:
        """Cache the all-ones-style weights of the modulated layers."""
        for layer in self._layers():
            layer.fold_constant_style()


class SynthesisBlockNoUp(SynthesisBlock):
    """:class:`SynthesisBlock` at constant resolution: plain ``conv0`` and ``img = img + torgb(x)``."""

    upsamples = False


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x * rsqrt(mean(x², dim) + eps)``: unit second moment along ``dim`` (StyleGAN2's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class SynthesisNetwork(nn.Module):
    """StyleGAN2 synthesis network, 'skip' architecture: blocks ``b4, b8, ..., b<img_resolution>``.

    ``b4`` starts from a learned constant; every later block doubles the resolution. Block ``b<r>`` has
    ``min(channel_base // r, channel_max)`` channels. The image is the sum of every block's ToRGB output,
    each upsampled (FIR ×2) to the next resolution.

    Style rows: ``num_ws = 2·(number of blocks)`` (14 at 256²). ``b4`` takes rows 0-1 (conv1, torgb); block
    ``k >= 1`` takes rows ``2k-1 ... 2k+1`` (conv0, conv1, torgb), so a block's ToRGB shares its row with the
    next block's conv0.

    Keys: ``b<r>.*`` as in :class:`SynthesisBlock`.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            self.add_module(f"b{res}", block)
        self.num_ws += 1  # the last block's ToRGB

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const",
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``ws [B, num_ws, w_dim]`` → image ``[B, img_channels, img_resolution, img_resolution]`` (float32 or
        wider). ``noise_mode`` ``'const'`` (default, as EG3D inference calls it), ``'none'`` or ``'random'``."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = img = None
        row = 0
        for block in self.blocks():
            x, img = block(x, img, ws.narrow(1, row, block.num_conv + block.num_torgb), noise_mode, generator)
            row += block.num_conv
        return img


class MappingNetwork(nn.Module):
    """StyleGAN2 mapping network ``(z, c) → ws`` with truncation.

    ``x = normalize_2nd_moment(z)``; with a condition, ``y = normalize_2nd_moment(embed(c))`` (linear FC,
    gain 1/sqrt(c_dim)) and ``x = cat([x, y])``; then ``num_layers`` FCs with lrelu·√2 and learning-rate
    multiplier ``lr_multiplier`` (runtime weight gain ``lr/sqrt(in)``, bias gain ``lr``); the result is
    repeated ``num_ws`` times and truncated towards ``w_avg``.

    Keys: ``embed.{weight [E,c_dim], bias [E]}`` (when ``c_dim > 0``), ``fc<i>.{weight, bias}``, ``w_avg [w_dim]``.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, embed_features: int | None = None, layer_features: int | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            self.add_module(f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                            lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """``z [B, z_dim]``, ``c [B, c_dim]`` → ``ws [B, num_ws, w_dim]``.

        Inputs are cast to the parameters' dtype first (the official network casts to float32; VIVE3D passes
        float64 z). With ``truncation_psi != 1`` the first ``truncation_cutoff`` rows (all when None) become
        ``w_avg.lerp(w, psi)``.
        """
        dtype = self.w_avg.dtype
        x = None
        if self.z_dim > 0:
            if z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [B, {self.z_dim}], got {list(z.shape)}")
            x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must be [B, {self.c_dim}], got {None if c is None else list(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = y if x is None else torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else min(int(truncation_cutoff), self.num_ws)
            truncated = self.w_avg.to(ws.dtype).lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws


class StyleGAN2Generator(nn.Module):
    """EG3D's ``StyleGAN2Backbone``: ``synthesis`` (:class:`SynthesisNetwork`) and ``mapping``
    (:class:`MappingNetwork`, ``num_ws`` from the synthesis). Keys ``synthesis.*``, ``mapping.*``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                          channel_max=channel_max, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier)
