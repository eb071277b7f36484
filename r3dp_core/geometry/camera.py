"""Head poses → EG3D cameras: the official driving-pose handling, camera smoothing, and new camera paths.

A head pose is ``euler [T,3]`` (pitch, yaw, roll; radians) and ``trans [T,3]`` (decimetres) of the 3DMM
(see :mod:`r3dp_core.geometry.bfm`). The renderer takes the 25-number EG3D camera per frame:
``[cam2world 4x4 row-major | normalised intrinsics 3x3 row-major]``, OpenCV axes, the triplane world frame
being the BFM canonical frame scaled by 0.27 (an empirical fit of the official code, never "clean it up").

Official pipeline: :func:`driving_pose` (ping-pong length matching, fixed depth, mapping onto the source
pose) or :func:`static_pose` → :meth:`HeadPose.cameras` (:func:`eg3d_cameras` + :func:`smooth_camera_sequence`).
New paths: :func:`orbit_pose` and :func:`keyframe_pose` (slerp between key rotations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType

import torch

from .bfm import CAMERA_DISTANCE, compute_rotation, rotation_to_euler

CAMERA_SCALE = 0.27
CAMERA_OFFSET_Y, CAMERA_OFFSET_Z = 0.006, 0.161
#: 2985.29 = 1015·1024/224·(300/466.285): the EG3D focal, normalised by the image size.
EG3D_FOCAL = 2985.29 / 700
EG3D_CENTER = 0.5
SMOOTH_KERNEL = 7


def eg3d_cameras(euler: torch.Tensor, trans: torch.Tensor, *, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """The official ``get_eg3d_convention_camera_pose_intrinsic`` per frame.

    Rotation and translation arithmetic run in float32 (as the official code does), the result is
    assembled in ``dtype`` (float64 reproduces the official container exactly).

    Args:
        euler: ``[T,3]`` radians. trans: ``[T,3]`` decimetres.

    Returns:
        ``[T,25]``: cam2world (R = rot·diag(1,−1,−1), centre 0.27·(−rot·(t − (0,0,10))) + (0, 0.006, 0.161))
        and intrinsics (focal 2985.29/700, centre 0.5).
    """
    rot = compute_rotation(euler.float())
    t = trans.float() - trans.new_tensor([0.0, 0.0, CAMERA_DISTANCE], dtype=torch.float32)
    centre = -(rot @ t.unsqueeze(-1)).squeeze(-1) * CAMERA_SCALE
    centre = centre + centre.new_tensor([0.0, CAMERA_OFFSET_Y, CAMERA_OFFSET_Z])
    r_c2w = rot * rot.new_tensor([1.0, -1.0, -1.0])  # OpenGL → OpenCV axes: negate columns y, z
    n = euler.shape[0]
    top = torch.cat([r_c2w, centre.unsqueeze(-1)], -1).to(dtype).reshape(n, 12)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype, device=euler.device).expand(n, 4)
    k = torch.tensor([EG3D_FOCAL, 0.0, EG3D_CENTER, 0.0, EG3D_FOCAL, EG3D_CENTER, 0.0, 0.0, 1.0],
                     dtype=dtype, device=euler.device).expand(n, 9)
    return torch.cat([top, bottom, k], -1)


def camera_to_pose(cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`eg3d_cameras`: ``[T,25]`` → ``(euler, trans)`` ``[T,3]`` float64 (a camera path → the head
    pose, e.g. its yaw and pitch)."""
    cam = cameras.to(torch.float64)
    pose = cam[:, :12].reshape(-1, 3, 4)
    rot = pose[:, :, :3] * pose.new_tensor([1.0, -1.0, -1.0])  # undo the OpenGL → OpenCV column flip
    centre = pose[:, :, 3] - pose.new_tensor([0.0, CAMERA_OFFSET_Y, CAMERA_OFFSET_Z])
    trans = -(rot.transpose(1, 2) @ (centre / CAMERA_SCALE).unsqueeze(-1)).squeeze(-1)
    trans = trans + trans.new_tensor([0.0, 0.0, CAMERA_DISTANCE])
    return rotation_to_euler(rot), trans


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[...,3,3]`` (column-vector convention) → unit quaternions ``[...,4]`` (x, y, z, w).

    Like scipy's ``Rotation.from_matrix``: matrices that are not orthonormal to 1e-12 are first projected
    onto SO(3) (``U·Vᵀ`` of their SVD), then Shepperd's branch on the largest of (m00, m11, m22, trace).
    """
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    orthogonal = torch.isclose(matrix @ matrix.transpose(-1, -2), eye, rtol=1e-5, atol=1e-12).all((-2, -1))
    u, _, vt = torch.linalg.svd(matrix)
    m = torch.where(orthogonal[..., None, None], matrix, u @ vt)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    by_diag = [
        torch.stack([1 - trace + 2 * m[..., 0, 0], m[..., 1, 0] + m[..., 0, 1], m[..., 2, 0] + m[..., 0, 2],
                     m[..., 2, 1] - m[..., 1, 2]], -1),
        torch.stack([m[..., 1, 0] + m[..., 0, 1], 1 - trace + 2 * m[..., 1, 1], m[..., 2, 1] + m[..., 1, 2],
                     m[..., 0, 2] - m[..., 2, 0]], -1),
        torch.stack([m[..., 2, 0] + m[..., 0, 2], m[..., 2, 1] + m[..., 1, 2], 1 - trace + 2 * m[..., 2, 2],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                     1 + trace], -1),
    ]
    choice = torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], trace], -1).argmax(-1)
    quat = torch.stack(by_diag, -2).gather(-2, choice[..., None, None].expand(*choice.shape, 1, 4)).squeeze(-2)
    return quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[...,4]`` (x, y, z, w) → rotation matrices ``[...,3,3]`` (column-vector convention)."""
    x, y, z, w = quat.unbind(-1)
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    return torch.stack([
        x2 - y2 - z2 + w2, 2 * (xy - zw), 2 * (xz + yw),
        2 * (xy + zw), -x2 + y2 - z2 + w2, 2 * (yz - xw),
        2 * (xz - yw), 2 * (yz + xw), -x2 - y2 + z2 + w2,
    ], -1).reshape(*quat.shape[:-1], 3, 3)


def smooth_camera_sequence(cameras: torch.Tensor, kernel_size: int = SMOOTH_KERNEL) -> torch.Tensor:
    """The official temporal camera smoothing (``smooth_camera_sequence``), vectorised.

    Frame i averages frames ``max(0, i−k//2) … min(T−1, i+k//2)`` (a window truncated at the ends, no
    padding): the cam2world translation (entries 3, 7, 11) by its plain mean, the rotation by the chordal
    L2 mean (scipy ``Rotation.mean``: dominant eigenvector of Σ q·qᵀ). The bottom row and the intrinsics
    are copied. Computed in float64 on the CPU (a few hundred 4×4 eigen-problems), returned in the input's
    dtype and device.

    Args:
        cameras: ``[T,25]``.

    Returns:
        ``[T,25]``.
    """
    work = cameras.detach().to("cpu", torch.float64)
    n, half = work.shape[0], kernel_size // 2
    index = torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None]  # [T,k]
    valid = ((index >= 0) & (index < n)).to(torch.float64)
    index = index.clamp(0, n - 1)
    pose = work[:, :12].reshape(n, 3, 4)
    window_trans = pose[:, :, 3][index] * valid[..., None]  # [T,k,3]
    trans = window_trans.sum(1) / valid.sum(1, keepdim=True)
    quat = matrix_to_quaternion(pose[:, :, :3])[index] * valid[..., None]  # invalid frames add nothing to K
    k_mat = quat.unsqueeze(-1) @ quat.unsqueeze(-2)  # [T,k,4,4]
    _, eigvec = torch.linalg.eigh(k_mat.sum(1))
    rot = quaternion_to_matrix(eigvec[..., -1])
    out = work.clone()
    out[:, :12] = torch.cat([rot, trans.unsqueeze(-1)], -1).reshape(n, 12)
    return out.to(cameras.device, cameras.dtype)


@dataclass(frozen=True)
class HeadPose:
    """A head-pose sequence: ``euler [T,3]`` (pitch, yaw, roll; radians), ``trans [T,3]`` (decimetres), and the
    window its cameras are smoothed over (``smooth_kernel`` frames, official 7; None: raw cameras)."""

    euler: torch.Tensor
    trans: torch.Tensor
    smooth_kernel: int | None = SMOOTH_KERNEL

    def __post_init__(self):
        if self.euler.ndim != 2 or self.euler.shape[1] != 3 or self.euler.shape != self.trans.shape:
            raise ValueError(f"HeadPose needs euler and trans of shape [T,3], got {tuple(self.euler.shape)} "
                             f"and {tuple(self.trans.shape)}")

    def __len__(self) -> int:
        return self.euler.shape[0]

    def cameras(self, smooth_kernel: int | None | EllipsisType = ...) -> torch.Tensor:
        """EG3D cameras ``[T,25]`` float32, smoothed over ``smooth_kernel`` frames as the official pipeline does
        (default: the pose's own ``smooth_kernel``; ``None``: raw)."""
        smooth_kernel = self.smooth_kernel if smooth_kernel is ... else smooth_kernel
        raw = eg3d_cameras(self.euler, self.trans)
        return raw if smooth_kernel is None else smooth_camera_sequence(raw, smooth_kernel)


def _pose_row(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, 3)


def mirror_index(num_frames: int, period: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Ping-pong indices ``[num_frames]`` into a sequence of ``period`` frames: 0…P−1, P−1…0, 0…"""
    i = torch.arange(num_frames, device=device)
    turn, r = i // period, i % period
    return torch.where(turn % 2 == 0, r, period - r - 1)


def static_pose(src_euler: torch.Tensor, src_trans: torch.Tensor, num_frames: int) -> HeadPose:
    """The source pose held for ``num_frames`` frames (official ``drv_pose='static'``)."""
    return HeadPose(_pose_row(src_euler).expand(num_frames, 3).clone(),
                    _pose_row(src_trans).expand(num_frames, 3).clone())


def driving_pose(pose_euler: torch.Tensor, pose_trans: torch.Tensor, num_frames: int,
                 src_euler: torch.Tensor | None = None, src_trans: torch.Tensor | None = None,
                 map_to_init_pose: bool = True) -> HeadPose:
    """A driving pose sequence fitted to ``num_frames`` as the official ``prepare_batch_from_inp`` does.

    1. length matching by :func:`mirror_index` (ping-pong through the ``P`` pose frames);
    2. depth fixed to the first frame's (``trans_z ← trans_z[0]``);
    3. if ``map_to_init_pose``: ``euler += src_euler − euler[0]`` and ``trans += src_trans − trans[0]``
       (plain addition of Euler angles), so frame 0 is the source pose.

    Args:
        pose_euler, pose_trans: ``[P,3]``. src_euler, src_trans: ``[1,3]`` or ``[3]`` (needed for mapping).
    """
    if map_to_init_pose and (src_euler is None or src_trans is None):
        raise ValueError("map_to_init_pose needs the source pose (src_euler, src_trans)")
    index = mirror_index(num_frames, pose_euler.shape[0], pose_euler.device)
    euler, trans = pose_euler[index], pose_trans[index].clone()
    trans[:, 2] = trans[0, 2]
    if map_to_init_pose:
        euler = euler + (_pose_row(src_euler) - euler[0:1])
        trans = trans + (_pose_row(src_trans) - trans[0:1])
    return HeadPose(euler, trans)


def orbit_pose(src_euler: torch.Tensor, src_trans: torch.Tensor, num_frames: int, yaw_deg: float = 20.0,
               pitch_deg: float = 0.0, loops: float = 1.0) -> HeadPose:
    """A closed orbit of the view around the source pose (new; not in the official pipeline).

    With phase ``φ = 2π·loops·i/T``: ``yaw = src + yaw_deg·sin φ``, ``pitch = src + pitch_deg·(1 − cos φ)/2``.
    Frame 0 is the source pose, the yaw reaches ±``yaw_deg`` at quarter periods, the pitch ``pitch_deg`` at
    half periods (an ellipse through the source view; ``pitch_deg = 0`` is a pure left-right sweep), and
    an integer number of loops repeats seamlessly. Roll and translation stay at the source's.
    """
    phase = 2 * math.pi * loops * torch.arange(num_frames, dtype=torch.float64) / num_frames
    offset = torch.zeros(num_frames, 3, dtype=torch.float64)
    offset[:, 1] = math.radians(yaw_deg) * torch.sin(phase)
    offset[:, 0] = math.radians(pitch_deg) * (1 - torch.cos(phase)) / 2
    src = _pose_row(src_euler)
    euler = (src.to("cpu", torch.float64) + offset).to(src.device, src.dtype)
    return HeadPose(euler, _pose_row(src_trans).expand(num_frames, 3).clone())


def _slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Shortest-arc spherical interpolation of unit quaternions ``[T,4]`` at ``t [T]`` in [0,1]."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-9  # (almost) identical rotations: linear interpolation is exact enough
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    t = t[:, None]
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)


def keyframe_pose(key_frames: Sequence[int], key_euler: torch.Tensor, key_trans: torch.Tensor, num_frames: int,
                  easing: str = "linear") -> HeadPose:
    """A pose path through key poses (new): slerp of the rotations, linear translation, held outside the keys.

    Args:
        key_frames: strictly increasing frame numbers of the keys.
        key_euler, key_trans: ``[K,3]`` poses at those frames.
        num_frames: length T of the path.
        easing: ``'linear'`` (constant angular speed between keys) or ``'smooth'`` (smoothstep: each
            segment starts and ends at rest).

    Returns:
        ``HeadPose`` with ``[T,3]`` tensors; frame ``key_frames[j]`` has exactly pose j.
    """
    keys = torch.as_tensor(list(key_frames), dtype=torch.float64)
    if keys.ndim != 1 or len(keys) != key_euler.shape[0] or key_euler.shape != key_trans.shape:
        raise ValueError(f"{len(keys)} key frames need key_euler/key_trans of shape [{len(keys)},3], got "
                         f"{tuple(key_euler.shape)} and {tuple(key_trans.shape)}")
    if len(keys) == 0 or bool((keys[1:] <= keys[:-1]).any()):
        raise ValueError(f"key_frames must be non-empty and strictly increasing, got {list(key_frames)}")
    if easing not in ("linear", "smooth"):
        raise ValueError(f"easing must be 'linear' or 'smooth', got {easing!r}")
    euler64 = key_euler.detach().to("cpu", torch.float64)
    trans64 = key_trans.detach().to("cpu", torch.float64)
    frames = torch.arange(num_frames, dtype=torch.float64).clamp(keys[0], keys[-1])
    seg = (torch.searchsorted(keys, frames, right=True) - 1).clamp(0, max(len(keys) - 2, 0))
    nxt = (seg + 1).clamp(max=len(keys) - 1)
    span = (keys[nxt] - keys[seg]).clamp(min=1.0)
    t = ((frames - keys[seg]) / span).clamp(0.0, 1.0)
    if easing == "smooth":
        t = t * t * (3 - 2 * t)
    quat = matrix_to_quaternion(compute_rotation(euler64).transpose(1, 2))
    rot = quaternion_to_matrix(_slerp(quat[seg], quat[nxt], t)).transpose(1, 2)
    euler = rotation_to_euler(rot)
    # exact at the keys: t is 0 (or 1 at the last key), where the interpolation returns the key itself
    at_key = (t == 0) | (t == 1)
    key_of_frame = torch.where(t == 1, nxt, seg)
    euler = torch.where(at_key[:, None], euler64[key_of_frame], euler)
    trans = (1 - t)[:, None] * trans64[seg] + t[:, None] * trans64[nxt]
    return HeadPose(euler.to(key_euler.device, key_euler.dtype), trans.to(key_trans.device, key_trans.dtype))


__all__ = [
    "CAMERA_SCALE", "EG3D_CENTER", "EG3D_FOCAL", "HeadPose", "camera_to_pose", "driving_pose", "eg3d_cameras",
    "keyframe_pose", "matrix_to_quaternion", "mirror_index", "orbit_pose", "quaternion_to_matrix",
    "smooth_camera_sequence", "static_pose",
]
