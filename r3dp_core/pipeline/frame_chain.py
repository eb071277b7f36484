"""The stages that run per frame, lazily: SECC → animated tri-planes → volume render → HTB-SR composite.

The once-per-portrait and once-per-clip stages that feed this chain (the avatar, the motion) are ``stages.py``;
the same builders for a batch of portraits, with previews and progress, are ``portrait_streams.py``.

Each builder wires one lazy ``FrameSource`` of ``stream.py`` on top of the one before it (nothing is computed
until frames are pulled) and is the one place that decides which sub-network of the video model the stage
runs, what it reads from the portrait and the motion, and what it prepares once per portrait. The CLI
(:func:`talking_frames`), the ComfyUI stage nodes (one builder each), the benchmark and the tests compose the
same builders. A further stage (e.g. pasting the frames back into the photo) is one more builder taking the
composite source.

    secc = secc_source(face, avatar, motion)                       # [T,3,512,512] driving SECC
    planes = plane_source(model, avatar, secc)                     # [T,3,32,256,256]
    renders = render_source(model, planes, pose, seed)             # RenderOutput, 128²
    frames = composite_source(model, avatar, renders, torso_keypoint_tracks(face, avatar, motion, pose))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import defaults
from ..errors import InputError
from ..geometry.bfm import to_camera
from ..geometry.camera import HeadPose
from ..geometry.keypoints import smooth_torso_keypoints, torso_keypoints
from ..geometry.secc import render_secc
from ..geometry.secc_edit import blink_secc, mouth_region_weights, scale_mouth_motion
from .face import FaceGeometry
from .stages import make_avatar
from .stream import CompositeSource, FrameSource, PlaneSource, RenderSource, SeccFrames, SeccSource
from .types import Avatar, Motion


def secc_images(face: FaceGeometry, identity: torch.Tensor, exp: torch.Tensor, frame_offset: int = 0,
                mouth_scale: float = 1.0, mouth_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SECC images of an identity with given expressions at zero pose.

    Args:
        face: the 3DMM and SECC mesh.
        identity: ``[1,80]`` identity coefficients.
        exp: ``[B,64]`` expression coefficients.
        frame_offset: the sequence index of ``exp[0]`` (drives the official triangle-0 quirk).
        mouth_scale: scales the expression's motion of the mouth region (``mouth_weights [N]``, see
            ``secc_edit.mouth_region_weights``): 1 leaves the expression as it is, 0 holds a neutral mouth.

    Returns:
        ``[B,3,512,512]`` in [-1,1].
    """
    device = face.bfm.mean_shape.device
    identity, exp = identity.to(device), exp.to(device)
    if mouth_scale == 1.0:
        shape = face.bfm.compute_shape(identity, exp)
    else:
        weights = mouth_weights.to(device) if mouth_weights is not None else None
        shape = scale_mouth_motion(face.bfm, identity, exp, mouth_scale, weights)
    return render_secc(to_camera(shape), face.secc_mesh, frame_offset=frame_offset)


def secc_source(face: FaceGeometry, avatar: Avatar, motion: Motion, mouth_scale: float = 1.0) -> SeccSource:
    """The driving SECC of a motion on the avatar's identity, with the canonical and source SECC (rendered now).

    Args:
        face: the 3DMM and SECC mesh (their device is where the SECC is rasterised).
        avatar: the portrait; only its identity ``id [1,80]`` is read.
        motion: ``exp [T,64]`` and the blink schedule (None: no blinks).
        mouth_scale: scales the mouth's motion in every driving frame (and the source, which is frame 0), 0..3.

    Returns:
        ``SeccSource`` of ``T`` frames ``[B,3,512,512]`` in [-1,1]; ``cano``/``src`` ``[1,3,512,512]``.
    """
    if not 0.0 <= mouth_scale <= defaults.MOUTH_SCALE_MAX:
        raise InputError(f"The mouth scale must be between 0 and {defaults.MOUTH_SCALE_MAX:g}, got {mouth_scale:g}.")
    identity = avatar.id[:1]
    zero = motion.exp.new_zeros(1, 64)
    weights = mouth_region_weights(face.bfm) if mouth_scale != 1.0 else None

    def render(exp: torch.Tensor, first_frame: int) -> torch.Tensor:
        # The sequence index drives the official triangle-0 quirk (every 50th frame and single renders).
        return secc_images(face, identity, exp, frame_offset=first_frame, mouth_scale=mouth_scale,
                           mouth_weights=weights)

    # src is driving frame 0, not the photo's fitted exp: official real3d_infer.py:404 renders exp[0:1] of the
    # driving sequence (case_geom_secc: src == drv[0] bitwise), and matching the official outputs is the default.
    return SeccSource(render_secc=render, exp=motion.exp, cano=render(zero, 0), src=render(motion.exp[:1], 0),
                      blink=motion.blink, blink_edited=motion.blink_edited,
                      edit_blink=blink_secc if motion.blink is not None else None)


def _model_placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def plane_source(model: torch.nn.Module, avatar: Avatar, secc: SeccSource | SeccFrames) -> PlaneSource:
    """Animated tri-planes: the avatar's canonical tri-plane plus the motion adapter's residual per frame.

    Args:
        model: the video model (``Secc2PlaneTorso``).
        avatar: the portrait with its canonical tri-plane ``planes [1,3,32,256,256]``.
        secc: the driving SECC with its ``cano`` and ``src`` SECC ``[1,3,512,512]``.

    Returns:
        ``PlaneSource`` of ``[B,3,32,256,256]`` chunks.
    """
    if avatar.planes is None:
        raise InputError("The avatar has no canonical tri-plane: make it from the portrait (Image→Triplane) or "
                         "load a saved avatar.")
    device, dtype = _model_placement(model)
    return PlaneSource(model.motion_adapter, avatar.planes.to(device, dtype), secc, secc.cano.to(device, dtype),
                       secc.src.to(device, dtype))


def render_source(model: torch.nn.Module, planes: FrameSource, pose: HeadPose | torch.Tensor,
                  seed: int = 0) -> RenderSource:
    """Volume renders of animated tri-planes under each frame's camera.

    Args:
        model: the video model (its volume decoder and render configuration).
        planes: tri-planes ``[B,3,32,256,256]`` per chunk (``plane_source``).
        pose: the head pose of every frame (cameras smoothed as the pose says), or EG3D cameras ``[T,25]``
            (``[1,25]``: one camera for every frame).
        seed: the renderer's sample jitter; every frame has its own stream, so chunking never changes a frame.

    Returns:
        ``RenderSource`` of ``RenderOutput`` chunks (``feature_image [B,C,R,R]``, ``weights [B,1,R,R]``, ...).
    """
    if isinstance(pose, HeadPose):
        if len(pose) != planes.num_frames:
            raise InputError(f"The head pose has {len(pose)} frames but the motion {planes.num_frames}.")
        cameras = pose.cameras()
    else:
        cameras = pose
    return RenderSource(model.volume_decoder, planes, cameras.float(), seed=seed, render_config=model.config.render)


@dataclass
class TorsoKeypoints:
    """The 68 keypoints that drive the torso warp, xy in [-1,1] and z 0.

    Attributes:
        source: ``[1,68,3]`` of the portrait's own fit.
        driving: ``[T,68,3]`` of every frame (smoothed over time as official).
    """

    source: torch.Tensor
    driving: torch.Tensor


def _with_z(keypoints: torch.Tensor) -> torch.Tensor:
    """``[B,68,2]`` → ``[B,68,3]`` with z = 0, the torso model's keypoint format."""
    return torch.cat([keypoints, keypoints.new_zeros(*keypoints.shape[:-1], 1)], dim=-1)


def torso_keypoint_tracks(face: FaceGeometry, avatar: Avatar, motion: Motion, pose: HeadPose) -> TorsoKeypoints:
    """The torso keypoints of the portrait and of every frame (its identity, the motion's expressions, the pose).

    Computed on the 3DMM's device from ``avatar`` (``id``, ``exp``, ``euler``, ``trans``), ``motion.exp [T,64]``
    and ``pose`` (``euler``/``trans`` ``[T,3]``; unsmoothed, as official).
    """
    bfm = face.bfm
    device = bfm.mean_shape.device
    identity = avatar.id[:1].to(device)
    source = torso_keypoints(bfm, identity, avatar.exp[:1].to(device), avatar.euler[:1].to(device),
                             avatar.trans[:1].to(device))
    driving = torso_keypoints(bfm, identity, motion.exp.to(device), pose.euler.to(device), pose.trans.to(device))
    return TorsoKeypoints(_with_z(source), _with_z(smooth_torso_keypoints(driving)))


def composite_source(model: torch.nn.Module, avatar: Avatar, renders: FrameSource, keypoints: TorsoKeypoints,
                     background: torch.Tensor | None = None, head_threshold: float | None = None) -> CompositeSource:
    """Final frames: HTB-SR of every render over the warped torso and the background, with masks.

    The portrait's frame-invariant reference (torso appearance, background features) is computed here, once,
    on the model's device: build the source where the model will run.

    Args:
        model: the video model (its HTB-SR).
        avatar: the portrait: ``torso_image``, ``background`` ``[1,3,512,512]`` and ``segmap [1,6,512,512]``.
        renders: ``RenderOutput`` chunks (``render_source``).
        keypoints: the torso keypoints (``torso_keypoint_tracks``).
        background: ``[1,3,512,512]`` in [-1,1] instead of the avatar's own background.
        head_threshold: ray weight above which a pixel counts as head (None: the official 0.9).

    Returns:
        ``CompositeSource`` of HTB-SR outputs (``image [B,3,S,S]`` in [-1,1], ``head_mask``, ``torso_mask``,
        ``person_mask`` ``[B,1,S,S]``).
    """
    device, dtype = _model_placement(model)
    plate = avatar.background if background is None else background
    reference = model.prepare_reference(*(t.to(device, dtype) for t in (
        avatar.torso_image, plate, avatar.segmap, keypoints.source)))
    return CompositeSource(model.htbsr, reference, renders, keypoints.driving, head_threshold=head_threshold)


def talking_frames(model: torch.nn.Module, face: FaceGeometry, avatar: Avatar, motion: Motion, pose: HeadPose,
                   seed: int = 0, head_threshold: float | None = None, mouth_scale: float = 1.0) -> CompositeSource:
    """The lazy frame source of a whole clip: the four stages chained for one portrait (chunks of HTB-SR
    outputs, frames + masks). An avatar without its tri-plane gets it here."""
    if avatar.planes is None:
        avatar = make_avatar(model, avatar)
    secc = secc_source(face, avatar, motion, mouth_scale)
    renders = render_source(model, plane_source(model, avatar, secc), pose, seed)
    return composite_source(model, avatar, renders, torso_keypoint_tracks(face, avatar, motion, pose),
                            head_threshold=head_threshold)
