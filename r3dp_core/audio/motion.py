"""Audio → 25 fps expression coefficients in one call, in memory that does not grow with the clip.

The chain is the official one (16 kHz conversion, f0, HuBERT in 20 s clips, zero padding to a multiple of 8
frames, the A2M VAE), but HuBERT features are streamed: each 20 s clip is computed when the A2M window
that needs it comes up and dropped once no later window reaches back to it. Only per-frame scalars (f0),
the latent noise and the 64-d result grow with the clip, plus the 16-bit waveform itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

import torch

from ..defaults import MOUTH_AMP, TEMPERATURE
from ..models.a2m_vae import AudioToMotionVAE, iter_windows
from .hubert import iter_hubert_clips, num_frames, padded_num_frames
from .io import Audio16k, load_audio
from .pitch import align_frames, official_f0


class _FeatureStream:
    """Random access to a forward-moving range of HuBERT frames produced clip by clip."""

    def __init__(self, clips: Iterator[torch.Tensor], frames: int):
        self._clips = clips
        self._frames = frames
        self._blocks: list[tuple[int, torch.Tensor]] = []   # (first frame, [n,1024])
        self._loaded = 0
        self._zeros: torch.Tensor | None = None              # [0,1024] on the features' device

    def get(self, lo: int, hi: int) -> torch.Tensor:
        """Frames ``[lo, hi)`` as ``[hi-lo,1024]``; frames past the clip's end are the official zero padding.
        Frames before ``lo`` are released: later calls must not ask for them."""
        while self._loaded < min(hi, self._frames):
            block = next(self._clips)
            self._blocks.append((self._loaded, block))
            self._loaded += block.shape[0]
            self._zeros = block[:0]
        self._blocks = [(s, b) for s, b in self._blocks if s + b.shape[0] > lo]
        parts = [b[max(lo - s, 0):max(min(hi, self._frames) - s, 0)] for s, b in self._blocks]
        got = torch.cat([self._zeros, *parts])
        if got.shape[0] < hi - lo:
            got = torch.nn.functional.pad(got, (0, 0, 0, hi - lo - got.shape[0]))
        return got


@torch.inference_mode()
def audio_to_motion(audio: str | os.PathLike | Mapping | Audio16k, model: AudioToMotionVAE, hubert, *,
                    mouth_amp: float = MOUTH_AMP, temperature: float = TEMPERATURE, seed: int | None = None,
                    generator: torch.Generator | None = None, eps: torch.Tensor | None = None,
                    f0_method: str = "praat", chunk_frames: int = 1000,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Expression coefficients for an audio clip, as official inference computes them.

    Args:
        audio: file path, ComfyUI ``AUDIO`` dict or ``Audio16k`` (see ``load_audio``).
        model: the A2M VAE; hubert: a ``HubertModel`` (``load_hubert``); each on its own device.
        mouth_amp: mouth amplitude (official default 0.45); temperature: latent scale (official 0.2).
        seed / generator / eps: the latent noise — drawn from ``seed`` like official inference does after
            ``torch.manual_seed(seed)``, from ``generator``, or given as ``[1,16,T50p/8]``.
        f0_method: ``'praat'`` (built-in) or ``'parselmouth'`` (the official library, if installed).
        chunk_frames: motion frames produced per A2M window.
        progress: called as ``progress(frames_done, frames_total)`` after each window.
    Returns:
        ``[T,64]`` float32 on the CPU, 25 fps, ``T = 4·ceil(((N − 80) // 320) / 8)`` for N samples at 16 kHz
        (the official length: the final video is cut to the audio when muxed).
    """
    clip = load_audio(audio)
    frames = num_frames(clip.num_samples)
    padded = padded_num_frames(frames)
    param = model.vae.decoder.out_proj.weight
    f0 = (torch.from_numpy(align_frames(official_f0(clip.pcm, f0_method), padded))[None]
          if model.config.use_pitch else None)
    f0, blink, amp = model.prepare_side_inputs(1, padded, f0, None, mouth_amp)
    if eps is None:
        eps = model.latent_noise(1, padded, generator, seed)
    z = eps.to(param.device, param.dtype) * temperature
    features = _FeatureStream(iter_hubert_clips(hubert, clip.pcm[0]), frames)
    total = padded // 2
    out = torch.empty(total, model.config.motion_dim)
    stride = model.config.stride
    for w in iter_windows(total, chunk_frames, model.config.receptive_field):
        h = features.get(2 * w.lo, 2 * w.hi).to(param.device, param.dtype)[None]
        run = model.run(h, None if f0 is None else f0[:, 2 * w.lo:2 * w.hi], blink[:, 2 * w.lo:2 * w.hi], amp,
                        z[:, :, w.lo // stride:w.hi // stride])
        out[w.start:w.end] = run.exp[0, w.start - w.lo:w.end - w.lo].float().cpu()
        if progress is not None:
            progress(w.end, total)
    return out
