"""A synthetic talking video made from a real face photo, for the ``r3dp personalise`` preparation tests: the
package's :func:`r3dp_core.standins.write_talking_video` (a smooth head motion, the mouth opened by the speech's
loudness, a blink every 2 s) on ``testdata/astronaut_512.png`` (the example portrait, whose face
:data:`~r3dp_core.standins.EXAMPLE_FACE` locates) and ``testdata/speech_en_16k.wav`` (looped). MediaPipe detects
the face in every frame; the options make the bad inputs of the preparation (two faces side by side, frames
without a face, no audio track, short clips) and a variable-frame-rate file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r3dp_core.standins import (
    EXAMPLE_FACE,
    TALKING_RATE,
    blink_frames,
    render_talking_frames,
    write_talking_video,
    write_video,
)

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
PHOTO = "astronaut_512.png"
SPEECH = "speech_en_16k.wav"
FACE = EXAMPLE_FACE
__all__ = ["blink_frames", "make_talking_video", "render_frames", "write_video"]


def _photo(testdata: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(testdata / PHOTO)), cv2.COLOR_BGR2RGB)


def _speech(testdata: Path) -> np.ndarray:
    import soundfile

    wave, rate = soundfile.read(str(testdata / SPEECH), dtype="float32", always_2d=True)
    assert rate == TALKING_RATE
    return wave[:, 0]


def render_frames(seconds: float, *, size: int = 256, fps: float = 25, faces: int = 1,
                  face_missing_fraction: float = 0.0, seed: int = 0, times: np.ndarray | None = None,
                  testdata: Path = TESTDATA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames of :func:`make_talking_video`: ``(frames uint8 [T,S,S,3], times [T] s, missing [T] bool)``."""
    return render_talking_frames(seconds, photo=_photo(testdata), speech=_speech(testdata), size=size, fps=fps,
                                 faces=faces, face_missing_fraction=face_missing_fraction, seed=seed, times=times,
                                 face=FACE)


def make_talking_video(path: str | Path, seconds: float, *, size: int = 256, fps: float = 25, audio: bool = True,
                       faces: int = 1, face_missing_fraction: float = 0.0, seed: int = 0,
                       variable_rate: bool = False, testdata: Path = TESTDATA) -> Path:
    """Write the synthetic talking video (module docstring) to ``path`` and return it (the options are
    :func:`~r3dp_core.standins.write_talking_video`'s)."""
    return write_talking_video(path, seconds, photo=_photo(testdata), speech=_speech(testdata), size=size, fps=fps,
                               audio=audio, faces=faces, face_missing_fraction=face_missing_fraction, seed=seed,
                               variable_rate=variable_rate, face=FACE)
