"""Video files through PyAV (no external ffmpeg binary).

Writing is streamed (frames are encoded as they arrive, so memory does not grow with clip length) into a
temporary file beside the target that is renamed only when the video is complete: an interrupted or failed
run never leaves a half-written output.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .defaults import MOTION_FPS
from .errors import InputError
from .images import to_uint8_hwc

PARTIAL_SUFFIX = ".partial.mp4"
#: Sample rates AAC can carry; a sound at another rate is resampled to the next one up (at most 96 kHz) when muxed.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def aac_rate(rate: int) -> int:
    """The rate a sound at ``rate`` is muxed at: its own when AAC carries it, else the next AAC rate up."""
    return next((r for r in AAC_RATES if r >= rate), AAC_RATES[-1])


def partial_files(path: str | Path) -> list[Path]:
    """The temporary files of unfinished writes to ``path`` (left only by a process that was killed outright)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.stem)}.*{PARTIAL_SUFFIX}"))


class VideoWriter:
    """H.264 mp4 writer with optional AAC audio, committed atomically on ``close()``.

    Usage::

        with VideoWriter("out.mp4", fps=25, audio={"waveform": w, "sample_rate": sr}) as writer:
            for chunk in chunks:            # [B,3,H,W] in [-1,1]
                writer.write(chunk)
    """

    def __init__(self, path: str | Path, fps: float = MOTION_FPS, audio: dict | None = None, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=PARTIAL_SUFFIX, dir=self.path.parent)
        os.close(handle)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), mode="w")
        self._fps = Fraction(fps).limit_denominator(1001)
        self._video = None
        self._crf = crf
        self._audio = audio
        self._audio_stream = None
        self.frames_written = 0

    def _open_video_stream(self, height: int, width: int):
        stream = self._container.add_stream("libx264", rate=self._fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self._crf), "preset": "medium"}
        return stream

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Append frames: float ``[B,3,H,W]`` in [-1,1] or uint8 ``[B,H,W,3]``; H and W must be even."""
        import av

        array = frames if isinstance(frames, np.ndarray) else to_uint8_hwc(frames)
        if self._video is None:
            height, width = array.shape[1:3]
            if height % 2 or width % 2:
                raise InputError(f"H.264 needs even frame sizes, got {width}x{height}.")
            self._video = self._open_video_stream(height, width)
            # Every stream must exist before the first packet is muxed (the header is written then).
            self._audio_stream = self._open_audio_stream() if self._audio is not None else None
        for image in array:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in self._video.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def _audio_samples(self) -> np.ndarray:
        waveform = self._audio["waveform"]
        waveform = waveform[0] if waveform.ndim == 3 else waveform  # [C,S]
        samples = waveform.detach().float().clamp(-1, 1).cpu().numpy()
        return np.ascontiguousarray(samples[:2])

    def _open_audio_stream(self):
        stream = self._container.add_stream("aac", rate=aac_rate(int(self._audio["sample_rate"])))
        stream.layout = "stereo" if self._audio_samples().shape[0] == 2 else "mono"
        return stream

    def _mux_audio(self) -> None:
        import av

        samples = self._audio_samples()
        rate = int(self._audio["sample_rate"])
        stream = self._audio_stream
        block = 1024 * 16
        # a rate AAC does not carry is resampled to the stream's (FFmpeg's resampler, as the ffmpeg command would)
        resampler = (av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
                     if stream.rate != rate else None)
        written = 0

        def encode(frame) -> None:
            for packet in stream.encode(frame):
                self._container.mux(packet)

        def resampled(frame) -> None:
            nonlocal written
            for out in resampler.resample(frame):
                out.pts = written
                written += out.samples
                encode(out)

        for start in range(0, samples.shape[1], block):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + block], format="fltp",
                                               layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = start
            if resampler is None:
                encode(frame)
            else:
                resampled(frame)
        if resampler is not None:
            resampled(None)
        encode(None)

    def close(self) -> Path:
        """Flush, mux the audio and move the finished file into place."""
        if self._video is None:
            self.abort()
            raise InputError(f"No frames were written to {self.path}.")
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._mux_audio()
        self._container.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp creates 0600; the output should look like any other file
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 — the container may already be broken; the file is removed regardless
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_VIDEO_HINT = "Use an mp4/mov/webm/avi video, or re-encode it (e.g. `ffmpeg -i in.mov out.mp4`)."


def _open_video(path: Path):
    import av

    if not path.exists():
        raise InputError(f"{path}: the video does not exist. Check the path.")
    if not path.is_file() or path.stat().st_size == 0:
        problem = "is empty (0 bytes)" if path.is_file() else "is not a file"
        raise InputError(f"{path}: the video {problem}. {_VIDEO_HINT}")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: the file cannot be read as a video ({exc.strerror or exc}). {_VIDEO_HINT}") from None


def probe_video(path: str | Path) -> dict:
    """Frame count, fps, size and audio duration of a video file (decodes the video stream)."""
    return sample_video_frames(path, 0)[0]


def sample_video_frames(path: str | Path, count: int = 16) -> tuple[dict, np.ndarray]:
    """Decode a video once: its :func:`probe_video` info and up to ``count`` frames spread over its length.

    Returns:
        ``(info, frames)``: info has ``frames, fps, width, height, audio_seconds``; frames is uint8
        ``[n,H,W,3]`` RGB with ``n = min(count, info['frames'])``. Memory stays bounded (at most ``2·count``
        frames are held) however long the video is.
    Raises:
        InputError: missing, empty, unreadable or damaged file, or no video stream.
    """
    import av

    path = Path(path)
    with _open_video(path) as container:
        info = {"frames": 0, "fps": None, "width": None, "height": None, "audio_seconds": None}
        if container.streams.audio:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                info["audio_seconds"] = float(stream.duration * stream.time_base)
        if not container.streams.video:
            return info, np.zeros((0, 0, 0, 3), np.uint8)
        stream = container.streams.video[0]
        info.update(fps=float(stream.average_rate or 0), width=stream.width, height=stream.height)
        kept, stride = [], 1   # every stride-th frame; the stride doubles whenever 2*count are held
        try:
            for index, frame in enumerate(container.decode(video=0)):
                info["frames"] = index + 1
                if count and index % stride == 0:
                    kept.append(frame.to_ndarray(format="rgb24"))
                    if len(kept) > 2 * count:
                        kept, stride = kept[::2], stride * 2
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video is damaged ({exc.strerror or exc}). {_VIDEO_HINT}") from None
    if not kept:
        return info, np.zeros((0, info["height"] or 0, info["width"] or 0, 3), np.uint8)
    pick = np.unique(np.linspace(0, len(kept) - 1, min(count, len(kept))).round().astype(int))
    return info, np.stack([kept[i] for i in pick])


def read_video_frames(path: str | Path, chunk: int = 64) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(uint8 [B,H,W,3], fps)`` chunks of a video, decoding as it goes
    (``MOTION_FPS`` when the file has none)."""
    import av

    path = Path(path)
    with _open_video(path) as container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream. {_VIDEO_HINT}")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or MOTION_FPS)
        buffer = []
        try:
            for frame in container.decode(video=0):
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk:
                    yield np.stack(buffer), fps
                    buffer = []
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video is damaged ({exc.strerror or exc}). {_VIDEO_HINT}") from None
        if buffer:
            yield np.stack(buffer), fps
