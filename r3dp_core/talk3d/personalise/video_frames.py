"""A talking video as the preparation reads it: 25 fps frames picked by timestamp, its sound at 16 kHz, its hash.

Talk3D reads every video at 25 fps (spec §1.1: frames every 0.04 s). Frames are picked by presentation timestamp,
so constant and variable frame rates are handled alike: the frame shown at tick ``t_k = start + k/25`` is the
last frame whose timestamp is ``<= t_k`` (the nearest earlier frame; the first frame for ticks before it), for
every tick whose 40 ms lie at least half before the end of the span (the last frame's timestamp plus its
duration, or ``end``). A span of ``D`` seconds therefore gives ``round(25·D)`` frames whatever the source rate.
Decoding is streamed in chunks: memory holds one chunk, never the video.

Frames with a side above :data:`MAX_SIDE` are processed (landmarks, face checks) downscaled by
``processing_scale`` (≤ 1); the crops are warped from the full-resolution frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...video_io import _VIDEO_HINT, _open_video

FPS = 25
#: Longest frame side the landmarker sees; larger frames are downscaled for processing (processing_scale < 1).
MAX_SIDE = 1280
SAMPLE_RATE = 16_000


def video_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class VideoSpan:
    """What :func:`probe_span` learns from the container without decoding.

    Attributes:
        width, height: frame size in pixels (full resolution).
        start: first second used (≥ 0). end: last second used (the video's end when not given).
        duration: ``end - start`` seconds (from the container's metadata; :func:`frames_25fps` is exact).
        has_audio: the file has an audio stream.
        processing_scale: factor (≤ 1) frames are downscaled by for processing (longest side ≤ :data:`MAX_SIDE`).
    """

    width: int
    height: int
    start: float
    end: float
    has_audio: bool
    processing_scale: float

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def expected_frames(self) -> int:
        return int(round(self.duration * FPS))


def processing_scale(width: int, height: int, max_side: int = MAX_SIDE) -> float:
    """``min(1, max_side / max(width, height))``."""
    return min(1.0, max_side / max(width, height, 1))


def probe_span(path: str | Path, start: float | None = None, end: float | None = None) -> VideoSpan:
    """Size, audio presence and the used span ``[start, end)`` of a video, from its container.

    Raises:
        InputError: missing, empty or unreadable file, no video stream, or ``start``/``end`` outside the video.
    """
    path = Path(path)
    with _open_video(path) as container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream. {_VIDEO_HINT}")
        stream = container.streams.video[0]
        length = None
        if stream.duration is not None and stream.time_base is not None:
            length = float(stream.duration * stream.time_base)
            if stream.start_time is not None:
                length += float(stream.start_time * stream.time_base)
        elif container.duration:
            length = container.duration / 1e6
        width, height = stream.width, stream.height
        has_audio = bool(container.streams.audio)
    if not width or not height:
        raise InputError(f"{path}: the video stream has no frame size; it is damaged. {_VIDEO_HINT}")
    first = float(start or 0.0)
    if first < 0 or (end is not None and end <= first):
        raise InputError(f"--start {start} / --end {end}: the span must satisfy 0 <= start < end (seconds).")
    if length is not None and first >= length:
        raise InputError(f"--start {first:g} s is at or after the end of {path} ({length:.2f} s long). Give a start "
                         "inside the video.")
    last = float(end) if end is not None else (length if length is not None else float("inf"))
    if length is not None:
        last = min(last, length)
    return VideoSpan(width, height, first, last, has_audio, processing_scale(width, height))


def frames_25fps(path: str | Path, start: float = 0.0, end: float | None = None, chunk: int = 32, *,
                 first: int = 0) -> Iterator[np.ndarray]:
    """The span's frames at 25 fps (module docstring), full resolution, in chunks.

    ``first``: start at the span's 25 fps frame ``first`` (a seek to the keyframe before it; the ticks are the
    same ``start + k/25`` as a read from the span's start, so frame ``first + j`` is exactly the frame that read
    gives at position ``first + j``).

    Yields:
        uint8 ``[B,H,W,3]`` RGB blocks of consecutive 25 fps frames (``B <= chunk``).
    Raises:
        InputError: unreadable or damaged stream.
    """
    import av

    path = Path(path)
    buffer: list[np.ndarray] = []
    tick = max(int(first), 0)
    # a tick is shown when at least half of its 40 ms lies before the end: a span of D s gives round(25·D) frames
    half_tick = 0.5 / FPS
    limit = float("inf") if end is None else float(end) - half_tick

    def tick_time(k: int) -> float:
        return start + k / FPS

    with _open_video(path) as container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream. {_VIDEO_HINT}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        target = tick_time(tick)
        if target > 0.5:
            # seek to the keyframe at or before the first tick (backward); the frames before it are skipped below
            container.seek(int((target - 0.5) / stream.time_base), stream=stream, backward=True, any_frame=False)
        previous, previous_time = None, None
        default_step = 1.0 / float(stream.average_rate or FPS)
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                time = float(frame.time)
                if previous is not None:
                    # every tick before this frame's timestamp shows the previous frame (the first decoded frame
                    # also stands for the ticks before it)
                    while tick_time(tick) < min(time, limit):
                        buffer.append(previous)
                        tick += 1
                        if len(buffer) == chunk:
                            yield np.stack(buffer)
                            buffer = []
                if tick_time(tick) >= limit:
                    break
                previous, previous_time = frame.to_ndarray(format="rgb24"), time
                if frame.duration is not None and frame.time_base is not None:
                    default_step = float(frame.duration * frame.time_base) or default_step
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video is damaged ({exc.strerror or exc}). {_VIDEO_HINT}") from None
        if previous is not None:
            stop = min(limit, previous_time + default_step - half_tick)
            while tick_time(tick) < stop:
                buffer.append(previous)
                tick += 1
                if len(buffer) == chunk:
                    yield np.stack(buffer)
                    buffer = []
    if buffer:
        yield np.stack(buffer)


def sample_frames(path: str | Path, span: VideoSpan, count: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` frames spread evenly over the span (each by one seek), for the quick checks.

    Returns:
        ``(times [n] s, frames uint8 [n,H,W,3])`` at full resolution.
    """
    import av

    path = Path(path)
    end = span.end if np.isfinite(span.end) else span.start + 60.0
    wanted = span.start + (np.arange(count) + 0.5) * (end - span.start) / count
    times, frames = [], []
    with _open_video(path) as container:
        stream = container.streams.video[0]
        for target in wanted:
            try:
                container.seek(int(max(0.0, target) / stream.time_base), stream=stream, backward=True,
                               any_frame=False)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time + 1e-6 >= target - 1.0 / FPS:
                        times.append(float(frame.time))
                        frames.append(frame.to_ndarray(format="rgb24"))
                        break
            except av.error.FFmpegError as exc:
                raise InputError(f"{path}: the video is damaged ({exc.strerror or exc}). {_VIDEO_HINT}") from None
    if not frames:
        raise InputError(f"{path}: no frame could be decoded in the span {span.start:g}–{end:g} s. {_VIDEO_HINT}")
    return np.asarray(times), np.stack(frames)


def downscale(frames: np.ndarray, scale: float) -> np.ndarray:
    """``[B,H,W,3]`` uint8 resized by ``scale`` (area filter) when ``scale < 1``, else returned as is."""
    if scale >= 1.0:
        return frames
    import cv2

    height, width = frames.shape[1:3]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])


def load_audio_span(path: str | Path, start: float, num_frames: int) -> np.ndarray:
    """The video's sound over the span, as the official ``aud.wav`` is read: 16 kHz, channel 0, float32 in [-1,1).

    Exactly ``num_frames · 640`` samples (one 25 fps frame = 640 samples): zero-padded when the audio track ends
    before the video.

    Raises:
        InputError: no audio track (with how to add one) or an unreadable one.
    """
    from ...audio.io import load_audio

    path = Path(path)
    clip = load_audio(path)
    wave = clip.hubert_channel()
    first = int(round(start * SAMPLE_RATE))
    count = num_frames * (SAMPLE_RATE // FPS)
    piece = wave[first:first + count]
    if piece.shape[0] < count:
        piece = np.pad(piece, (0, count - piece.shape[0]))
    return np.ascontiguousarray(piece, dtype=np.float32)
