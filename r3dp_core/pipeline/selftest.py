"""``r3dp doctor --selftest``: the real job on stand-in models, before any official file is downloaded.

A temporary models folder is filled with synthetic stand-ins (``standins.py``) for every official file, in the
layouts users download: the video model (the tiny configuration of the same architecture, saved and loaded back
strictly), the audio model (the real architecture, random weights, trainer ``.ckpt``), a one-layer HuBERT with
the large model's feature size, and a BFM-format face model (a smooth dome with the official ``.mat`` fields, the
MediaPipe index and the eye-triangle files). Then ``generate`` runs on the example photo and a cut of the example
speech: landmarks, 3DMM fitting, segmentation (head/body masks stand in for the segmenter), HuBERT →
audio-to-motion → PNCC → Motion Adapter → volume render → HTB-SR → H.264 + AAC. The pictures are meaningless;
every stage and every loader is the real one.

Landmarks: MediaPipe's ``face_landmarker.task`` when the models folder (or ``landmarker``) has it; otherwise a
stand-in landmarker file that reports one fixed face in the middle of the photo (see
``geometry.landmarks.standin_layout``), so the self-test needs no download at all. Either way the stand-in
BFM's landmark vertices are laid out where those landmarks are, so the fit is well posed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import model_files
from ..errors import ModelFileError
from ..standins import (
    standin_face_layout,
    standin_masks,
    standin_speech,
    synthetic_avatar,
    write_standin_models,
    write_wav,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SELFTEST_SECONDS = 1.2      # 30 frames: the speech is cut so the run stays well under a minute on a CPU


@dataclass
class SelftestResult:
    path: Path
    frames: int
    size: int
    seconds: float           # rendering time (the one-off work of the portrait and the motion excluded)
    device: str
    speech_seconds: float
    landmarks: str           # "MediaPipe" or "stand-in"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")


def _example_inputs(folder: Path, seconds: float) -> tuple[Path, Path, float]:
    """The example photo and the first ``seconds`` of the example speech (a synthetic portrait and a tone
    stand in where the examples are not installed). Returns (image, speech, speech seconds)."""
    import cv2

    from ..audio.io import load_audio

    image = EXAMPLES / "portrait.png"
    if not image.is_file():
        card = ((synthetic_avatar(512).image[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
        image = folder / "portrait.png"
        cv2.imwrite(str(image), card.astype(np.uint8)[..., ::-1])
    speech = EXAMPLES / "speech.wav"
    if speech.is_file():
        pcm = load_audio(speech).pcm[0]
        samples = pcm[: int(round(seconds * 16000))].astype(np.float32) / 32768
    else:
        samples = standin_speech(seconds)
    cut = folder / "speech.wav"
    write_wav(cut, samples, 16000)
    return image, cut, len(samples) / 16000


def _find_landmarker(models_dir: Path | None) -> Path | None:
    found = model_files.BY_KEY["face_landmarker"].find(model_files.default_models_dir(models_dir))
    return found if found is not None and found.is_file() else None


def run_selftest(device: str = "auto", out: Path | None = None, seconds: float = SELFTEST_SECONDS,
                 models_dir: Path | None = None, landmarker: Path | None | str = "auto", seed: int = 0,
                 log=lambda message: None) -> SelftestResult:
    """``generate`` on stand-in models (see the module docstring) from the example photo and speech.

    Args:
        out: the mp4 (default: ``r3dp-selftest.mp4`` in the temporary directory).
        seconds: how much of the example speech to use; the clip has ``seconds × 25`` frames.
        models_dir: where to look for MediaPipe's face landmarker (nothing else is read from it).
        landmarker: ``"auto"`` (the models folder's, else the stand-in), a ``face_landmarker.task`` path, or None
            for the stand-in.
    """
    import cv2

    from ..geometry.crop import resize_square
    from ..geometry.landmarks import detect_image_points
    from .generate import generate
    from .inputs import load_image
    from .request import GenerateRequest

    if landmarker == "auto":
        landmarker = _find_landmarker(models_dir)
    out = Path(out) if out else Path(tempfile.gettempdir()) / "r3dp-selftest.mp4"
    with tempfile.TemporaryDirectory(prefix="r3dp-selftest-") as tmp:
        tmp = Path(tmp)
        image, speech, speech_seconds = _example_inputs(tmp, seconds)
        photo = load_image(image)
        if landmarker is not None:
            points, found = detect_image_points(resize_square(photo)[None], landmarker)
            if not found[0]:
                raise ModelFileError(f"MediaPipe found no face in {image} with {landmarker}; the landmarker file "
                                     "may be damaged: delete it and run `r3dp models fetch`.")
            layout = points[0] / 512
        else:
            layout = standin_face_layout()
        log("writing the stand-in models")
        video_model = write_standin_models(tmp / "models", layout, landmarker, seed)
        head, body = standin_masks(layout, *photo.shape[:2])
        cv2.imwrite(str(tmp / "head.png"), head)
        cv2.imwrite(str(tmp / "body.png"), body)
        request = GenerateRequest(image=image, audio=speech, out=out, models_dir=tmp / "models",
                                  head_mask=tmp / "head.png", body_mask=tmp / "body.png", device=device,
                                  dtype="fp32", seed=seed)
        summary = generate(request, log=log, video_model=video_model)
    return SelftestResult(summary.path, summary.frames, video_model.config.superresolution.output_resolution,
                          summary.seconds, str(next(video_model.parameters()).device), speech_seconds,
                          "MediaPipe" if landmarker is not None else "stand-in")
