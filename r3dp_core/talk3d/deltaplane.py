"""Talk3D's audio-guided attention U-Net (official ``Deltaplane_Predictor``): identity tri-plane + tokens → ΔP.

Layout: the EG3D tri-plane as the backbone emits it, ``[B, 3*C, H, W]`` with channel ``C*p + c`` = plane p
(p = 0, 1, 2, called ``xy``, ``yz``, ``zx`` in the official module names), no flips. The renderer uses
``P_ID + ΔP``.

* Encoder (``Downnet``): three levels of :func:`aware3d` feature exchange + one unshared conv block per plane
  (:class:`PlaneConvBlock`, FIR down-sampling), 96 → 192 → 384 → 768 channels, 256² → 32².
* Bottleneck (``transformer.0``, :class:`Transformer2DModel`): per-plane GroupNorm and input projection, then two
  blocks of per-plane self-attention, one cross-attention of all 3·1024 plane tokens to the conditioning tokens
  and a per-plane GEGLU feed-forward; a learned position embedding is added before every block.
* Decoder (``Upnet``): three levels of aware3d + per-plane conv block with FIR up-sampling; the encoder's level-2
  and level-1 outputs are added after the first and second level.

BatchNorm runs in the module's mode: running statistics in ``eval()``, batch statistics (and running-stat
updates, momentum 0.1) in ``train()`` as the official trainer does; ``nn.SyncBatchNorm.convert_sync_batchnorm``
gives the official multi-GPU statistics and keeps the keys. State-dict keys are the official ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers.eg3d import setup_filter
from ..models.layers.stylegan2 import upfirdn2d, upsample2d
from .config import Talk3DConfig

#: Official names of the three planes, in channel order.
PLANES = ("xy", "yz", "zx")


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """EG3D ``upfirdn2d.downsample2d`` with a 4×4 filter: pad 1 per side, FIR ``f`` (gain 1), keep every 2nd sample.

    ``[B, C, H, W]`` → ``[B, C, H/2, W/2]``.
    """
    return upfirdn2d(x, f, padding=(1, 1, 1, 1))[:, :, ::2, ::2]


def aware3d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-plane feature exchange (official ``aware3d``, ``split=True``).

    For plane p, the output holds (in plane order 0, 1, 2 along channels) its own features in its own slot,
    the *next* plane ``(p+1) % 3`` averaged over rows and read at column ``h`` (``mean_h' P[h', h]``), and the
    *previous* plane ``(p+2) % 3`` averaged over columns and read at row ``w`` (``mean_w' P[w, w']``); both
    broadcast over the other axis.

    Args:
        x: ``[B, 3C, H, H]`` (square planes).

    Returns:
        Three ``[B, 3C, H, H]`` tensors, the inputs of the ``xy``, ``yz`` and ``zx`` blocks.
    """
    batch, channels, height, width = x.shape
    if channels % 3 or height != width:
        raise ValueError(f"aware3d expects square tri-plane features [B, 3C, H, H], got {tuple(x.shape)}")
    planes = x.reshape(batch, 3, channels // 3, height, width).unbind(1)
    at_row = [p.mean(dim=-2).unsqueeze(-1).expand_as(p) for p in planes]      # (h, w) → mean_h' P[h', h]
    at_col = [p.mean(dim=-1).unsqueeze(-2).expand_as(p) for p in planes]      # (h, w) → mean_w' P[w, w']
    outputs = []
    for own in range(3):
        blocks = [None, None, None]
        blocks[own] = planes[own]
        blocks[(own + 1) % 3] = at_row[(own + 1) % 3]
        blocks[(own + 2) % 3] = at_col[(own + 2) % 3]
        outputs.append(torch.cat(blocks, dim=1))
    return outputs[0], outputs[1], outputs[2]


class PlaneConvBlock(nn.Module):
    """One plane's conv block (official ``SynthesisBlock_noaffine``, ``architecture='orig'``, up or down 2).

    Conv3×3 → BatchNorm → LeakyReLU(0.01) → Conv3×3 → BatchNorm → LeakyReLU(0.01) → FIR ×2 up- or down-sampling
    with the stored ``resample_filter`` (outer([1,3,3,1])/64). No residual or shortcut.

    Keys: ``conv{0,1}.{weight [O,I,3,3] / [O,O,3,3], bias [O]}``, ``bn{0,1}.{weight, bias, running_mean,
    running_var, num_batches_tracked}``, ``resample_filter [4,4]``.
    """

    def __init__(self, in_channels: int, out_channels: int, up: bool, config: Talk3DConfig | None = None):
        super().__init__()
        config = config or Talk3DConfig()
        self.up = up
        self.slope = config.unet_leaky_slope
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.register_buffer("resample_filter", setup_filter())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, I, H, W]`` → ``[B, O, 2H, 2W]`` (up) or ``[B, O, H/2, W/2]`` (down)."""
        x = F.leaky_relu(self.bn0(self.conv0(x)), self.slope)
        x = F.leaky_relu(self.bn1(self.conv1(x)), self.slope)
        return upsample2d(x, self.resample_filter) if self.up else downsample2d(x, self.resample_filter)


class _Level(nn.Module):
    """aware3d + the three per-plane blocks of one U-Net level, outputs concatenated in plane order."""

    def _blocks(self, prefix: str, level: int) -> list[PlaneConvBlock]:
        return [getattr(self, f"{prefix}{level}_{p}") for p in PLANES]

    @staticmethod
    def _run(blocks: list[PlaneConvBlock], x: torch.Tensor) -> torch.Tensor:
        return torch.cat([block(part) for block, part in zip(blocks, aware3d(x))], dim=1)


class DownNet(_Level):
    """Encoder (official ``Synthesis_Distributed_Down``): ``[B, 3C, H, H]`` → ``[B, 3·256, H/8, H/8]`` + skips.

    Keys: ``Downnet{1,2,3}_{xy,yz,zx}.*`` (:class:`PlaneConvBlock`).
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        width = config.triplane_channels
        for level, out in enumerate(config.down_channels, start=1):
            for p in PLANES:
                setattr(self, f"Downnet{level}_{p}", PlaneConvBlock(3 * width, out, up=False, config=config))
            width = out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns (bottleneck input ``[B, 3·256, H/8, H/8]``, skips ``[level-1 out, level-2 out]``)."""
        outputs = []
        for level in range(1, len(self.config.down_channels) + 1):
            x = self._run(self._blocks("Downnet", level), x)
            outputs.append(x)
        return x, outputs[:-1]


class UpNet(_Level):
    """Decoder (official ``Synthesis_Distributed_Up``): bottleneck ``[B, 768, 32, 32]`` + skips → ΔP.

    After level 1 the encoder's level-2 output is added, after level 2 its level-1 output; level 3 gives ΔP
    ``[B, 3·32, 256, 256]`` (no activation after the final up-sampling). Keys: ``Upnet{1,2,3}_{xy,yz,zx}.*``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        width = config.bottleneck_channels
        for level, out in enumerate(config.up_channels, start=1):
            for p in PLANES:
                setattr(self, f"Upnet{level}_{p}", PlaneConvBlock(3 * width, out, up=True, config=config))
            width = out

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        levels = len(self.config.up_channels)
        for level in range(1, levels + 1):
            x = self._run(self._blocks("Upnet", level), x)
            if level < levels:
                x = x + skips[-level]
        return x


def triplane_position_embedding(resolution: int = 32, dim: int = 256,
                                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The sinusoidal initialisation of the bottleneck's ``pos_emb`` (official ``sinusoidal_embedding_for_triplane``).

    ``PositionalEncoding3D(dim)`` (positional-encodings 6.0.1) on a ``resolution³`` grid: per axis
    ``c = 2·ceil(dim/6)`` features ``E(p)[2k] = sin(p ω_k)``, ``E(p)[2k+1] = cos(p ω_k)``, ``ω_k = 10000^(-2k/c)``;
    ``PE(x, y, z) = cat(E(x), E(y), E(z))[:dim]``. With ``Ē`` the mean of the two centre slices, plane 0's token
    (i, j) gets ``PE(i, j, Ē)``, plane 1's ``PE(Ē, i, j)``, plane 2's ``PE(i, Ē, j)``, side by side on channels.
    Computed in float64 and cast once. Real checkpoints train this parameter: load it, don't recompute it.

    Returns:
        ``[1, resolution², 3·dim]``, token ``t = i·resolution + j``.
    """
    c = 2 * math.ceil(dim / 6)
    c += c % 2
    inv = 1.0 / (10000.0 ** (torch.arange(0, c, 2, dtype=torch.float64) / c))
    phase = torch.arange(resolution, dtype=torch.float64)[:, None] * inv[None, :]
    table = torch.stack([phase.sin(), phase.cos()], dim=-1).reshape(resolution, c)          # E[pos]
    centre = 0.5 * (table[resolution // 2 - 1] + table[resolution // 2])
    rows = table[:, None, :].expand(resolution, resolution, c)
    cols = table[None, :, :].expand(resolution, resolution, c)
    mid = centre.expand(resolution, resolution, c)

    def pe(ex, ey, ez):
        return torch.cat([ex, ey, ez], dim=-1)[..., :dim].reshape(resolution * resolution, dim)

    return torch.cat([pe(rows, cols, mid), pe(mid, rows, cols), pe(rows, mid, cols)], dim=-1)[None].to(dtype)


class PerPlane(nn.Module):
    """Three unshared copies of a layer, ``{prefix}_xy``, ``{prefix}_yz``, ``{prefix}_zx``, each applied to its
    plane's third of ``dim``; the results are concatenated back in plane order."""

    def __init__(self, prefix: str, make: Callable[[], nn.Module], dim: int = -1):
        super().__init__()
        self.prefix, self.dim = prefix, dim
        for p in PLANES:
            self.add_module(f"{prefix}_{p}", make())

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        parts = x.chunk(3, dim=self.dim)
        return torch.cat([getattr(self, f"{self.prefix}_{p}")(part, *args) for p, part in zip(PLANES, parts)],
                         dim=self.dim)


class Attention(nn.Module):
    """Multi-head attention (diffusers-style ``Attention`` of the official file).

    ``to_q`` (no bias), ``to_k``/``to_v`` (no bias, from ``context_dim``), 4 heads × 64, softmax scale 1/8 over the
    keys, ``to_out.0`` (with bias). Keys: ``to_{q,k,v}.weight``, ``to_out.0.{weight, bias}``.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 4, head_dim: int = 64):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, T, query_dim]``, ``context`` ``[B, S, context_dim]`` (None: self-attention) →
        ``[B, T, query_dim]``."""
        context = x if context is None else context
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(context)), self._heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """``proj`` Linear(d, 2h) → chunk (x, gate) → ``x · GELU(gate)`` (exact erf GELU). Keys: ``proj.*``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward: ``net.0`` GEGLU(256 → 2·1024), ``net.1`` Dropout(0), ``net.2`` Linear(1024 → 256)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Dropout(0.0), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def split_planes(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, 3C]`` → ``[B, 3T, C]``: plane 0's tokens, then plane 1's, then plane 2's."""
    return torch.cat(x.chunk(3, dim=-1), dim=1)


def merge_planes(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_planes`: ``[B, 3T, C]`` → ``[B, T, 3C]``."""
    return torch.cat(x.chunk(3, dim=1), dim=-1)


class TransformerBlock(nn.Module):
    """One official ``DistributedTransformerBlock`` on ``[B, T, 3C]`` plane tokens.

    ``x += SA(LN1(x))`` per plane (attention within each plane's tokens); ``x += CA(LN2(x), tokens)`` with one
    shared cross-attention whose queries are all ``3T`` plane tokens; ``x += FF(LN3(x))`` per plane (GEGLU).
    Keys: ``norm{1,2,3}.norm_{p}``, ``attn1.att_{p}``, ``attn2``, ``ff.ff_{p}``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        config = config or Talk3DConfig()
        dim, heads, head_dim = config.bottleneck_channels, config.attention_heads, config.attention_head_dim

        def norm():
            return PerPlane("norm", lambda: nn.LayerNorm(dim, eps=config.norm_eps))

        self.norm1 = norm()
        self.attn1 = PerPlane("att", lambda: Attention(dim, None, heads, head_dim))
        self.norm2 = norm()
        self.attn2 = Attention(dim, config.token_dim, heads, head_dim)
        self.norm3 = norm()
        self.ff = PerPlane("ff", lambda: FeedForward(dim, config.feed_forward_mult))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, 3C]``, ``tokens`` ``[B, S, token_dim]`` → ``[B, T, 3C]``."""
        x = self.attn1(self.norm1(x)) + x
        x = merge_planes(self.attn2(split_planes(self.norm2(x)), tokens) + split_planes(x))
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    """The bottleneck (official ``Transformer2DModel(256, 256, n_layers=2, lin_proj_out=False)``).

    ``res = h``; per-plane GroupNorm(32); tokens ``t = row·W + col`` with plane-major channels; per-plane
    ``proj_in``; before each block ``x += pos_emb``; no output projection; back to ``[B, 3C, H, W]`` plus ``res``.
    Keys: ``pos_emb [1, H·W, 3C]``, ``norm.GN_{p}.*``, ``proj_in.lin_{p}.*``, ``transformer_blocks.{0,1}.*``.
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        config = config or Talk3DConfig()
        dim = config.bottleneck_channels
        self.norm = PerPlane("GN", lambda: nn.GroupNorm(config.norm_groups, dim, eps=config.norm_eps), dim=1)
        self.proj_in = PerPlane("lin", lambda: nn.Linear(dim, dim))
        self.transformer_blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.transformer_layers))
        # A trained parameter in real checkpoints (the official trainer enables its gradient when training).
        self.pos_emb = nn.Parameter(triplane_position_embedding(config.bottleneck_resolution, dim))

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``h`` ``[B, 3C, H, W]``, ``tokens`` ``[B, S, token_dim]`` → ``[B, 3C, H, W]``."""
        batch, channels, height, width = h.shape
        if self.pos_emb.shape[1:] != (height * width, channels):
            raise ValueError(f"bottleneck features {tuple(h.shape)} do not fit pos_emb {tuple(self.pos_emb.shape)}")
        x = self.norm(h).permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x + self.pos_emb, tokens)
        return x.reshape(batch, height, width, channels).permute(0, 3, 1, 2) + h


class DeltaplanePredictor(nn.Module):
    """Identity tri-plane + conditioning tokens → tri-plane residual ΔP (official ``Deltaplane_Predictor(96)``).

    Keys: ``Downnet.*``, ``transformer.0.*``, ``Upnet.*`` (383 entries, 17,512,000 parameters at the defaults).
    """

    def __init__(self, config: Talk3DConfig | None = None):
        super().__init__()
        self.config = config = config or Talk3DConfig()
        config.validate()
        self.Downnet = DownNet(config)
        self.transformer = nn.ModuleList([Transformer2DModel(config)])
        self.Upnet = UpNet(config)

    def _check(self, planes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        expected = (3 * c.triplane_channels, c.plane_resolution, c.plane_resolution)
        if planes.ndim != 4 or tuple(planes.shape[1:]) != expected:
            raise ValueError(f"DeltaplanePredictor expects planes [B, {', '.join(map(str, expected))}], "
                             f"got {tuple(planes.shape)}")
        if tokens.ndim != 3 or tokens.shape[-1] != c.token_dim or tokens.shape[0] not in (1, planes.shape[0]):
            raise ValueError(f"tokens must be [B or 1, S, {c.token_dim}] for planes of batch {planes.shape[0]}, "
                             f"got {tuple(tokens.shape)}")
        return tokens.expand(planes.shape[0], -1, -1)

    def forward_with_intermediates(self, planes: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like :meth:`forward`, also returning ``downnet`` (bottleneck input) and ``transformer`` (its output),
        both ``[B, 3·256, 32, 32]``, beside ``delta``."""
        tokens = self._check(planes, tokens)
        down, skips = self.Downnet(planes)
        mid = self.transformer[0](down, tokens)
        return {"downnet": down, "transformer": mid, "delta": self.Upnet(mid, skips)}

    def forward(self, planes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``planes`` ``[B, 96, 256, 256]`` (P_ID, raw EG3D layout), ``tokens`` ``[B or 1, 5, 64]`` →
        ΔP ``[B, 96, 256, 256]``."""
        return self.forward_with_intermediates(planes, tokens)["delta"]
