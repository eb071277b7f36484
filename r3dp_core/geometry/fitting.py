"""3DMM fitting from MediaPipe landmarks (landmark-only, no photometric term), as the official fitters.

Both fits start every coefficient at zero and run Adam (lr 0.1, default betas/eps):

1. ``pose_steps`` steps on (euler, trans) alone, landmark loss only;
2. ``joint_steps`` steps with a *new* Adam on (id, exp) **plus the stage-1 Adam with its moment state**,
   both stepping every iteration; loss = landmarks + ``id_reg``·mean(id²) + ``exp_reg``·mean(exp²)
   (+ temporal Laplacian terms for videos).

The official third "fine" stage writes its results back through advanced indexing, a no-op, so the
official outputs are the stage-2 values; it is not run here. All frames are optimised together as one
batch (no per-frame loop); runs are bit-deterministic on a given device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bfm import (
    MP468_UNMATCHED,
    N_EXP,
    N_ID,
    N_MP468,
    FaceModel3DMM,
    pixels_to_fit_space,
    posed_vertices_cam,
    project_to_fit_space,
)

#: MediaPipe landmark groups that the landmark loss weights (``face_landmarker.py`` of the official code).
EYE_IDS = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
           263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
UPPER_EYELID_IDS = (161, 160, 159, 158, 157, 388, 387, 386, 385, 384)
INNER_LIP_IDS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)


@dataclass(frozen=True)
class FitConfig:
    """Schedule, loss weights and regularisers of a landmark fit (defaults: the official image fit)."""

    pose_steps: int = 200
    joint_steps: int = 200
    lr: float = 0.1
    id_reg: float = 0.3
    exp_reg: float = 0.05
    eye_weight: float = 5.0
    #: overrides ``eye_weight`` on the upper eyelids (video fit); ``None`` keeps the eye weight
    upper_eyelid_weight: float | None = None
    lip_weight: float = 2.0
    #: weight of the temporal Laplacian of exp (video fit); 0 disables every temporal term
    lap_weight: float = 0.0
    #: extra factor of the Laplacian of euler and trans
    pose_lap_weight: float = 0.0


IMAGE_FIT = FitConfig()
VIDEO_FIT = FitConfig(id_reg=0.2, exp_reg=0.6, eye_weight=3.0, upper_eyelid_weight=20.0, lip_weight=5.0,
                      lap_weight=1.0, pose_lap_weight=0.3)


@dataclass(frozen=True)
class FittedCoeffs:
    """3DMM coefficients: ``id [1 or B,80]``, ``exp [T,64]``, ``euler [T,3]`` (radians), ``trans [T,3]`` (dm)."""

    id: torch.Tensor
    exp: torch.Tensor
    euler: torch.Tensor
    trans: torch.Tensor


def landmark_weights(config: FitConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-landmark loss weights ``[468]``: 1, eyes, upper eyelids, lips, then 0 for the unmatched ids."""
    w = torch.ones(N_MP468, device=device)
    w[list(EYE_IDS)] = config.eye_weight
    if config.upper_eyelid_weight is not None:
        w[list(UPPER_EYELID_IDS)] = config.upper_eyelid_weight
    w[list(INNER_LIP_IDS)] = config.lip_weight
    w[list(OUTER_LIP_IDS)] = config.lip_weight
    w[list(MP468_UNMATCHED)] = 0.0
    return w


def landmark_loss(proj: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted squared error, mean over all ``[...,468,2]`` entries (zero-weighted ones still count)."""
    return ((proj - target).pow(2) * weights[:, None]).mean()


def temporal_laplacian_loss(x: torch.Tensor) -> torch.Tensor:
    """mean((−0.5, 1, −0.5) ∗ x)² over time of ``x [T,C]``, with the edge frames replicated once."""
    seq = x.T.unsqueeze(1)  # [C,1,T]
    seq = torch.cat([seq[..., :1], seq, seq[..., -1:]], -1)
    kernel = x.new_tensor([-0.5, 1.0, -0.5]).reshape(1, 1, 3)
    return F.conv1d(seq, kernel).pow(2).mean()


def _prepare_landmarks(landmarks: torch.Tensor, image_height: float) -> torch.Tensor:
    if landmarks.ndim != 3 or landmarks.shape[1] < N_MP468 or landmarks.shape[2] != 2:
        raise ValueError(f"landmarks must be [T, 468 or 478, 2] pixels, got {tuple(landmarks.shape)}")
    return pixels_to_fit_space(landmarks[:, :N_MP468].detach().float().clone(), float(image_height))


#: up to this many frames a CPU fit runs on one intra-op thread (see ``_few_threads_for_small_fits``)
SMALL_FIT_FRAMES = 64


@contextmanager
def _few_threads_for_small_fits(target: torch.Tensor) -> Iterator[None]:
    """One CPU thread while fitting few frames.

    A fit is ~40 tiny kernels × 400 steps; with several intra-op threads each kernel pays a fork/join, and
    when other processes share the cores (oversubscription) every barrier waits for a descheduled thread,
    which made a one-image fit 20–100x slower (25 s instead of 0.3 s) in measurements.
    """
    previous = torch.get_num_threads()
    if target.device.type != "cpu" or target.shape[0] > SMALL_FIT_FRAMES or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(model: FaceModel3DMM, target: torch.Tensor, config: FitConfig, shared_id: bool) -> FittedCoeffs:
    """Run the two-stage schedule on fit-space landmarks ``target [T,468,2]``.

    ``shared_id``: one identity for all T frames (video); otherwise every frame is an independent image
    whose losses are summed, which for T = 1 is exactly the official image loss.
    """
    n = target.shape[0]
    weights = landmark_weights(config, target.device)
    basis = model.keypoint_basis(model.mp468_ids)  # gathered once: the fit only ever sees these 468 vertices
    id_param = target.new_zeros(1 if shared_id else n, N_ID, requires_grad=True)
    exp_param = target.new_zeros(n, N_EXP, requires_grad=True)
    euler = target.new_zeros(n, 3, requires_grad=True)
    trans = target.new_zeros(n, 3, requires_grad=True)

    def loss_fn(with_regularisers: bool) -> torch.Tensor:
        ids = id_param.expand(n, N_ID) if shared_id else id_param
        proj = project_to_fit_space(posed_vertices_cam(basis, ids, exp_param, euler, trans))
        if shared_id:
            loss = landmark_loss(proj, target, weights)
        else:  # per-image mean, summed: independent fits whose Adam updates equal single-image runs
            loss = ((proj - target).pow(2) * weights[:, None]).mean((1, 2)).sum()
        if not with_regularisers:
            return loss
        if shared_id:
            loss = loss + config.id_reg * id_param.pow(2).mean() + config.exp_reg * exp_param.pow(2).mean()
        else:
            loss = (loss + config.id_reg * id_param.pow(2).mean(1).sum()
                    + config.exp_reg * exp_param.pow(2).mean(1).sum())
        if config.lap_weight:
            # the Laplacian of a shared identity is identically zero, so only exp and the pose carry one
            loss = loss + config.lap_weight * (
                temporal_laplacian_loss(exp_param)
                + config.pose_lap_weight * temporal_laplacian_loss(euler)
                + config.pose_lap_weight * temporal_laplacian_loss(trans))
        return loss

    opt_pose = torch.optim.Adam([euler, trans], lr=config.lr)
    for _ in range(config.pose_steps):
        opt_pose.zero_grad()
        loss_fn(False).backward()
        opt_pose.step()
    opt_shape = torch.optim.Adam([id_param, exp_param], lr=config.lr)
    for _ in range(config.joint_steps):
        opt_shape.zero_grad()
        opt_pose.zero_grad()
        loss_fn(True).backward()
        opt_shape.step()
        opt_pose.step()
    return FittedCoeffs(*(p.detach().clone() for p in (id_param, exp_param, euler, trans)))


def fit_image(model: FaceModel3DMM, landmarks: torch.Tensor, image_height: float,
              config: FitConfig = IMAGE_FIT) -> FittedCoeffs:
    """Fit one or several independent images (official ``fit_3dmm_for_a_image``).

    Args:
        model: the 3DMM (any device; the fit runs there).
        landmarks: ``[468|478, 2]`` or ``[B, 468|478, 2]`` MediaPipe landmarks in pixels (x right, y down);
            only the first 468 are used.
        image_height: H of the image the landmarks were detected on; both axes are scaled by H/224.

    Returns:
        ``FittedCoeffs`` with ``id [B,80]``, ``exp [B,64]``, ``euler [B,3]``, ``trans [B,3]``.
    """
    batch = landmarks if landmarks.ndim == 3 else landmarks.unsqueeze(0)
    with torch.inference_mode(False), torch.enable_grad():
        target = _prepare_landmarks(batch, image_height)
        with _few_threads_for_small_fits(target):
            return _fit(model, target, config, shared_id=False)


def fit_video(model: FaceModel3DMM, landmarks: torch.Tensor, image_height: float,
              config: FitConfig = VIDEO_FIT) -> FittedCoeffs:
    """Fit a video with one shared identity (official ``fit_3dmm_for_a_video``, ``id_mode='global'``).

    Args:
        landmarks: ``[T, 468|478, 2]`` per-frame MediaPipe landmarks in pixels.
        image_height: frame height H.

    Returns:
        ``FittedCoeffs`` with ``id [1,80]``, ``exp [T,64]``, ``euler [T,3]``, ``trans [T,3]``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        target = _prepare_landmarks(landmarks, image_height)
        with _few_threads_for_small_fits(target):
            return _fit(model, target, config, shared_id=True)


__all__ = [
    "EYE_IDS", "FitConfig", "FittedCoeffs", "IMAGE_FIT", "INNER_LIP_IDS", "OUTER_LIP_IDS", "UPPER_EYELID_IDS",
    "VIDEO_FIT", "fit_image", "fit_video", "landmark_loss", "landmark_weights", "temporal_laplacian_loss",
]
