"""Audio input: any clip ComfyUI or the CLI hands over, decoded once, and its 16 kHz view as the official code makes it.

A clip travels as one :class:`Sound`: the samples as they came in (the file's own rate, channels and sample
format, or a ComfyUI ``AUDIO``'s float waveform), which is what gets muxed, and, converted on first use and kept,
the 16 kHz view (:class:`Audio16k`) that the speech model, the pitch tracker and natural head motion read.
``load_sound`` decodes a file (the only decoder) or wraps an ``AUDIO`` mapping; ``load_audio`` gives the view.

The official pipeline runs ``ffmpeg -i <audio> -f wav -ar 16000`` (channels kept, 16-bit PCM) and then reads
that wav twice: HuBERT gets **channel 0** (soundfile), the pitch tracker the **channel mean** (librosa).
The view reproduces the conversion with FFmpeg's own resampler (libswresample through PyAV, default
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
_DECODE_BLOCK_S = 1.0        # seconds of a kept clip handed to the resampler at a time
#: the planar FFmpeg sample format of each sample type a clip is kept in (to hand it back to the resampler)
_PLANAR_FORMATS = {np.dtype(np.uint8): "u8p", np.dtype(np.int16): "s16p", np.dtype(np.int32): "s32p",
                   np.dtype(np.int64): "s64p", np.dtype(np.float32): "fltp", np.dtype(np.float64): "dblp"}


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


class Sound(Mapping):
    """One clip as it came in, decoded once: what gets muxed, and the 16 kHz view the speech stages read.

    A ``Sound`` is also a ComfyUI ``AUDIO`` (a mapping of ``waveform`` ``[1,C,S]`` float32 and ``sample_rate``), so it
    travels along edges, inside a ``Motion`` and into the video writer as it is.

    Attributes:
        samples: ``[C,S]`` at ``sample_rate``, in the sample type they came in (int16/int32/... as decoded from a
            file, float32 for an ``AUDIO`` waveform).
        sample_rate: the clip's own rate.
        layout: its channel layout as FFmpeg names it (``"stereo"``; ``"2c"`` for an ``AUDIO`` waveform).
        label: the file it was decoded from (messages name it), or None.
    """

    def __init__(self, samples: np.ndarray, sample_rate: int, layout: str | None = None, label: str | None = None):
        if samples.ndim != 2 or samples.dtype not in _PLANAR_FORMATS:
            raise ValueError(f"Sound samples must be [C,S] of {sorted(map(str, _PLANAR_FORMATS))}, got "
                             f"{samples.dtype} {samples.shape}.")
        self.samples = samples
        self.sample_rate = int(sample_rate)
        self.layout = layout or f"{samples.shape[0]}c"
        self.label = label
        self._view: Audio16k | None = None
        self._start_of: tuple[Sound, float] | None = None   # (whole clip, seconds) of a cut: its view is the whole's

    @classmethod
    def from_comfy(cls, audio: Mapping) -> Sound:
        """A ComfyUI ``AUDIO`` (``{"waveform": [1,C,T] (or [C,T]) float, "sample_rate": int}``, or any mapping with
        those keys) as a ``Sound``; its samples move to the CPU as float32 (shared, not copied, when they are)."""
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
        return cls(waveform[0].detach().to("cpu", torch.float32).numpy(), int(rate))

    # -- the ComfyUI AUDIO mapping
    def __getitem__(self, key: str):
        if key == "waveform":
            return self.waveform
        if key == "sample_rate":
            return self.sample_rate
        raise KeyError(key)

    def __iter__(self):
        return iter(("waveform", "sample_rate"))

    def __len__(self) -> int:
        return 2

    __eq__ = object.__eq__      # one clip is itself, not every clip with equal samples
    __hash__ = object.__hash__

    @property
    def waveform(self) -> torch.Tensor:
        """``[1,C,S]`` float32: integer samples divided by their type's maximum, float ones as they are (shared)."""
        samples = self.samples
        if samples.dtype.kind in "iu":
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
        return torch.from_numpy(samples.astype(np.float32, copy=False))[None].contiguous()

    @property
    def num_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        """The clip's own length (its 16 kHz view may differ by a few samples: ``at_16k().duration_s``)."""
        return self.num_samples / self.sample_rate

    def at_16k(self) -> Audio16k:
        """The 16 kHz view (the official conversion, see the module docstring), converted on first use and kept."""
        if self._view is None:
            if self._start_of is not None:
                whole, seconds = self._start_of
                view = whole.at_16k()
                self._view = Audio16k(view.pcm[:, : int(round(seconds * SAMPLE_RATE))], view.source_rate)
            else:
                self._view = _convert_to_16k(self)
        return self._view

    def cut(self, seconds: float) -> Sound:
        """The clip's first ``seconds`` (no copy). Its 16 kHz view is this clip's view cut at ``seconds``, as if the
        cut were made at 16 kHz."""
        part = Sound(self.samples[:, : int(round(seconds * self.sample_rate))], self.sample_rate, self.layout,
                     self.label)
        part._start_of = (self, seconds)
        return part

    def to_comfy(self, seconds: float | None = None) -> dict:
        """The clip (its first ``seconds``, or all of it) at its own rate as a plain ComfyUI ``AUDIO`` dict."""
        clip = self if seconds is None else self.cut(seconds)
        return {"waveform": clip.waveform, "sample_rate": clip.sample_rate}


def load_sound(source: str | os.PathLike | Mapping) -> Sound:
    """``source`` as one :class:`Sound`: a file is decoded (:func:`decode_sound`), a ComfyUI ``AUDIO`` mapping
    wrapped, a ``Sound`` returned as is.

    Raises:
        InputError: see :func:`decode_sound` and :meth:`Sound.from_comfy`.
    """
    if isinstance(source, Sound):
        return source
    if isinstance(source, Mapping):
        return Sound.from_comfy(source)
    if isinstance(source, (str, os.PathLike)):
        return decode_sound(source)
    raise InputError(f"Cannot use {type(source).__name__} as audio: give a file path or a ComfyUI AUDIO dict "
                     "({'waveform': [1,C,T] tensor, 'sample_rate': int}).")


def load_audio(source: str | os.PathLike | Mapping | Audio16k) -> Audio16k:
    """The 16 kHz, 16-bit view of ``source``, every channel kept (see :class:`Sound`).

    Args:
        source: a file path (anything FFmpeg reads: wav, flac, ogg, mp3, m4a, video files with sound, ...; decoded),
            a ``Sound`` (its view, converted once), a ComfyUI ``AUDIO`` dict ``{"waveform": [B,C,T] float in [-1,1],
            "sample_rate": int}`` with B = 1, or an ``Audio16k`` (returned as is).
    Raises:
        InputError: missing/unreadable file, no audio stream, empty clip, NaN/inf samples, batch > 1, bad
            sample rate, or a clip shorter than 25 ms (no HuBERT frame).
    """
    if isinstance(source, Audio16k):
        clip, label = source, None
    else:
        sound = load_sound(source)
        clip, label = sound.at_16k(), sound.label
    if clip.num_samples < MIN_SAMPLES:
        name = f"{label}: the audio" if label else "The audio"
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
    """Collects blocks ``[C,n]`` (of the first block's sample type) into one array, sized from the expected length
    (plus ``slack`` samples) so that long clips are not held twice (as a list of blocks and their concatenation)."""

    def __init__(self, expected: int | None, slack: int = SAMPLE_RATE):
        self._capacity = expected + slack if expected else 0
        self._data: np.ndarray | None = None
        self.filled = 0

    def append(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if self._data is None:
            self._data = np.empty((block.shape[0], max(self._capacity, n)), dtype=block.dtype)
        elif self.filled + n > self._data.shape[1]:
            grown = np.empty((self._data.shape[0], max(2 * self._data.shape[1], self.filled + n)),
                             dtype=self._data.dtype)
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


def decode_sound(path: str | os.PathLike) -> Sound:
    """Decode an audio (or video-with-sound) file into a :class:`Sound`: its own rate, channels and sample type,
    checked (NaN/inf in float formats, an empty or damaged stream, a stream that changes its format midway).

    This is the one place a file's sound is decoded; everything else reads the ``Sound``.
    """
    import av

    path = Path(path)
    label = str(path)
    container, stream, seconds = _open_audio(path)
    buffer = setup = None
    with container:
        try:
            for frame in _finite_frames(container.decode(stream), label):
                samples = frame.to_ndarray()
                if frame.format.is_packed:  # interleaved [1, S*C] → [C, S]
                    samples = samples.reshape(-1, len(frame.layout.channels)).T
                kind = (samples.dtype, samples.shape[0], frame.layout.name, frame.sample_rate)
                if setup is None:
                    setup = kind
                    buffer = _PcmBuffer(int(seconds * frame.sample_rate) or None, slack=frame.sample_rate)
                elif kind != setup:
                    raise InputError(f"{path} could not be decoded as audio (its sample format, channels or rate "
                                     f"change midway); it is damaged or not audio. {_AUDIO_HINT}")
                buffer.append(samples)
        except av.FFmpegError as exc:
            raise InputError(f"{path} could not be decoded as audio ({exc}); it is damaged or not audio. "
                             f"{_AUDIO_HINT}") from None
    pcm = buffer.result() if buffer is not None else None
    if pcm is None or pcm.shape[1] == 0:
        raise InputError(f"{path} contains no audio samples (it is empty). {_AUDIO_HINT}")
    return Sound(pcm, setup[3], layout=setup[2], label=label)


def decode_audio_file(path: str | os.PathLike) -> dict:
    """Any audio (or video-with-sound) file at its own rate → ComfyUI ``AUDIO`` ``{"waveform": [1,C,S] float32
    in [-1,1], "sample_rate"}``, with the same checks and messages as :func:`load_audio`."""
    return decode_sound(path).to_comfy()


def _convert_to_16k(sound: Sound) -> Audio16k:
    """The official 16 kHz conversion of a kept clip, handed to the resampler block by block in its own sample
    type (bit-identical to resampling the frames as they were decoded)."""
    import av

    samples, rate = sound.samples, sound.sample_rate
    label = sound.label or "The AUDIO input"
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise InputError(f"{label} contains NaN or infinite samples.")
    if samples.dtype == np.int16 and rate == SAMPLE_RATE:
        return Audio16k(samples, rate)  # already 16-bit at 16 kHz: the resampler would copy it unchanged
    planar = _PLANAR_FORMATS[samples.dtype]
    block = max(1, int(_DECODE_BLOCK_S * rate))

    def frames():
        for start in range(0, samples.shape[1], block):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + block]), format=planar,
                                               layout=sound.layout)
            frame.sample_rate = rate
            yield frame

    expected = samples.shape[1] * SAMPLE_RATE // rate + 1
    return Audio16k(_resample(frames(), label, expected), rate)


def _describe_streams(container) -> str:
    kinds = [s.type for s in container.streams]
    return ", ".join(f"{kinds.count(k)} {k} stream(s)" for k in dict.fromkeys(kinds)) or "no streams"
