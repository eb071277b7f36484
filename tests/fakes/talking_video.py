"""A synthetic talking video made from a real face photo, for the ``r3dp personalise`` preparation tests.

The face of ``testdata/astronaut_512.png`` (fixed coordinates measured with MediaPipe: nose tip (224, 131),
mouth centre (223, 146), eyes near (205, 101) and (245, 104), face about 90 px wide) is cropped with a small smooth
head motion (translation ±5 px, rotation ±3°), its mouth opened by a vertical warp driven by the loudness
envelope of ``testdata/speech_en_16k.wav`` (looped), and its eyes closed (covered with the skin just above them)
for 5 frames every 2 s. Written with PyAV as H.264 + AAC (mono, 16 kHz). MediaPipe detects the face in every
frame; the options make the bad inputs of the preparation (two faces side by side, frames without a face, no
audio track, short clips) and a variable-frame-rate file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
PHOTO = "astronaut_512.png"
SPEECH = "speech_en_16k.wav"
FACE_CENTRE = (224.0, 128.0)      # between eyes and mouth, photo pixels
MOUTH = (223.0, 146.0)
EYES = ((205.0, 101.5), (245.0, 104.0))
CROP_SIDE = 200.0                 # photo pixels shown in a one-face frame
BLINK_EVERY_S, BLINK_FRAMES = 2.0, 5
SAMPLE_RATE = 16_000


def blink_frames(times: np.ndarray) -> np.ndarray:
    """``[T]`` bool: whether the eyes are shut at each time (s): 0.2 s starting 1 s in, then every 2 s."""
    times = np.asarray(times, np.float64)
    phase = (times - 1.0) % BLINK_EVERY_S
    return (times >= 1.0) & (phase < BLINK_FRAMES / 25.0)


def _speech(seconds: float, testdata: Path) -> np.ndarray:
    import soundfile

    wave, rate = soundfile.read(str(testdata / SPEECH), dtype="float32", always_2d=True)
    wave = wave[:, 0]
    assert rate == SAMPLE_RATE
    count = int(round(seconds * SAMPLE_RATE))
    return np.resize(wave, count).astype(np.float32)


def _envelope(wave: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Loudness in [0,1] at each time (RMS of 40 ms around it, normalised by the 95th percentile)."""
    half = SAMPLE_RATE // 50
    centres = (times * SAMPLE_RATE).astype(int)
    rms = np.array([np.sqrt(np.mean(wave[max(0, c - half):c + half] ** 2) + 1e-12) for c in centres])
    return np.clip(rms / (np.percentile(rms, 95) + 1e-6), 0.0, 1.0)


def _photo(testdata: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(testdata / PHOTO)), cv2.COLOR_BGR2RGB)


def _talking_face(photo: np.ndarray, opening: float, shut: bool) -> np.ndarray:
    """The photo with its mouth opened by ``opening`` in [0,1] (up to 7 px) and the eyes shut or not."""
    import cv2

    height, width = photo.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = photo.copy()
    if shut:
        for ex, ey in EYES:
            patch = image[int(ey) - 14:int(ey) - 8, int(ex) - 12:int(ex) + 12].reshape(-1, 3).mean(0)
            inside = ((x - ex) / 13.0) ** 2 + ((y - ey) / 6.5) ** 2 < 1
            image[inside] = patch.astype(np.uint8)
            lid = inside & (np.abs(y - ey) < 0.8)
            image[lid] = (0.6 * patch).astype(np.uint8)   # the lash line of a shut eye
    gap = 7.0 * float(opening)
    if gap > 0.2:
        mx, my = MOUTH
        falloff = np.clip(1 - ((x - mx) / 22.0) ** 2, 0, 1) * np.exp(-((y - my) / 14.0) ** 2)
        shift = gap / 2 * falloff * np.sign(y - my)
        # sample from nearer the lip line: the lips move apart, the line between them widens into a dark gap
        warped = cv2.remap(image, x, (y - shift).astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        dark = (np.abs(y - my) < gap / 2 * falloff) & (falloff > 0.3)
        warped[dark] = (warped[dark] * 0.25).astype(np.uint8)
        image = warped
    return image


def _view(image: np.ndarray, size: int, centre: tuple[float, float], side: float, angle: float,
          width_px: int | None = None) -> np.ndarray:
    """``[size, width_px or size, 3]``: the square of ``side`` photo pixels around ``centre`` rotated by
    ``angle`` degrees."""
    import cv2

    out_w = width_px or size
    scale = size / side
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += (out_w / 2 - centre[0], size / 2 - centre[1])
    return cv2.warpAffine(image, matrix, (out_w, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def render_frames(seconds: float, *, size: int = 256, fps: float = 25, faces: int = 1,
                  face_missing_fraction: float = 0.0, seed: int = 0, times: np.ndarray | None = None,
                  testdata: Path = TESTDATA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames of :func:`make_talking_video`: ``(frames uint8 [T,S,S,3], times [T] s, missing [T] bool)``."""
    rng = np.random.default_rng(seed)
    times = np.arange(int(round(seconds * fps))) / fps if times is None else np.asarray(times, np.float64)
    wave = _speech(seconds + 1.0, testdata)
    opening = _envelope(wave, times)
    shut = blink_frames(times)
    photo = _photo(testdata)
    missing = np.zeros(len(times), bool)
    if face_missing_fraction > 0:
        count = int(round(face_missing_fraction * len(times)))
        runs = max(1, count // 4)
        starts = np.sort(rng.choice(np.arange(len(times) - 4), runs, replace=False))
        for start in starts:
            missing[start:start + 4] = True
        extra = np.flatnonzero(~missing)
        while missing.sum() < count:
            missing[rng.choice(extra)] = True
        while missing.sum() > count:
            missing[np.flatnonzero(missing)[-1]] = False
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = np.empty((len(times), size, size, 3), np.uint8)
    empty = _view(photo, size, (430.0, 430.0), CROP_SIDE, 0.0)   # the lower right corner: no face
    for index, t in enumerate(times):
        if missing[index]:
            frames[index] = empty
            continue
        face = _talking_face(photo, opening[index], shut[index])
        dx, dy = 5 * np.sin(0.9 * t + phase[0]), 4 * np.sin(0.7 * t + phase[1])
        angle = 3 * np.sin(0.5 * t + phase[2])
        centre = (FACE_CENTRE[0] + dx, FACE_CENTRE[1] + dy)
        if faces == 1:
            frames[index] = _view(face, size, centre, CROP_SIDE, angle)
        else:
            half = size // faces
            tiles = [_view(face, size, centre, CROP_SIDE * 1.15, angle * (1 - 2 * (k % 2)), width_px=half)
                     for k in range(faces)]
            row = np.concatenate(tiles, axis=1)
            frames[index] = np.pad(row, ((0, 0), (0, size - row.shape[1]), (0, 0)), mode="edge")
    return frames, times, missing


def write_video(path: Path, frames: np.ndarray, times: np.ndarray, fps: float,
                audio: np.ndarray | None = None) -> Path:
    """Encode ``frames`` shown at ``times`` (seconds; any spacing: variable frame rate) as H.264 (+ AAC mono)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, 1000)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.options = {"crf": "20", "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=SAMPLE_RATE)
            sound.layout = "mono"
        for image, t in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), time_base
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            block = 1024
            for start in range(0, len(audio), block):
                frame = av.AudioFrame.from_ndarray(audio[None, start:start + block], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def make_talking_video(path: str | Path, seconds: float, *, size: int = 256, fps: float = 25, audio: bool = True,
                       faces: int = 1, face_missing_fraction: float = 0.0, seed: int = 0,
                       variable_rate: bool = False, testdata: Path = TESTDATA) -> Path:
    """Write a synthetic talking video (module docstring) to ``path`` and return it.

    Args:
        seconds: length. ``size``: frame side (square, even). ``fps``: frame rate (the mean rate when
            ``variable_rate``: frame intervals then vary between 0.5 and 1.5 periods).
        audio: mux the speech (looped) as AAC; False writes a video without an audio track.
        faces: copies of the face side by side (2: the several-faces refusal).
        face_missing_fraction: share of frames (in runs of 4) showing a part of the photo without a face.
        seed: head-motion phases and which frames lose the face.
    """
    rng = np.random.default_rng(seed + 1)
    if variable_rate:
        steps = rng.uniform(0.5, 1.5, int(seconds * fps) + 8) / fps
        times = np.concatenate([[0.0], np.cumsum(steps)])
        times = times[times < seconds - 0.5 / fps]
    else:
        times = np.arange(int(round(seconds * fps))) / fps
    frames, times, _ = render_frames(seconds, size=size, fps=fps, faces=faces,
                                     face_missing_fraction=face_missing_fraction, seed=seed, times=times,
                                     testdata=testdata)
    sound = _speech(seconds, testdata) if audio else None
    return write_video(Path(path), frames, times, fps, sound)
