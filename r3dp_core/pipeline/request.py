"""What a job is asked to do: the CLI's arguments, as a plain dataclass the pipeline and tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CAMERA_MODES = ("auto", "static", "driving", "orbit")
OUTPUT_MODES = ("crop", "photo")


@dataclass
class GenerateRequest:
    """One ``r3dp generate`` job; see ``r3dp generate --help`` for each option."""

    image: Path
    out: Path
    audio: Path | None = None
    pose_video: Path | None = None
    expression_video: Path | None = None
    bg: Path | None = None
    camera: str = "auto"
    mouth_amp: float = 0.45
    mouth_scale: float = 1.0                 # scales the mouth's motion in the SECC (audio and video driving)
    blink: bool = True
    temperature: float = 0.2
    seed: int = 42
    device: str = "auto"
    dtype: str = "auto"
    chunk_size: int = 4
    min_face_area: float = 0.2
    face: str | int = "largest"              # or an index into the photo's faces, left to right
    output: str = "crop"                     # crop: the 512² square; photo: pasted back into the photo
    models_dir: Path | None = None
    head_mask: Path | None = None            # instead of the segmenter: the head (with hair) in the photo
    body_mask: Path | None = None            # with head_mask: the rest of the person
    debug_panels: bool = False               # source | SECC | raw render | final, side by side
