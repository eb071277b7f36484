"""Audio input: any clip ComfyUI or the CLI hands over, converted to 16 kHz the way the official code does.

The official pipeline runs ``ffmpeg -i <audio> -f wav -ar 16000`` (channels kept, 16-bit PCM) and then reads
that wav twice: HuBERT gets **channel 0** (soundfile), the pitch tracker the **channel mean** (librosa).
``load_audio`` reproduces the conversion with FFmpeg's own resampler (libswresample through PyAV, default
settings, as the ffmpeg command uses) and keeps the 16-bit result, so both readings are exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..defaults import SAMPLE_RATE
from ..errors import InputError

MIN_SAMPLES = 400            # HuBERT's receptive field: shorter clips give no feature frame
_DECODE_BLOCK_S = 1.0        # seconds of an in-memory waveform handed to the resampler at a time


@dataclass(frozen=True)
class Audio16k:
    """A clip after the official 16 kHz conversion.

    Attributes:
        pcm: ``[C,N]`` int16 samples at 16 kHz, every channel of the source kept.
        source_rate: the sample rate the clip came in at.
    """

    pcm: np.ndarray
    source_rate: int

    @property
    def num_samples(self) -> int:
        return int(self.pcm.shape[1])

    @property
    def num_channels(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def hubert_channel(self) -> np.ndarray:
        """``[N]`` float32 in [-1,1): channel 0, which is all the official HuBERT extractor reads."""
        return self.pcm[0].astype(np.float32) / 32768

    def pitch_mono(self) -> np.ndarray:
        """``[N]`` float32: the channel mean, bit-identical to ``librosa.load(wav16k, sr=16000)``.

        The sum of 16-bit samples is exact in float32, and so is the division by 32768; only the division
        by the channel count rounds, as in librosa's float32 mean.
        """
        mono = self.pcm.sum(axis=0, dtype=np.float32)
        mono /= 32768
        if self.num_channels > 1:
            mono /= np.float32(self.num_channels)
        return mono

    def to_comfy(self, seconds: float | None = None) -> dict:
        """The 16 kHz clip (its first ``seconds``, or all of it) as a ComfyUI ``AUDIO`` dict (``waveform [1,C,N]``
        float32), which is also what the video writer muxes."""
        pcm = self.pcm if seconds is None else self.pcm[:, : int(round(seconds * SAMPLE_RATE))]
        return {"waveform": torch.from_numpy(pcm.astype(np.float32) / 32768)[None], "sample_rate": SAMPLE_RATE}


def load_audio(source: str | os.PathLike | Mapping | Audio16k) -> Audio16k:
    """Decode and convert ``source`` to 16 kHz 16-bit PCM, keeping its channels.

    Args:
        source: a file path (anything FFmpeg reads: wav, flac, ogg, mp3, m4a, video files with sound, ...), a
            ComfyUI ``AUDIO`` dict ``{"waveform": [B,C,T] float in [-1,1], "sample_rate": int}`` with B = 1, or
            an ``Audio16k`` (returned as is).
    Raises:
        InputError: missing/unreadable file, no audio stream, empty clip, NaN/inf samples, batch > 1, bad
            sample rate, or a clip shorter than 25 ms (no HuBERT frame).
    """
    if isinstance(source, Audio16k):
        clip = source
    elif isinstance(source, Mapping):
        clip = _from_waveform(source)
    elif isinstance(source, (str, os.PathLike)):
        clip = _from_file(Path(source))
    else:
        raise InputError(f"Cannot use {type(source).__name__} as audio: give a file path or a ComfyUI AUDIO dict "
                         "({'waveform': [1,C,T] tensor, 'sample_rate': int}).")
    if clip.num_samples < MIN_SAMPLES:
        name = f"{source}: the audio" if isinstance(source, (str, os.PathLike)) else "The audio"
        raise InputError(f"{name} is {1000 * clip.num_samples / SAMPLE_RATE:.1f} ms long after conversion to "
                         f"16 kHz; at least {1000 * MIN_SAMPLES / SAMPLE_RATE:.0f} ms are needed for one motion frame. "
                         "Give a longer clip.")
    return clip


def loudest_dbfs(pcm: np.ndarray, block: int = SAMPLE_RATE // 50) -> float:
    """Level of the loudest 20 ms block of one channel ``[N]`` int16, in dB full scale (-inf for digital silence).

    Speech peaks around -30..-10 dBFS; below about -50 dBFS a clip is silence or hiss. Reads the clip in
    pieces, so a long clip is not copied as a whole.
    """
    block = max(1, min(block, pcm.shape[0]))
    piece = block * 500
    loudest = 0.0
    for start in range(0, pcm.shape[0] - block + 1, piece):
        samples = pcm[start:start + piece]
        samples = samples[: samples.shape[0] // block * block].astype(np.float32) / 32768.0
        loudest = max(loudest, float(np.square(samples).reshape(-1, block).mean(axis=1).max()))
    return 10 * np.log10(loudest) if loudest > 0 else float("-inf")


class _PcmBuffer:
    """Collects int16 blocks ``[C,n]`` into one array, sized from the expected length so that long clips are
    not held twice (as a list of blocks and their concatenation)."""

    def __init__(self, expected: int | None):
        self._capacity = expected + SAMPLE_RATE if expected else 0
        self._data: np.ndarray | None = None
        self.filled = 0

    def append(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if self._data is None:
            self._data = np.empty((block.shape[0], max(self._capacity, n)), dtype=np.int16)
        elif self.filled + n > self._data.shape[1]:
            grown = np.empty((self._data.shape[0], max(2 * self._data.shape[1], self.filled + n)), dtype=np.int16)
            grown[:, :self.filled] = self._data[:, :self.filled]
            self._data = grown
        self._data[:, self.filled:self.filled + n] = block
        self.filled += n

    def result(self) -> np.ndarray | None:
        return None if self._data is None else self._data[:, :self.filled]


_AUDIO_HINT = "Use a wav, flac, ogg, mp3 or m4a speech clip."
_FLOAT_FORMATS = ("flt", "fltp", "dbl", "dblp")


def _resample(frames: Iterator, label: str, expected_samples: int | None) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="s16p", rate=SAMPLE_RATE)
    buffer = _PcmBuffer(expected_samples)
    try:
        for frame in frames:
            for out in resampler.resample(frame):
                buffer.append(out.to_ndarray())
        for out in resampler.resample(None):
            buffer.append(out.to_ndarray())
    except InputError:
        raise
    except (av.FFmpegError, ValueError) as exc:  # ValueError: the stream changed its layout or rate midway
        raise InputError(f"{label} could not be decoded as audio ({exc}); it is damaged or not audio. "
                         f"{_AUDIO_HINT}") from None
    pcm = buffer.result()
    if pcm is None or pcm.shape[1] == 0:
        raise InputError(f"{label} contains no audio samples (it is empty). {_AUDIO_HINT}")
    return pcm


def _finite_frames(frames: Iterator, label: str) -> Iterator:
    """Pass decoded frames on, refusing NaN/inf in float formats (the 16-bit conversion would hide them as
    full-scale clicks)."""
    for frame in frames:
        if frame.format.name in _FLOAT_FORMATS and not np.isfinite(frame.to_ndarray()).all():
            raise InputError(f"{label}: the clip contains NaN or infinite samples (a broken float export); the voice "
                             "cannot be read from it. Export the clip again, e.g. as 16-bit PCM wav.")
        yield frame


def _open_audio(path: Path):
    """``(container, audio stream, duration s)`` of a readable file with sound, or an ``InputError`` saying why not."""
    import av

    if not path.is_file():
        raise InputError(f"{path}: audio file not found{' (it is a folder)' if path.is_dir() else ''}. "
                         "Check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the audio file is empty (0 bytes). {_AUDIO_HINT}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable audio file ({exc.strerror or exc}); it is damaged, truncated or "
                         f"not audio. {_AUDIO_HINT}") from None
    if not container.streams.audio:
        kinds = _describe_streams(container)
        container.close()
        raise InputError(f"{path}: the file has no audio stream (it holds {kinds}). {_AUDIO_HINT}")
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = container.duration / 1e6 if container.duration else 0.0
    return container, stream, seconds


def _from_file(path: Path) -> Audio16k:
    container, stream, seconds = _open_audio(path)
    with container:
        rate = stream.rate or stream.codec_context.sample_rate
        pcm = _resample(_finite_frames(container.decode(stream), str(path)), str(path),
                        int(seconds * SAMPLE_RATE) or None)
    return Audio16k(pcm, int(rate))


def decode_audio_file(path: str | os.PathLike) -> dict:
    """Any audio (or video-with-sound) file at its own rate → ComfyUI ``AUDIO`` ``{"waveform": [1,C,S] float32
    in [-1,1], "sample_rate"}``, with the same checks and messages as :func:`load_audio`."""
    import av

    path = Path(path)
    container, stream, _ = _open_audio(path)
    blocks = []
    with container:
        rate = stream.codec_context.sample_rate or stream.rate
        try:
            for frame in _finite_frames(container.decode(stream), str(path)):
                samples = frame.to_ndarray()
                if frame.format.is_packed:  # interleaved [1, S*C] → [C, S]
                    samples = samples.reshape(-1, len(frame.layout.channels)).T
                if samples.dtype.kind in "iu":
                    samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
                blocks.append(samples.astype(np.float32, copy=False))
        except av.FFmpegError as exc:
            raise InputError(f"{path} could not be decoded as audio ({exc}); it is damaged or not audio. "
                             f"{_AUDIO_HINT}") from None
    if not blocks or sum(b.shape[1] for b in blocks) == 0:
        raise InputError(f"{path} contains no audio samples (it is empty). {_AUDIO_HINT}")
    waveform = torch.from_numpy(np.concatenate(blocks, axis=1))
    return {"waveform": waveform[None].contiguous(), "sample_rate": int(rate)}


def _describe_streams(container) -> str:
    kinds = [s.type for s in container.streams]
    return ", ".join(f"{kinds.count(k)} {k} stream(s)" for k in dict.fromkeys(kinds)) or "no streams"


def _from_waveform(audio: Mapping) -> Audio16k:
    import av

    if "waveform" not in audio or "sample_rate" not in audio:
        raise InputError("An AUDIO input must be a dict with 'waveform' [B,C,T] and 'sample_rate'.")
    waveform = torch.as_tensor(audio["waveform"])
    rate = audio["sample_rate"]
    if waveform.ndim == 2:
        waveform = waveform[None]
    if waveform.ndim != 3:
        raise InputError(f"AUDIO waveform must be [B,C,T], got shape {tuple(waveform.shape)}.")
    if waveform.shape[0] != 1:
        raise InputError(f"AUDIO holds a batch of {waveform.shape[0]} clips; give one clip (batch size 1).")
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise InputError(f"AUDIO sample_rate must be a positive integer, got {rate!r}.")
    if waveform.shape[1] == 0 or waveform.shape[2] == 0:
        raise InputError("The AUDIO input is empty (no channels or no samples).")
    samples = waveform[0].detach().to("cpu", torch.float32)
    if not torch.isfinite(samples).all():
        raise InputError("The AUDIO input contains NaN or infinite samples.")
    layout = f"{samples.shape[0]}c"
    block = max(1, int(_DECODE_BLOCK_S * rate))

    def frames():
        for start in range(0, samples.shape[1], block):
            chunk = np.ascontiguousarray(samples[:, start:start + block].numpy())
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = int(rate)
            yield frame

    expected = samples.shape[1] * SAMPLE_RATE // int(rate) + 1
    return Audio16k(_resample(frames(), "The AUDIO input", expected), int(rate))
