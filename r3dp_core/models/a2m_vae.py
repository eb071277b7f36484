"""Audio-to-motion VAE (``audio2secc_vae``): HuBERT + f0 + mouth amplitude → 64 BFM expression coefficients.

Re-implements the official ``PitchContourVAEModel`` (the released checkpoint) and the plain ``VAEModel``
with the same state-dict keys, so the official checkpoint loads with ``strict=True``. Inference only:
conditioning at 25 Hz (frames 0, 2, 4, ... of the 50 Hz inputs), a Gaussian latent at 6.25 Hz scaled by the
temperature, the reverse prior flow, and the WaveNet decoder. The posterior encoder (``vae.encoder``) is
training-only; its parameters exist so checkpoints load strictly.

Every layer is local in time, so long clips run in overlapping windows (``iter_windows``) with a receptive
field well inside the overlap: results equal a whole-sequence run while memory stays flat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import MOUTH_AMP, TEMPERATURE
from ..errors import InputError, ModelFileError

FRAME_MULTIPLE_50HZ = 8      # inputs are zero-padded to this many 50 Hz frames (4 motion frames = 1 latent)


_F0_BINS = 256
_MEL_MIN = 1127 * math.log(1 + 50 / 700)
_MEL_MAX = 1127 * math.log(1 + 1100 / 700)


def f0_to_coarse(f0: torch.Tensor) -> torch.Tensor:
    """Quantise f0 (Hz) to the model's pitch bins: mel-scaled 1..255 over 50–1100 Hz, unvoiced (0) → 1.

    Same float32 arithmetic as the official torch branch, so bin boundaries match exactly.
    Args:
        f0: any shape, float Hz. Returns int64 of the same shape.
    """
    mel = 1127 * (1 + f0 / 700).log()
    voiced = mel > 0
    mel = torch.where(voiced, (mel - _MEL_MIN) * (_F0_BINS - 2) / (_MEL_MAX - _MEL_MIN) + 1, mel)
    mel = torch.where(mel <= 1, torch.ones_like(mel), mel)
    mel = torch.where(mel > _F0_BINS - 1, torch.full_like(mel, _F0_BINS - 1), mel)
    return (mel + 0.5).long()


@dataclass
class A2MConfig:
    """Architecture of the audio-to-motion VAE; defaults are the released ``audio2secc_vae`` checkpoint.

    ``use_pitch`` selects ``PitchContourVAEModel`` (HuBERT + pitch + blink + mouth amplitude, ``cond_proj``,
    nearest 50→25 Hz) over the plain ``VAEModel`` (HuBERT only, linear 50→25 Hz, 64-d conditioning).
    """

    audio_dim: int = 1024
    motion_dim: int = 64
    cond_dim: int = 128
    use_pitch: bool = True
    use_mouth_amp: bool = True
    pitch_bins: int = 300
    hidden: int = 256
    latent: int = 16
    kernel: int = 5
    encoder_layers: int = 8
    decoder_layers: int = 4
    stride: int = 4
    use_prior_flow: bool = True
    flow_hidden: int = 64
    flow_kernel: int = 3
    flow_couplings: int = 4
    flow_layers: int = 4
    default_mouth_amp: float = 0.4   # the model's own value when a batch carries none (inference passes 0.45)

    @classmethod
    def plain(cls) -> A2MConfig:
        """The plain ``VAEModel`` layout."""
        return cls(cond_dim=64, use_pitch=False, use_mouth_amp=False)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> A2MConfig:
        """Detect the variant and widths from an official state dict (keys without a ``model.`` prefix)."""
        keys = set(state_dict)
        if "vae.decoder.out_proj.weight" not in keys or "mel_encoder.0.weight" not in keys:
            raise ModelFileError("These weights are not an audio2secc VAE (no vae.decoder / mel_encoder keys).")
        use_pitch = "pitch_embed.weight" in keys
        mel_width = state_dict["mel_encoder.3.weight"].shape[0]
        gin = state_dict["vae.g_pre_net.0.weight"].shape[0]
        if gin != mel_width:
            raise ModelFileError(f"Unsupported audio2secc layout: {gin}-d conditioning but a {mel_width}-d audio "
                                 "encoder.")
        flow_key = "vae.prior_flow.flows.0.pre.weight"
        use_flow = flow_key in keys
        couplings = len({k.split(".")[3] for k in keys if k.startswith("vae.prior_flow.flows.")})
        decoder_layers = len({k.split(".")[4] for k in keys if k.startswith("vae.decoder.wn.in_layers.")})
        encoder_layers = len({k.split(".")[4] for k in keys if k.startswith("vae.encoder.wn.in_layers.")})
        pre_net = state_dict["vae.decoder.pre_net.0.weight"]       # ConvTranspose1d [latent, hidden, stride]
        return cls(
            audio_dim=state_dict["mel_encoder.0.weight"].shape[1],
            motion_dim=state_dict["vae.decoder.out_proj.weight"].shape[0],
            cond_dim=gin,
            use_pitch=use_pitch,
            use_mouth_amp="mouth_amp_embed" in keys,
            pitch_bins=state_dict["pitch_embed.weight"].shape[0] if use_pitch else cls.pitch_bins,
            hidden=pre_net.shape[1], latent=pre_net.shape[0], stride=pre_net.shape[2],
            kernel=state_dict["vae.decoder.wn.in_layers.0.weight_v"].shape[2],
            encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            use_prior_flow=use_flow,
            flow_hidden=state_dict[flow_key].shape[0] if use_flow else cls.flow_hidden,
            flow_kernel=(state_dict["vae.prior_flow.flows.0.enc.in_layers.0.weight_v"].shape[2]
                         if use_flow else cls.flow_kernel),
            flow_couplings=couplings if use_flow else cls.flow_couplings,
            flow_layers=(len({k.split(".")[6] for k in keys if k.startswith("vae.prior_flow.flows.0.enc.in_layers.")})
                         if use_flow else cls.flow_layers),
        )

    @property
    def receptive_field(self) -> int:
        """Motion frames (25 Hz) on each side that can influence one output frame (a safe upper bound)."""
        decoder = (self.kernel - 1) // 2 * self.decoder_layers
        flow = (self.flow_kernel - 1) // 2 * self.flow_layers * self.flow_couplings if self.use_prior_flow else 0
        pre_net = 2 * self.stride          # g_pre_net (k = 2·stride) and the transposed-conv grouping
        encoders = 2                       # two k3 convs in the audio/pitch encoders
        return decoder + self.stride * (flow + 2) + pre_net + encoders


class WeightNormConv1d(nn.Module):
    """Conv1d with PyTorch's legacy weight norm: parameters ``weight_g [out,1,1]``, ``weight_v``, ``bias``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.padding = padding
        # initialised like weight_norm(Conv1d(...)): v = the conv's default init, g = its per-filter norm
        conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        self.weight_g = nn.Parameter(conv.weight.detach().flatten(1).norm(dim=1).view(-1, 1, 1))
        self.weight_v = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the kernel legacy ``weight_norm`` calls: g · v / ‖v‖ with the norm over every dim but 0
        weight = torch._weight_norm(self.weight_v, self.weight_g, 0)
        return F.conv1d(x, weight, self.bias, padding=self.padding)


class WaveNet(nn.Module):
    """Gated non-causal WaveNet with a global-per-frame condition (keys ``in_layers``, ``res_skip_layers``,
    ``cond_layer``); the official ``WN`` at inference (dilation 1, dropout off, mask 1)."""

    def __init__(self, hidden: int, kernel: int, layers: int, cond_channels: int):
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(WeightNormConv1d(hidden, 2 * hidden, kernel, padding=(kernel - 1) // 2)
                                       for _ in range(layers))
        self.res_skip_layers = nn.ModuleList(WeightNormConv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1)
                                             for i in range(layers))
        self.cond_layer = WeightNormConv1d(cond_channels, 2 * hidden * layers, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x ``[B,H,T]``, cond ``[B,C,T]`` → skip sum ``[B,H,T]``."""
        h = self.hidden
        cond = self.cond_layer(cond)
        out = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + cond[:, 2 * h * i:2 * h * (i + 1)]
            acts = res_skip(torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:]))
            if i < last:
                x = x + acts[:, :h]
                out = out + acts[:, h:]
            else:
                out = out + acts
        return out


class Flip(nn.Module):
    """Reverses the channel order (a parameter-free flow step)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class MeanOnlyCoupling(nn.Module):
    """Affine coupling with zero log-scale: the second half of the channels is shifted by a WaveNet of the
    first half. ``forward`` is the *inverse* direction used for sampling."""

    def __init__(self, channels: int, hidden: int, kernel: int, layers: int, cond_channels: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WaveNet(hidden, kernel, layers, cond_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x0, x1 = z[:, :self.half], z[:, self.half:]
        shift = self.post(self.enc(self.pre(x0), cond))
        return torch.cat([x0, x1 - shift], 1)


class PriorFlow(nn.Module):
    """Glow-style prior flow (``flows.{0,2,..}`` couplings, ``flows.{1,3,..}`` flips), run in reverse."""

    def __init__(self, channels: int, hidden: int, kernel: int, layers: int, couplings: int, cond_channels: int):
        super().__init__()
        steps: list[nn.Module] = []
        for _ in range(couplings):
            steps += [MeanOnlyCoupling(channels, hidden, kernel, layers, cond_channels), Flip()]
        self.flows = nn.ModuleList(steps)

    def reverse(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.flows):
            z = step(z, cond)
        return z


class PosteriorEncoder(nn.Module):
    """Training-time posterior q(z|motion); never run at inference, present so checkpoints load strictly."""

    def __init__(self, c: A2MConfig):
        super().__init__()
        self.pre_net = nn.Sequential(nn.Conv1d(c.motion_dim, c.hidden, 2 * c.stride, c.stride, c.stride // 2))
        self.wn = WaveNet(c.hidden, c.kernel, c.encoder_layers, c.cond_dim)
        self.out_proj = nn.Conv1d(c.hidden, 2 * c.latent, 1)


class MotionDecoder(nn.Module):
    """Latent ``[B,latent,T/4]`` → motion ``[B,motion_dim,T]`` conditioned on the 25 Hz features."""

    def __init__(self, c: A2MConfig):
        super().__init__()
        self.pre_net = nn.Sequential(nn.ConvTranspose1d(c.latent, c.hidden, c.stride, c.stride))
        self.wn = WaveNet(c.hidden, c.kernel, c.decoder_layers, c.cond_dim)
        self.out_proj = nn.Conv1d(c.hidden, c.motion_dim, 1)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.wn(self.pre_net(z), cond))


class FlowVAE(nn.Module):
    """The official ``FVAE`` (keys ``vae.*``) at inference."""

    def __init__(self, c: A2MConfig):
        super().__init__()
        self.g_pre_net = nn.Sequential(nn.Conv1d(c.cond_dim, c.cond_dim, 2 * c.stride, c.stride, c.stride // 2))
        self.encoder = PosteriorEncoder(c)
        self.prior_flow = (PriorFlow(c.latent, c.flow_hidden, c.flow_kernel, c.flow_layers, c.flow_couplings,
                                     c.cond_dim) if c.use_prior_flow else None)
        self.decoder = MotionDecoder(c)


@dataclass
class A2MOutput:
    """One model run; ``exp`` is the result, the rest are the official intermediates (parity debugging)."""

    exp: torch.Tensor         # [B,T,64] expression coefficients, 25 fps
    z_p: torch.Tensor         # [B,T/4,latent] latent after the reverse flow
    cond: torch.Tensor        # [B,T,cond_dim] conditioning (cond_proj output, or the audio features)
    g_sqz: torch.Tensor       # [B,cond_dim,T/4] g_pre_net output
    f0_coarse: torch.Tensor | None   # [B,T] int64 pitch bins (pitch variant)


@dataclass(frozen=True)
class Window:
    """A run over motion frames ``[lo, hi)`` whose frames ``[start, end)`` are kept (all multiples of 4)."""

    lo: int
    hi: int
    start: int
    end: int


def iter_windows(num_frames: int, chunk: int, context: int, multiple: int = 4) -> Iterator[Window]:
    """Cover ``num_frames`` motion frames with kept chunks of ``chunk`` frames, each run with ``context``
    frames of real neighbours on both sides (clipped at the sequence ends, where the official run pads too)."""
    chunk = max(multiple, chunk // multiple * multiple)
    context = -(-context // multiple) * multiple
    for start in range(0, num_frames, chunk):
        end = min(start + chunk, num_frames)
        yield Window(max(0, start - context), min(num_frames, end + context), start, end)


def _pad_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) at the end up to ``frames``."""
    if x.shape[1] == frames:
        return x
    pad = [0, 0] * (x.ndim - 2) + [0, frames - x.shape[1]]
    return F.pad(x, pad)


class AudioToMotionVAE(nn.Module):
    """The official ``PitchContourVAEModel`` / ``VAEModel`` (by ``config.use_pitch``) with its exact keys."""

    def __init__(self, config: A2MConfig | None = None):
        super().__init__()
        c = self.config = config or A2MConfig()
        width = c.cond_dim   # every conditioning part has the width of the final condition
        self.blink_embed = nn.Embedding(2, width) if c.use_pitch else None
        self.mel_encoder = self._encoder(c.audio_dim, width)
        if c.use_pitch:
            self.pitch_embed = nn.Embedding(c.pitch_bins, width)
            self.pitch_encoder = self._encoder(width, width)
            parts = 4 if c.use_mouth_amp else 3
            self.cond_proj = nn.Linear(parts * width, c.cond_dim)
        self.mouth_amp_embed = nn.Parameter(torch.randn(width)) if c.use_mouth_amp else None
        self.vae = FlowVAE(c)

    @staticmethod
    def _encoder(cin: int, width: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv1d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm1d(width), nn.GELU(),
                             nn.Conv1d(width, width, 3, 1, 1, bias=False))

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,T50,C]`` → ``[B,T50/2,C]``: nearest (even frames) for the pitch model, pair means otherwise."""
        mode = "nearest" if self.config.use_pitch else "linear"
        return F.interpolate(x.transpose(1, 2), scale_factor=0.5, mode=mode).transpose(1, 2)

    def condition(self, hubert: torch.Tensor, f0: torch.Tensor | None, blink: torch.Tensor,
                  mouth_amp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-frame conditioning ``[B,T,cond_dim]`` at 25 Hz and the pitch bins ``[B,T]`` (pitch variant).

        Args:
            hubert: ``[B,T50,audio_dim]``; f0: ``[B,T50]`` Hz; blink: ``[B,T50]`` int64 in {0,1};
            mouth_amp: ``[B,1]``. T50 even.
        """
        audio = self.mel_encoder(self._downsample(hubert).transpose(1, 2)).transpose(1, 2)
        if not self.config.use_pitch:
            return audio, None
        coarse = f0_to_coarse(self._downsample(f0.unsqueeze(-1)).squeeze(-1))
        pitch = self.pitch_encoder(self.pitch_embed(coarse).transpose(1, 2)).transpose(1, 2)
        blink_feat = self._downsample(self.blink_embed(blink))
        parts = [audio, pitch, blink_feat]
        if self.mouth_amp_embed is not None:
            mouth = mouth_amp.unsqueeze(1) * self.mouth_amp_embed[None, None]
            parts.append(mouth.expand(-1, audio.shape[1], -1))
        return self.cond_proj(torch.cat(parts, -1)), coarse

    def run(self, hubert: torch.Tensor, f0: torch.Tensor | None, blink: torch.Tensor, mouth_amp: torch.Tensor,
            z: torch.Tensor) -> A2MOutput:
        """One pass over a span whose length is a multiple of 8 audio frames (the official ``forward``).

        Args:
            hubert: ``[B,T50,audio_dim]``; f0 ``[B,T50]`` (pitch variant); blink ``[B,T50]`` int64;
            mouth_amp ``[B,1]``; z: ``[B,latent,T50/8]`` latent noise already scaled by the temperature.
        """
        cond, coarse = self.condition(hubert, f0, blink, mouth_amp)
        g = cond.transpose(1, 2)
        g_sqz = self.vae.g_pre_net(g)
        z_p = self.vae.prior_flow.reverse(z, g_sqz) if self.vae.prior_flow is not None else z
        exp = self.vae.decoder(z_p, g).transpose(1, 2)
        return A2MOutput(exp, z_p.transpose(1, 2), cond, g_sqz, coarse)

    def prepare_inputs(self, hubert: torch.Tensor, f0: torch.Tensor | None, blink: torch.Tensor | None,
                       mouth_amp: float | torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Validate, move to the model's device/dtype and zero-pad to a multiple of 8 frames (official).

        Returns hubert ``[B,T50p,audio_dim]``, f0 ``[B,T50p]`` or None, blink ``[B,T50p]`` int64,
        mouth_amp ``[B,1]``.
        """
        param = self.vae.decoder.out_proj.weight
        if hubert.ndim != 3 or hubert.shape[2] != self.config.audio_dim:
            raise InputError(f"Audio features must be [B,T,{self.config.audio_dim}], got {tuple(hubert.shape)}.")
        batch, frames = hubert.shape[:2]
        if frames == 0:
            raise InputError("The audio features are empty (0 frames).")
        f0, blink, mouth_amp = self.prepare_side_inputs(batch, frames, f0, blink, mouth_amp)
        return _pad_time(hubert.to(param.device, param.dtype), blink.shape[1]), f0, blink, mouth_amp

    def prepare_side_inputs(self, batch: int, frames: int, f0: torch.Tensor | None, blink: torch.Tensor | None,
                            mouth_amp: float | torch.Tensor | None
                            ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``prepare_inputs`` for everything but the audio features: f0 ``[B,T50p]`` (pitch variant, else
        None), blink ``[B,T50p]`` int64 (zeros = eyes open when None), mouth_amp ``[B,1]``."""
        param = self.vae.decoder.out_proj.weight
        padded = -(-frames // FRAME_MULTIPLE_50HZ) * FRAME_MULTIPLE_50HZ
        if self.config.use_pitch:
            if f0 is None or f0.shape != (batch, frames):
                raise InputError(f"This audio model needs f0 [B,T] = [{batch},{frames}] beside the features, got "
                                 f"{None if f0 is None else tuple(f0.shape)}.")
            f0 = _pad_time(f0.to(param.device, param.dtype), padded)
        else:
            f0 = None
        if blink is None:
            blink = torch.zeros(batch, padded, dtype=torch.long, device=param.device)
        else:
            blink = _pad_time(blink.reshape(batch, frames).to(param.device, torch.long), padded)
        if mouth_amp is None:
            mouth_amp = self.config.default_mouth_amp
        mouth_amp = torch.as_tensor(mouth_amp, dtype=param.dtype, device=param.device).reshape(-1, 1)
        return f0, blink, mouth_amp.expand(batch, 1)

    def latent_noise(self, batch: int, frames_50hz: int, generator: torch.Generator | None = None,
                     seed: int | None = None) -> torch.Tensor:
        """Standard-normal latent ``[B,latent,T50p/8]`` drawn on the CPU like the official sampler (the same
        numbers as official inference after ``torch.manual_seed(seed)``)."""
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        padded = -(-frames_50hz // FRAME_MULTIPLE_50HZ) * FRAME_MULTIPLE_50HZ
        return torch.randn(batch, self.config.latent, padded // FRAME_MULTIPLE_50HZ, generator=generator)

    @torch.inference_mode()
    def predict_expression(self, hubert: torch.Tensor, f0: torch.Tensor | None = None, *,
                           mouth_amp: float | torch.Tensor | None = MOUTH_AMP, blink: torch.Tensor | None = None,
                           temperature: float = TEMPERATURE, eps: torch.Tensor | None = None,
                           generator: torch.Generator | None = None, seed: int | None = None,
                           chunk_frames: int | None = 1000) -> torch.Tensor:
        """Expression coefficients for a whole clip, in overlapping windows of ``chunk_frames`` motion frames.

        Args:
            hubert: ``[B,T50,1024]`` HuBERT features at 50 Hz; f0: ``[B,T50]`` Hz (0 = unvoiced).
            mouth_amp: scalar or ``[B]``/``[B,1]``; official inference uses 0.45.
            blink: ``[B,T50]`` (or ``[B,T50,1]``) 0/1; None = eyes open, as official inference.
            temperature: scale of the latent noise (official default 0.2; 0 = deterministic).
            eps: ``[B,16,T50p/8]`` latent noise to use instead of drawing it (``generator``/``seed`` else).
            chunk_frames: motion frames kept per window; None runs the whole clip at once.
        Returns:
            ``[B,T50p/2,64]`` float32 at 25 fps, ``T50p`` = T50 rounded up to a multiple of 8 (official length).
        """
        hubert, f0, blink, mouth_amp = self.prepare_inputs(hubert, f0, blink, mouth_amp)
        batch, padded = hubert.shape[:2]
        if eps is None:
            eps = self.latent_noise(batch, padded, generator, seed)
        expected = (batch, self.config.latent, padded // FRAME_MULTIPLE_50HZ)
        if tuple(eps.shape) != expected:
            raise InputError(f"Latent noise must be {list(expected)} for this clip, got {list(eps.shape)}.")
        z = eps.to(hubert.device, hubert.dtype) * temperature
        frames = padded // 2
        chunk = frames if chunk_frames is None else chunk_frames
        out = hubert.new_empty(batch, frames, self.config.motion_dim)
        for w in iter_windows(frames, chunk, self.config.receptive_field):
            s = self.config.stride
            run = self.run(hubert[:, 2 * w.lo:2 * w.hi], None if f0 is None else f0[:, 2 * w.lo:2 * w.hi],
                           blink[:, 2 * w.lo:2 * w.hi], mouth_amp, z[:, :, w.lo // s:w.hi // s])
            out[:, w.start:w.end] = run.exp[:, w.start - w.lo:w.end - w.lo]
        return out
