"""A whole job made of synthetic stand-ins: a models folder in the layouts users download, and inputs.

Weights come from the shared parity manifests (``synth_weights.py``), the BFM from the shared synthetic-BFM
recipe, the face landmarker from ``shared/models``; HuBERT is the one-layer stand-in of ``r3dp_core.standins``
(which also holds the tiny video model and the wav writer the tests use with this folder). The pictures such
models make are meaningless, but every loader and every stage of the real job runs on them: the end-to-end tests
and the memory benchmark use this folder. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ..standins import write_tiny_hubert


def write_trainer_checkpoint(folder: Path, parity_dir: Path, name: str, step: int) -> Path:
    """``<name>/model_ckpt_steps_<step>.ckpt`` + ``config.yaml`` with the synthetic weights of manifest ``name``:
    the official trainer layout users download."""
    import yaml

    from .case import synth_state_dict

    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    checkpoint = target / f"model_ckpt_steps_{step}.ckpt"
    torch.save({"state_dict": {"model": dict(synth_state_dict(parity_dir, name))}, "global_step": step}, checkpoint)
    config = json.loads((parity_dir / f"config_{name}.json").read_text())
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    return checkpoint


def write_bfm(folder: Path, shared_dir: Path) -> Path:
    """The synthetic BFM (shared recipe) plus the official eye-triangle files, in ``BFM/``."""
    target = folder / "BFM"
    subprocess.run([sys.executable, str(shared_dir / "parity" / "case_geom_synth_bfm.py"), str(target)], check=True,
                   stdout=subprocess.DEVNULL)
    for name in ("bfm_left_eye_faces.npy", "bfm_right_eye_faces.npy"):
        shutil.copy(shared_dir / "official_data" / name, target / name)
    return target / "BFM_model_front.mat"


def write_models_folder(folder: Path, shared_dir: Path, *, bfm_folder: Path | None = None) -> Path:
    """Every file of a job except the 6-class segmenter (jobs give head/body masks instead).

    ``bfm_folder``: write the BFM there instead (to exercise folders merged from several roots).
    """
    parity = shared_dir / "parity"
    folder.mkdir(parents=True, exist_ok=True)
    write_trainer_checkpoint(folder, parity, "secc2plane_torso", 100000)
    write_trainer_checkpoint(folder, parity, "audio2secc_vae", 400000)
    write_tiny_hubert(folder)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    write_bfm(bfm_folder or folder, shared_dir)
    return folder


def short_speech(shared_dir: Path, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of the shared English speech clip from its first loud sample: (float32 samples, rate)."""
    import av

    with av.open(str(shared_dir / "testdata" / "speech_en_16k.wav")) as container:
        rate = container.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    # skip the leading silence so the clip has speech in it
    start = int(np.argmax(np.abs(samples) > 0.1 * np.abs(samples).max()))
    clip = samples[start:start + int(round(seconds * rate))]
    if clip.dtype.kind in "iu":
        clip = clip.astype(np.float32) / float(np.iinfo(clip.dtype).max)
    return clip.astype(np.float32), rate


def face_masks(image: np.ndarray, landmarker: Path) -> tuple[np.ndarray, np.ndarray]:
    """Head and body masks (uint8 [H,W]) from the 478 MediaPipe landmarks: a stand-in for the 6-class segmenter."""
    import cv2

    from r3dp_core.geometry.landmarks import detect_landmarks_image

    points = detect_landmarks_image(image[None], landmarker).points[0].numpy()
    height, width = image.shape[:2]
    hull = cv2.convexHull(points.astype(np.int32))
    head = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(head, hull, 255)
    top = points[:, 1].min()
    chin = points[:, 1].max()
    span = chin - top
    grown = cv2.dilate(head, np.ones((int(span * 0.25) | 1, int(span * 0.25) | 1), np.uint8))  # hair
    head = np.maximum(head, grown)
    body = np.zeros_like(head)
    left, right = points[:, 0].min(), points[:, 0].max()
    centre, half = (left + right) / 2, (right - left)
    body[int(chin - 0.1 * span):, int(max(0, centre - 1.4 * half)):int(min(width, centre + 1.4 * half))] = 255
    return head, body


def overlapping_people(image: np.ndarray, landmarker: Path, width: int = 1024, min_face_area: float = 0.2,
                       gap: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Two people side by side whose crop squares overlap: ``image`` (a portrait, [H,W,3] RGB) on the left and its
    mirror image on the right, their face centres 3/4 of a crop square apart (at ``min_face_area``), on a photo
    ``width`` wide. The left one fills the columns before the middle, the right one those after it; each one's
    head and body masks (``face_masks``) stop ``gap`` pixels short of the middle, so the masks show two separate
    people, and each square holds a strip of the other person.

    Returns:
        ``(photo [H,width,3], head [H,width], body [H,width]`` uint8 masks, ``seam``: the middle column``)``.
    """
    from r3dp_core.geometry.landmarks import detect_landmarks_image

    height, side = image.shape[:2]
    points = detect_landmarks_image(image[None], landmarker).points[0].numpy().astype(np.float64)
    (left, top), (right, bottom) = points.min(0), points.max(0)
    centre = (left + right) / 2
    distance = 0.75 * np.sqrt((right - left) * (bottom - top) / min_face_area)
    seam = width // 2
    # the left person's face centre lands at seam - distance/2, the mirrored one's at seam + distance/2
    offsets = (round(seam - distance / 2 - centre), round(seam + distance / 2 - (side - centre)))
    columns = np.arange(width)
    head, body = face_masks(image, landmarker)
    photo = np.empty((height, width, 3), np.uint8)
    masks = np.zeros((2, height, width), np.uint8)
    for person, (offset, picture, parts) in enumerate(
            ((offsets[0], image, (head, body)), (offsets[1], image[:, ::-1], (head[:, ::-1], body[:, ::-1])))):
        mine = columns < seam if person == 0 else columns >= seam
        source = np.clip(columns - offset, 0, side - 1)     # edge pixels replicated beyond the picture
        photo[:, mine] = picture[:, source[mine]]
        kept = columns < seam - gap if person == 0 else columns >= seam + gap
        for mask, part in zip(masks, parts):
            inside = (columns - offset >= 0) & (columns - offset < side) & kept
            mask[:, inside] = part[:, (columns - offset)[inside]]
    return photo, masks[0], masks[1], seam


def write_portrait(folder: Path, name: str, picture: np.ndarray, landmarker: Path) -> None:
    """``<name>.png`` (``picture``: BGR uint8, as OpenCV reads it) with its ``<name>_head.png`` and
    ``<name>_body.png`` masks (``face_masks``), for jobs run without the segmenter."""
    import cv2

    cv2.imwrite(str(folder / f"{name}.png"), picture)
    head, body = face_masks(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), landmarker)
    cv2.imwrite(str(folder / f"{name}_head.png"), head)
    cv2.imwrite(str(folder / f"{name}_body.png"), body)
