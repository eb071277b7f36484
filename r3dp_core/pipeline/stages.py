"""The non-streaming stages of a talking-portrait job, shared by the CLI and the ComfyUI nodes.

``prepare_source`` (crop, landmarks, 3DMM fit, segmentation, torso/background plates) and
``make_avatar`` (canonical tri-plane) run once per portrait; ``talking_frames`` wires a motion, a head
pose and an avatar into the lazy ``CompositeSource`` of ``stream.py``, which produces frames chunk by chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..geometry.bfm import FaceModel3DMM, to_camera
from ..geometry.camera import HeadPose, driving_pose, static_pose
from ..geometry.crop import prepare_source_image
from ..geometry.fitting import fit_image
from ..geometry.inpaint import extract_background, inpaint_torso, resize_background
from ..geometry.keypoints import smooth_torso_keypoints, torso_keypoints
from ..geometry.secc import SECCMesh, render_secc
from ..geometry.secc_edit import blink_secc, mouth_region_weights, scale_mouth_motion
from ..geometry.segmentation import (
    head_mask,
    keep_region,
    label_map_from_masks,
    one_hot_segmap,
    segment_selfie_multiclass,
)
from ..geometry.uint8_images import as_uint8_frames
from .images import u8_image_to_tensor
from .paste_back import photo_canvas
from .stream import CompositeSource, PlaneSource, PnccSource, RenderSource
from .types import Avatar, Motion

MAX_MOUTH_GAIN = 3.0


@dataclass
class FaceKit:
    """The non-neural models: the 3DMM, the SECC mesh and the MediaPipe model files."""

    bfm: FaceModel3DMM
    secc_mesh: SECCMesh
    landmarker_path: Path
    segmenter_path: Path | None = None


@dataclass
class PortraitMasks:
    """Head (and optionally body) masks in the coordinates of the portrait photo, used instead of a segmenter.

    head, body: ``[H,W]`` float in [0,1] (or bool), any resolution; a pixel is in a mask when > ``threshold``.
    """

    head: torch.Tensor
    body: torch.Tensor | None = None
    threshold: float = 0.5


def with_z(keypoints: torch.Tensor) -> torch.Tensor:
    """``[B,68,2]`` → ``[B,68,3]`` with z = 0, the torso model's keypoint format."""
    return torch.cat([keypoints, keypoints.new_zeros(*keypoints.shape[:-1], 1)], dim=-1)


def prepare_source(image: np.ndarray | torch.Tensor, kit: FaceKit, labels: torch.Tensor | None = None,
                   background: np.ndarray | torch.Tensor | None = None, min_face_area: float = 0.2,
                   face: str | int = "largest", masks: PortraitMasks | None = None) -> Avatar:
    """Everything about one portrait except its tri-plane (official ``prepare_batch_from_inp``, source part).

    Args:
        image: ``[H,W,3]`` RGB uint8 (or float in [0,1]) at any resolution.
        kit: the face models.
        labels: optional ``[512,512]`` 6-class label map in the source crop's coordinates; default: MediaPipe's.
        masks: optional head/body masks in the photo's coordinates, mapped through the same crop (instead of
            ``labels`` or the segmenter).
        background: optional ``[h,w,3]`` background image; default: the KNN-filled background of the photo.
        min_face_area: the face covers at least this fraction of the square cut around it (official 0.2).
        face: ``'largest'`` or an index into the photo's faces ordered left to right (``geometry.framing``).

    Returns:
        ``Avatar`` without ``planes`` (see ``make_avatar``).
    """
    source = prepare_source_image(image, kit.landmarker_path, min_face_area, face=face)
    image_512 = source.image_512.cpu()
    fit = fit_image(kit.bfm, source.points.cpu().float(), float(source.image.shape[0]))
    if labels is None and masks is not None:
        body = source.map_plane(masks.body) if masks.body is not None else None
        labels = label_map_from_masks(source.map_plane(masks.head), body, masks.threshold)[0]
    if labels is None:
        if kit.segmenter_path is None:
            raise InputError("No segmentation given and no segmenter model loaded: load "
                             "selfie_multiclass_256x256.tflite or pass a head mask.")
        labels = segment_selfie_multiclass(image_512, kit.segmenter_path)[0]
    labels = labels.reshape(image_512.shape[:2]).cpu().long()
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
                  photo=torch.from_numpy(photo), photo_square=torch.tensor(square.as_tensor_values()))


def make_avatar(model: torch.nn.Module, avatar: Avatar) -> Avatar:
    """Add the canonical tri-plane (Image→Triplane of the head-only image) to a prepared portrait."""
    param = next(model.parameters())
    planes = model.canonical_planes(avatar.head_image.to(param.device, param.dtype))
    return Avatar(**{**avatar.__dict__, "planes": planes})


def secc_images(kit: FaceKit, identity: torch.Tensor, exp: torch.Tensor, frame_offset: int = 0,
                mouth_gain: float = 1.0, mouth_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SECC/PNCC images ``[B,3,512,512]`` in [-1,1] of ``identity [1,80]`` with ``exp [B,64]`` at zero pose.

    ``mouth_gain`` scales the expression's motion of the mouth region (``mouth_weights [N]``, see
    ``secc_edit.mouth_region_weights``): 1 leaves the expression as it is, 0 holds a neutral mouth.
    """
    device = kit.bfm.mean_shape.device
    identity, exp = identity.to(device), exp.to(device)
    if mouth_gain == 1.0:
        shape = kit.bfm.compute_shape(identity, exp)
    else:
        weights = mouth_weights.to(device) if mouth_weights is not None else None
        shape = scale_mouth_motion(kit.bfm, identity, exp, mouth_gain, weights)
    return render_secc(to_camera(shape), kit.secc_mesh, frame_offset=frame_offset)


def pncc_source(kit: FaceKit, avatar: Avatar, motion: Motion, mouth_gain: float = 1.0) -> PnccSource:
    """Lazy driving SECC of a motion for the avatar's identity, with the canonical and source SECC.

    ``mouth_gain`` scales the mouth's motion in every driving frame (and the source, which is frame 0).
    """
    if not 0.0 <= mouth_gain <= MAX_MOUTH_GAIN:
        raise InputError(f"The mouth scale must be between 0 and {MAX_MOUTH_GAIN:g}, got {mouth_gain:g}.")
    identity = avatar.id[:1]
    zero = motion.exp.new_zeros(1, 64)
    weights = mouth_region_weights(kit.bfm) if mouth_gain != 1.0 else None

    def render(exp: torch.Tensor, first_frame: int) -> torch.Tensor:
        # The sequence index drives the official triangle-0 quirk (every 50th frame and single renders).
        return secc_images(kit, identity, exp, frame_offset=first_frame, mouth_gain=mouth_gain, mouth_weights=weights)

    return PnccSource(render_secc=render, exp=motion.exp, cano=render(zero, 0), src=render(motion.exp[:1], 0),
                      blink=motion.blink, blink_edited=motion.blink_edited,
                      edit_blink=blink_secc if motion.blink is not None else None)


def speech_motion(audio, a2m: torch.nn.Module, hubert: torch.nn.Module, *, mouth_amp: float = 0.45,
                  temperature: float = 0.2, seed: int = 0, blink: bool = True, sound: dict | None = None,
                  progress=None) -> Motion:
    """Expressions from speech (``audio_to_motion``), cut to the clip at 25 fps as the official mux does
    (``-shortest``), with the official blink schedule; ``sound`` travels with the motion for muxing.

    ``audio`` is an ``Audio16k``; ``progress(done, total)`` follows the audio model's windows.
    """
    from ..audio.blink import blink_schedule
    from ..audio.motion import audio_to_motion

    exp = audio_to_motion(audio, a2m, hubert, mouth_amp=mouth_amp, temperature=temperature, seed=seed,
                          progress=progress)
    exp = exp[: max(1, math.floor(audio.duration_s * 25 + 0.5))].float().cpu()
    if not blink:
        return Motion(exp=exp, audio=sound)
    schedule = blink_schedule(exp.shape[0], seed=seed)
    return Motion(exp=exp, blink=schedule.closure, blink_edited=schedule.edited, audio=sound)


def head_pose(avatar: Avatar, motion: Motion, mode: str = "auto") -> HeadPose:
    """``static`` (source pose held), ``driving`` (the motion's own pose mapped onto the source), or ``auto``."""
    if mode == "auto":
        mode = "driving" if motion.euler is not None else "static"
    if mode == "static":
        return static_pose(avatar.euler[:1], avatar.trans[:1], motion.num_frames)
    if mode == "driving":
        if motion.euler is None or motion.trans is None:
            raise InputError("This motion carries no head pose (audio-driven); use the static pose or a pose video.")
        return driving_pose(motion.euler, motion.trans, motion.num_frames, avatar.euler[:1], avatar.trans[:1])
    raise InputError(f"Unknown head-pose mode {mode!r}: use static, driving or auto.")


def talking_frames(model: torch.nn.Module, kit: FaceKit, avatar: Avatar, motion: Motion, pose: HeadPose,
                   seed: int = 0, head_threshold: float | None = None, mouth_gain: float = 1.0) -> CompositeSource:
    """The lazy frame source of a whole clip: chunks of HTB-SR outputs (frames + masks)."""
    if len(pose) != motion.num_frames:
        raise InputError(f"The head pose has {len(pose)} frames but the motion {motion.num_frames}.")
    param = next(model.parameters())
    if avatar.planes is None:
        avatar = make_avatar(model, avatar)
    pncc = pncc_source(kit, avatar, motion, mouth_gain)
    planes = PlaneSource(model.secc_img2plane_backbone, avatar.planes.to(param.device, param.dtype), pncc,
                         pncc.cano.to(param.device, param.dtype), pncc.src.to(param.device, param.dtype))
    renders = RenderSource(model.decoder, planes, pose.cameras().float(), seed=seed,
                           render_config=model.config.render)
    identity = avatar.id[:1].to(kit.bfm.mean_shape.device)
    kp_source = with_z(torso_keypoints(kit.bfm, identity, avatar.exp[:1], avatar.euler[:1], avatar.trans[:1]))
    kp_driving = torso_keypoints(kit.bfm, identity, motion.exp.to(identity.device), pose.euler, pose.trans)
    kp_driving = with_z(smooth_torso_keypoints(kp_driving))
    reference = model.prepare_reference(*(t.to(param.device, param.dtype) for t in (
        avatar.torso_image, avatar.background, avatar.segmap, kp_source)))
    return CompositeSource(model.superresolution, reference, renders, kp_driving, head_threshold=head_threshold)
