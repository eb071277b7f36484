"""Video files through PyAV (no external ffmpeg binary).

Writing is streamed (frames are encoded as they arrive, so memory does not grow with clip length) into a
temporary file beside the target that is renamed only when the video is complete: an interrupted or failed
run never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .errors import InputError


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """``[B,3,H,W]`` float in [-1,1] → uint8 ``[B,H,W,3]`` (round half up, as the official ``(x+1)*127.5``)."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class VideoWriter:
    """H.264 mp4 writer with optional AAC audio, committed atomically on ``close()``.

    Usage::

        with VideoWriter("out.mp4", fps=25, audio={"waveform": w, "sample_rate": sr}) as writer:
            for chunk in chunks:            # [B,3,H,W] in [-1,1]
                writer.write(chunk)
    """

    def __init__(self, path: str | Path, fps: float = 25.0, audio: dict | None = None, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".partial.mp4", dir=self.path.parent)
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
        stream = self._container.add_stream("aac", rate=int(self._audio["sample_rate"]))
        stream.layout = "stereo" if self._audio_samples().shape[0] == 2 else "mono"
        return stream

    def _mux_audio(self) -> None:
        import av

        samples = self._audio_samples()
        rate = int(self._audio["sample_rate"])
        stream = self._audio_stream
        block = 1024 * 16
        for start in range(0, samples.shape[1], block):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + block], format="fltp",
                                               layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                self._container.mux(packet)
        for packet in stream.encode(None):
            self._container.mux(packet)

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


def probe_video(path: str | Path) -> dict:
    """Frame count, fps, size and audio duration of a video file (decodes the video stream)."""
    import av

    try:
        with av.open(str(path)) as container:
            info = {"frames": 0, "fps": None, "width": None, "height": None, "audio_seconds": None}
            if container.streams.video:
                stream = container.streams.video[0]
                info.update(fps=float(stream.average_rate or 0), width=stream.width, height=stream.height)
                info["frames"] = sum(1 for _ in container.decode(video=0))
            if container.streams.audio:
                stream = container.streams.audio[0]
                if stream.duration is not None and stream.time_base is not None:
                    info["audio_seconds"] = float(stream.duration * stream.time_base)
            return info
    except av.error.FFmpegError as exc:
        raise InputError(f"Cannot read video {path}: {exc}.") from None


def read_video_frames(path: str | Path, chunk: int = 64) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(uint8 [B,H,W,3], fps)`` chunks of a video, decoding as it goes."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Video {path} does not exist.")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InputError(f"Cannot open video {path}: {exc}. Use an mp4/mov/webm/avi file.") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream.")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        buffer = []
        try:
            for frame in container.decode(video=0):
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk:
                    yield np.stack(buffer), fps
                    buffer = []
        except av.error.FFmpegError as exc:
            raise InputError(f"Video {path} is damaged ({exc}).") from None
        if buffer:
            yield np.stack(buffer), fps
