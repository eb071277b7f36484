"""Files the end-to-end run needs: synthetic-weight models in the official layouts, short clips, a driving video
and masks. Nothing is downloaded; weights come from the shared parity manifests (``synth_weights.py``), the BFM
from the shared synthetic-BFM recipe, the face landmarker from ``shared/models``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from r3dp_core.parity.synthetic_job import face_masks, overlapping_people, short_speech, write_models_folder
from r3dp_core.standins import write_wav

SHORT_SECONDS = 0.32          # 8 frames at 25 fps: every workflow renders a short clip
PORTRAIT = "portrait.png"
SPEECH = "speech.wav"
DRIVING = "driving.mp4"
BACKGROUND = "background.png"
HEAD_MASK = "portrait_head_mask.png"
BODY_MASK = "portrait_body_mask.png"
TWO_PEOPLE = "two_people.png"                  # 1024x512: the portrait and its mirror image, squares overlapping
TWO_PEOPLE_HEAD_MASK = "two_people_head_mask.png"
TWO_PEOPLE_BODY_MASK = "two_people_body_mask.png"
SECOND_SPEECH = "speech_second_voice.wav"      # the second person's clip: later words of the same recording
PERSONA = "presenter"                          # the stand-in persona (tiny, random) the speech workflow animates
PERSONA_TRAINING_VIDEO = "persona_training.mp4"  # a synthetic talking video of the portrait: Personalise's input
PERSONA_TRAINING_SECONDS = 6.0


def write_models(default_root: Path, extra_root: Path, shared_dir: Path) -> None:
    """Models in ComfyUI's default ``models/real3dportrait`` and, to exercise extra_model_paths merging, the BFM in
    a second folder registered under the same key. The 6-class segmenter is deliberately absent."""
    write_models_folder(default_root, shared_dir, bfm_folder=extra_root)


def write_persona_models(default_root: Path) -> Path:
    """What the persona workflows need in ``models/real3dportrait``: the tiny EG3D prior and the miniature wav2vec2
    (``standins.write_talk3d_models``) beside the face landmarker, and the stand-in persona ``PERSONA`` (tiny, random
    networks) in ``personas/`` with its synthetic source video beside it. Returns the persona folder."""
    from r3dp_core.standins import write_talk3d_models
    from r3dp_core.talk3d.standin_persona import write_standin_persona

    write_talk3d_models(default_root)
    return write_standin_persona(default_root / "personas" / PERSONA, seconds=2.0, seed=0)


def write_inputs(input_dir: Path, shared_dir: Path) -> dict:
    """Portrait, a short speech clip, a short driving video with sound, a background and head/body masks; the photo
    of two people has them side by side with overlapping crop squares (each square holds a strip of the other
    person), with their masks (the left person's stop 4 px short of ``two_people_seam``)."""
    import cv2

    from r3dp_core.video_io import VideoWriter

    input_dir.mkdir(parents=True, exist_ok=True)
    portrait = cv2.cvtColor(cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)
    cv2.imwrite(str(input_dir / PORTRAIT), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    samples, rate = short_speech(shared_dir, SHORT_SECONDS)
    write_wav(input_dir / SPEECH, samples, rate)
    # a driving "video": the portrait nodding slightly, 25 fps, with the same speech
    frames = []
    count = int(round(SHORT_SECONDS * 25))
    for i in range(count):
        angle = 4.0 * np.sin(2 * np.pi * i / count)
        matrix = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
        frames.append(cv2.warpAffine(portrait, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT))
    audio = {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": rate}
    with VideoWriter(input_dir / DRIVING, fps=25, audio=audio) as writer:
        writer.write(np.stack(frames))
    y, x = np.mgrid[0:360, 0:640]
    background = np.stack([x * 255 // 640, y * 255 // 360, np.full_like(x, 128)], -1).astype(np.uint8)
    cv2.imwrite(str(input_dir / BACKGROUND), cv2.cvtColor(background, cv2.COLOR_RGB2BGR))
    head, body = face_masks(portrait, shared_dir / "models" / "face_landmarker.task")
    cv2.imwrite(str(input_dir / HEAD_MASK), head)
    cv2.imwrite(str(input_dir / BODY_MASK), body)
    two, two_head, two_body, seam = overlapping_people(portrait, shared_dir / "models" / "face_landmarker.task")
    cv2.imwrite(str(input_dir / TWO_PEOPLE), cv2.cvtColor(two, cv2.COLOR_RGB2BGR))
    for name, mask in ((TWO_PEOPLE_HEAD_MASK, two_head), (TWO_PEOPLE_BODY_MASK, two_body)):
        cv2.imwrite(str(input_dir / name), mask)
    later, _ = short_speech(shared_dir, 3 * SHORT_SECONDS)
    write_wav(input_dir / SECOND_SPEECH, later[-len(samples):], rate)
    _write_training_video(input_dir / PERSONA_TRAINING_VIDEO, portrait, shared_dir)
    return {"seconds": len(samples) / rate, "frames": count, "two_people_seam": seam}


def _write_training_video(path: Path, portrait: np.ndarray, shared_dir: Path) -> None:
    """The portrait talking (``standins.write_talking_video``: head motion, the mouth following the shared speech,
    blinks), 256², 25 fps, with the speech: what the Personalise workflow trains on."""
    import soundfile

    from r3dp_core.standins import write_talking_video

    speech, rate = soundfile.read(str(shared_dir / "testdata" / "speech_en_16k.wav"), dtype="float32", always_2d=True)
    assert rate == 16000
    write_talking_video(path, PERSONA_TRAINING_SECONDS, photo=portrait, speech=speech[:, 0], size=256)
