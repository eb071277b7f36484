"""``r3dp doctor --selftest``'s personalise part: ``r3dp personalise --preset tiny`` end to end on stand-ins, no
download, in well under a minute on a CPU. It sits here, beside the generate self-test (``selftest.py``), because
it builds on the stand-ins (``standins.py``), which sit above ``talk3d/`` in the package's layers.

A temporary folder gets the Talk3D stand-ins (``standins.write_talk3d_models``: the tiny EG3D generator and a
miniature wav2vec2) and a face landmarker: MediaPipe's ``face_landmarker.task`` from the models folder when it is
there, else the stand-in landmarker (one fixed face, no blend shapes: the blink track is 0). A ~6 s talking video is
made from the example photo and speech (``standins.write_talking_video``; a test card and a tone where the examples
are not installed, always with the stand-in landmarker since MediaPipe finds no face on a test card). Then the
real ``personalise`` runs on it with the tiny preset cut further (:data:`SELFTEST_OVERRIDES`): preparation, phase
A, the U-Net steps, the super-resolution fine-tune, the held-out evaluation and the persona files, which are read
back. The numbers are meaningless; every stage is the real one.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..standins import (
    EXAMPLE_FACE,
    TalkingFace,
    standin_face_layout,
    standin_speech,
    synthetic_avatar,
    write_talk3d_models,
    write_talking_video,
)
from .selftest import EXAMPLES

SELFTEST_SECONDS = 6.0      # above the preparation's 5 s minimum
SELFTEST_STEPS = 10         # U-Net steps
#: The tiny preset cut to a few steps of every stage (the preset's schedule takes minutes on a CPU).
SELFTEST_OVERRIDES = {"inversion_steps": 3, "tune_steps": 2, "camera_first_steps": 2, "camera_steps": 1,
                      "sr_steps": 2, "save_every": SELFTEST_STEPS, "preview_frames": 1, "eval_frames": 4}
#: Where the face of the test card (``standins.synthetic_avatar(512)``) is, when the example photo is missing.
CARD_FACE = TalkingFace(centre=(256.0, 205.0), mouth=(256.0, 260.0), eyes=((215.0, 180.0), (297.0, 180.0)),
                        crop_side=300.0, no_face=(40.0, 40.0))


@dataclass
class PersonaliseSelftestResult:
    frames: int                 # frames of the prepared video
    steps: int                  # U-Net steps trained
    seconds: float              # wall time of the whole self-test (stand-ins, video, personalise, read-back)
    psnr: float                 # held-out PSNR after training (dB)
    psnr_at_start: float        # ... before the U-Net's first step
    landmarks: str              # "MediaPipe" or "stand-in"
    device: str
    video_seconds: float
    notes: list[str] = field(default_factory=list)   # what personalise said (notes on the missing loss networks, ...)

    def summary(self) -> str:
        return (f"{self.frames} frames ({self.video_seconds:.1f} s), {self.steps} U-Net steps, held-out PSNR "
                f"{self.psnr:.2f} dB (at start {self.psnr_at_start:.2f}), landmarks: {self.landmarks}, "
                f"{self.seconds:.1f} s on {self.device}")


def _example_photo_and_speech() -> tuple[np.ndarray, np.ndarray, TalkingFace | None]:
    """The example photo (RGB uint8), its speech (16 kHz float32) and where the face is; a test card (face None:
    MediaPipe cannot find it) and a tone where the examples are not installed."""
    import cv2

    from ..audio.io import load_audio

    image = EXAMPLES / "portrait.png"
    photo = cv2.imread(str(image)) if image.is_file() else None
    if photo is not None and photo.shape[:2] == (512, 512):
        photo, face = cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), EXAMPLE_FACE
    else:
        card = ((synthetic_avatar(512).image[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
        photo, face = np.ascontiguousarray(card.astype(np.uint8)), None
    speech = EXAMPLES / "speech.wav"
    if speech.is_file():
        samples = load_audio(speech).pcm[0].astype(np.float32) / 32768
    else:
        samples = standin_speech(SELFTEST_SECONDS)
    return photo, samples, face


def _find_landmarker(models_dir: Path | None) -> Path | None:
    from .. import model_files
    from ..geometry.landmarks import standin_layout

    found = model_files.BY_KEY["face_landmarker"].find(model_files.default_models_dir(models_dir))
    if found is None or not found.is_file() or standin_layout(found) is not None:
        return None
    return found


def run_personalise_selftest(device: str = "auto", models_dir: Path | None = None,
                             log: Callable[[str], None] = lambda message: None) -> PersonaliseSelftestResult:
    """``personalise --preset tiny`` on stand-ins (module docstring); returns its figures.

    Args:
        device: where the training runs (``auto``, ``cpu``, ``cuda``, ...).
        models_dir: where to look for MediaPipe's face landmarker (nothing else is read from it, nothing written).
        log: one line per stage (``personalise``'s own messages go to the result's ``notes``: on stand-ins they
            are mostly about the absent loss networks and segmenter, which the self-test does without).

    Raises:
        ModelFileError: the persona written could not be read back, or its metrics are missing.
    """
    import shutil

    from ..device import resolve_device
    from ..geometry.landmarks import write_standin_landmarker
    from ..talk3d.persona import read_persona
    from ..talk3d.personalise.run import PersonaliseOptions, personalise

    started = time.perf_counter()
    resolved = resolve_device(device)
    photo, speech, face = _example_photo_and_speech()
    landmarker = _find_landmarker(models_dir) if face is not None else None
    with tempfile.TemporaryDirectory(prefix="r3dp-personalise-selftest-") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        log("writing the Talk3D stand-ins (tiny EG3D generator, miniature wav2vec2)")
        write_talk3d_models(models)
        slot = models / "face_landmarker.task"
        if landmarker is not None:
            shutil.copyfile(landmarker, slot)
        else:
            write_standin_landmarker(slot, standin_face_layout())
        log(f"writing a {SELFTEST_SECONDS:.0f} s talking video of the example photo")
        video = write_talking_video(tmp / "talking.mp4", SELFTEST_SECONDS, photo=photo, speech=speech,
                                    face=face or CARD_FACE)
        options = PersonaliseOptions(video=video, out=tmp / "persona", preset="tiny", steps=SELFTEST_STEPS,
                                     face="largest", models_dir=models, device=device,
                                     preset_overrides=dict(SELFTEST_OVERRIDES))
        log(f"personalise --preset tiny (cut to a few steps a stage), {SELFTEST_STEPS} U-Net steps on {resolved}")
        notes: list[str] = []
        result = personalise(options, say=notes.append)
        metrics_file = tmp / "persona" / "metrics.json"
        if not metrics_file.is_file():
            raise ModelFileError(f"personalise finished without writing {metrics_file}; the installation is "
                                 "incomplete or the temporary folder is not writable. Reinstall r3dp and run "
                                 "`r3dp doctor --selftest` again.")
        heldout = json.loads(metrics_file.read_text())["heldout"]
        persona = read_persona(tmp / "persona")
        frames, steps = persona.num_frames, int(persona.info["steps"]["unet"])
    if steps != result.step:
        raise ModelFileError(f"the persona read back says {steps} U-Net steps, the training {result.step}; the "
                             "persona files are not written consistently. Reinstall r3dp and run "
                             "`r3dp doctor --selftest` again.")
    return PersonaliseSelftestResult(
        frames=frames, steps=steps, seconds=time.perf_counter() - started,
        psnr=float(heldout.get("psnr", math.nan)), psnr_at_start=float(heldout.get("psnr_at_start") or math.nan),
        landmarks="MediaPipe" if landmarker is not None else "stand-in", device=str(resolved),
        video_seconds=SELFTEST_SECONDS, notes=notes)
