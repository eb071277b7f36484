"""The stages that run once, eagerly: once per portrait and once per clip, shared by the CLI and the ComfyUI nodes.

``prepare_source`` (crop, landmarks, 3DMM fit, segmentation, torso/background plates) and ``make_avatar``
(canonical tri-plane) run once per portrait, ``speech_motion`` once per clip, and each returns its value. What
runs per frame is not here: ``frame_chain.py`` builds those stages as lazy sources (nothing computed until frames
are pulled), ``portrait_streams.py`` builds them for a batch of portraits (the stage nodes), and ``avatars.py``
runs these per-portrait stages over a batch of photos (Image → Triplane).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .. import defaults
from ..errors import InputError
from ..geometry.crop import prepare_source_image
from ..geometry.fitting import fit_image
from ..geometry.framing import photo_canvas
from ..geometry.inpaint import extract_background, inpaint_torso, resize_background
from ..geometry.segmentation import (
    head_mask,
    keep_region,
    label_map_from_masks,
    one_hot_segmap,
    restrict_to_person,
)
from ..images import as_uint8_frames, u8_image_to_tensor
from .face import FaceKit
from .types import Avatar, Motion, PortraitMasks


def prepare_source(image: np.ndarray | torch.Tensor, kit: FaceKit, labels: torch.Tensor | None = None,
                   background: np.ndarray | torch.Tensor | None = None, min_face_area: float = defaults.MIN_FACE_AREA,
                   face: str | int = "largest", masks: PortraitMasks | None = None) -> Avatar:
    """Everything about one portrait except its tri-plane (official ``prepare_batch_from_inp``, source part).

    Args:
        image: ``[H,W,3]`` RGB uint8 (or float in [0,1]) at any resolution.
        kit: the face models (the landmarker; the segmenter unless ``labels`` or ``masks`` are given).
        labels: optional ``[512,512]`` 6-class label map in the source crop's coordinates; default: MediaPipe's.
        masks: optional head/body masks in the photo's coordinates (the first of the batch is this portrait's),
            mapped through the same crop (instead of ``labels`` or the segmenter).
        background: optional ``[h,w,3]`` background image; default: the KNN-filled background of the photo.
        min_face_area: the face covers at least this fraction of the square cut around it (official 0.2).
        face: ``'largest'`` or an index into the photo's faces ordered left to right (``geometry.framing``).

    When the photo shows other faces, the segmentation keeps only the chosen person (``restrict_to_person``: the
    connected region holding the chosen face), so a neighbour inside the square joins neither the head nor the
    torso and stays in the background plate; the avatar's ``other_people`` marks the neighbours for paste-back.

    Returns:
        ``Avatar`` without ``planes`` (see ``make_avatar``).
    """
    source = prepare_source_image(image, kit.landmarker_path, min_face_area, face=face)
    image_512 = source.image_512.cpu()
    fit = fit_image(kit.bfm, source.points.cpu().float(), float(source.image.shape[0]))
    if labels is None and masks is not None:
        body = source.map_plane(masks.body[0]) if masks.body is not None else None
        labels = label_map_from_masks(source.map_plane(masks.head[0]), body, masks.threshold)[0]
    if labels is None:
        if kit.segmenter_path is None:
            raise InputError("No segmentation given and no segmenter model loaded: load "
                             "selfie_multiclass_256x256.tflite or pass a head mask.")
        labels = kit.segment(image_512)[0]
    labels = labels.reshape(image_512.shape[:2]).cpu().long()
    other_people = None
    if source.other_faces:
        to_512 = image_512.shape[0] / source.image.shape[0]
        labels, others = restrict_to_person(labels, source.points.cpu().double().numpy() * to_512,
                                            [points * to_512 for points in source.other_faces])
        other_people = others[None, None].float() if bool(others.any()) else None
    picture = u8_image_to_tensor(image_512)
    if not bool(head_mask(labels[None]).any()):
        raise InputError("The segmentation found no head in the portrait; use a photo where the head is clearly "
                         "visible, or connect a head mask.")
    torso = u8_image_to_tensor(inpaint_torso(image_512, labels))
    plate = resize_background(background) if background is not None else extract_background(image_512, labels)
    photo, square, _ = photo_canvas(as_uint8_frames(image)[0], source.square)
    return Avatar(image=picture, id=fit.id, exp=fit.exp, euler=fit.euler, trans=fit.trans,
                  head_image=keep_region(picture, head_mask(labels[None])), torso_image=torso,
                  background=u8_image_to_tensor(plate), segmap=one_hot_segmap(labels[None]),
                  photo=torch.from_numpy(photo), photo_square=torch.tensor(square.as_tensor_values()),
                  other_people=other_people, face_index=torch.tensor([source.face_index]))


def make_avatar(model: torch.nn.Module, avatar: Avatar) -> Avatar:
    """Add the canonical tri-plane (Image→Triplane of the head-only image) to a prepared portrait."""
    param = next(model.parameters())
    planes = model.canonical_planes(avatar.head_image.to(param.device, param.dtype))
    return Avatar(**{**avatar.__dict__, "planes": planes})


def speech_motion(sound, a2m: torch.nn.Module, hubert: torch.nn.Module, *, mouth_amp: float = defaults.MOUTH_AMP,
                  temperature: float = defaults.TEMPERATURE, seed: int = 0, blink: bool = defaults.BLINK,
                  progress=None) -> Motion:
    """Expressions from speech (``audio_to_motion`` on the sound's 16 kHz view), cut to the clip at 25 fps as the
    official mux does (``-shortest``), with the official blink schedule; the sound itself travels with the motion
    for muxing.

    ``sound`` is a ``Sound`` (or what ``audio.io.load_sound`` reads); ``progress(done, total)`` follows the audio
    model's windows.
    """
    from ..audio.io import load_audio, load_sound
    from ..audio.motion import audio_to_motion

    sound = load_sound(sound)
    audio = load_audio(sound)
    exp = audio_to_motion(audio, a2m, hubert, mouth_amp=mouth_amp, temperature=temperature, seed=seed,
                          progress=progress)
    exp = exp[: max(1, math.floor(audio.duration_s * defaults.MOTION_FPS + 0.5))].float().cpu()
    return with_blinks(Motion(exp=exp, audio=sound), blink, seed)


def with_blinks(motion: Motion, enabled: bool, seed: int = 0) -> Motion:
    """The motion with the official periodic blink schedule (or without blinks when not ``enabled``).

    The official pipeline blinks the driving SECC whatever drives it (speech, a video, a coefficient file); a
    motion that already has a schedule (e.g. a saved audio motion) keeps it.
    """
    from ..geometry.blink import blink_schedule

    if not enabled:
        return dataclasses.replace(motion, blink=None, blink_edited=None)
    if motion.blink is not None:
        return motion
    schedule = blink_schedule(motion.num_frames, seed=seed)
    return dataclasses.replace(motion, blink=schedule.closure, blink_edited=schedule.edited)
