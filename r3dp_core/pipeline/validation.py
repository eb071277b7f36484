"""Checking every input of a job before any model is loaded (``r3dp generate --dry-run`` stops here).

Only the face landmarker is needed: the portrait must contain a usable face. Every problem is an
``InputError`` naming the file and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import model_files
from ..errors import InputError
from .inputs import load_image
from .request import CAMERA_MODES, GenerateRequest


@dataclass
class ValidatedInputs:
    image: np.ndarray
    audio: object | None                     # Audio16k
    background: np.ndarray | None
    face_found_in: str
    notes: list[str] = field(default_factory=list)


def validate(request: GenerateRequest, models_dir: Path) -> ValidatedInputs:
    """Read and check every input; needs only the face landmarker (no network is loaded)."""
    from ..audio.io import load_audio
    from ..geometry.crop import resize_square
    from ..geometry.landmarks import detect_landmarks_image
    from ..video_io import probe_video

    if request.audio is None and request.expression_video is None:
        raise InputError("Give a voice clip (--audio) or a driving video (--expression-video).")
    if request.camera not in CAMERA_MODES:
        raise InputError(f"Unknown camera mode {request.camera!r}: use one of {', '.join(CAMERA_MODES)}.")
    if not 0.0 <= request.mouth_amp <= 2.0:
        raise InputError(f"--mouth-amp {request.mouth_amp} is outside 0..2 (official default 0.45).")
    if request.temperature < 0:
        raise InputError(f"--temperature must be >= 0, got {request.temperature}.")
    if request.out.suffix.lower() != ".mp4":
        raise InputError(f"Output {request.out} must end in .mp4.")
    image = load_image(request.image)
    audio = load_audio(request.audio) if request.audio is not None else None
    if audio is not None and audio.duration_s < 0.2:
        raise InputError(f"{request.audio} is only {audio.duration_s:.2f} s long; give at least 0.2 s of speech.")
    notes = []
    for video in (request.pose_video, request.expression_video):
        if video is not None:
            info = probe_video(video)
            if not info["frames"]:
                raise InputError(f"{video} has no decodable video frames.")
            notes.append(f"{Path(video).name}: {info['frames']} frames at {info['fps']:.2f} fps")
    background = load_image(request.bg) if request.bg is not None else None
    landmarker = model_files.require("face_landmarker", models_dir)
    detect_landmarks_image(resize_square(image)[None], landmarker)  # raises InputError when no face
    return ValidatedInputs(image=image, audio=audio, background=background, face_found_in=str(request.image),
                           notes=notes)


def describe(request: GenerateRequest, inputs: ValidatedInputs) -> str:
    lines = [f"portrait   {request.image} ({inputs.image.shape[1]}x{inputs.image.shape[0]}), face found"]
    if inputs.audio is not None:
        frames = round(inputs.audio.duration_s * 25)
        lines.append(f"audio      {request.audio}: {inputs.audio.duration_s:.2f} s -> {frames} frames at 25 fps")
    lines += [f"video      {note}" for note in inputs.notes]
    lines.append(f"camera     {request.camera}; background {'from ' + str(request.bg) if request.bg else 'extracted'}")
    lines.append(f"output     {request.out} (H.264 512x512, audio muxed)")
    return "\n".join(lines)
