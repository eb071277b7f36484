"""Talk3D's cameras: EG3D's ``LookAtPoseSampler`` on a sphere, as VIVE3D's ``EG3D_Generator`` sets it up.

A camera is given by a yaw and a pitch (radians, 0 = frontal). It sits on the sphere of radius ``radius``
around the *world origin* and looks at ``pivot``; there is no roll and no translation. The result is EG3D's
25-number camera: cam2world (OpenCV axes: x right, y down, z forward) row-major, then the normalised
intrinsics ``[[f,0,0.5],[0,f,0.5],[0,0,1]]`` (see :mod:`r3dp_core.render.camera`).

Official arithmetic, mirrored step by step: the angle ``pi/2 + yaw`` is summed in float64 (Python floats) and
then becomes float32; everything after it is float32 (``theta = h``, ``v = clamp(pi/2 + pitch, 1e-5, pi - 1e-5)
/ pi``, ``phi = arccos(1 - 2v)``, ``origin = radius·(sin phi cos(pi - theta), cos phi, sin phi sin(pi - theta))``,
``forward = normalize(pivot - origin)``, normalised once more, ``right = -normalize(up × forward)`` with
``up = (0, 1, 0)``, ``up' = normalize(forward × right)``). The cameras are computed on the CPU (a few numbers;
MPS has no float64) and moved to the requested device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class LookAtCameraConfig:
    """The camera rig of Talk3D (``main.py``: ``set_camera_parameters(focal_length=3.6, cam_pivot=[0,0.05,0.2])``)."""

    radius: float = 2.7
    """Distance of the camera from the world origin (EG3D ``avg_camera_radius``)."""
    pivot: tuple[float, float, float] = (0.0, 0.05, 0.2)
    """The point every camera looks at (VIVE3D's ``cam_pivot`` as Talk3D sets it; EG3D's default is (0, 0, 0.2))."""
    focal_length: float = 3.6
    """Normalised focal length fx = fy, in image widths (EG3D FFHQ's 4.2647 is not used by Talk3D)."""
    principal_point: float = 0.5
    """Normalised principal point cx = cy (the image centre)."""


def _angles(values: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Angles as a 1-D float64 CPU tensor."""
    angles = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if angles.ndim > 1:
        raise InputError(f"yaw/pitch must be a number or a 1-D sequence, got shape {list(angles.shape)}")
    return angles.reshape(-1)


def _normalize(vectors: torch.Tensor) -> torch.Tensor:
    """``v / |v|`` along the last axis (the official ``normalize_vecs``, no epsilon)."""
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)


def lookat_cam2world(yaw: float | Sequence[float] | torch.Tensor, pitch: float | Sequence[float] | torch.Tensor,
                     config: LookAtCameraConfig | None = None) -> torch.Tensor:
    """cam2world ``[N, 4, 4]`` float32 (CPU) of the cameras at (yaw, pitch), broadcast to a common length N.

    Args:
        yaw: horizontal angle(s) in radians, added to the frontal azimuth pi/2.
        pitch: vertical angle(s) in radians, added to the frontal polar angle pi/2 (positive looks from below).
        config: radius and pivot; Talk3D's when None.
    """
    config = config or LookAtCameraConfig()
    yaw, pitch = torch.broadcast_tensors(_angles(yaw), _angles(pitch))
    # Official: Python-float sum, then float32 through ``randn * 0 + h``.
    theta = (math.pi / 2 + yaw).to(torch.float32)[:, None]
    v = torch.clamp((math.pi / 2 + pitch).to(torch.float32)[:, None], 1e-5, math.pi - 1e-5)
    v = v / math.pi
    phi = torch.arccos(1 - 2 * v)
    origin = torch.cat([config.radius * torch.sin(phi) * torch.cos(math.pi - theta),
                        config.radius * torch.cos(phi),
                        config.radius * torch.sin(phi) * torch.sin(math.pi - theta)], dim=1)
    pivot = torch.tensor(config.pivot, dtype=torch.float32)
    forward = _normalize(_normalize(pivot - origin))
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = -_normalize(torch.cross(up, forward, dim=-1))
    up = _normalize(torch.cross(forward, right, dim=-1))
    cam2world = torch.eye(4).repeat(len(origin), 1, 1)
    cam2world[:, :3, :3] = torch.stack((right, up, forward), dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def lookat_cameras(yaw: float | Sequence[float] | torch.Tensor = 0.0,
                   pitch: float | Sequence[float] | torch.Tensor = 0.0, config: LookAtCameraConfig | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """EG3D cameras ``[N, 25]`` float32 for (yaw, pitch) in radians (VIVE3D ``get_camera_parameters``).

    ``yaw`` and ``pitch`` are numbers or 1-D sequences/tensors broadcast against each other. ``(0, 0)`` is the
    frontal camera that also conditions the mapping network (VIVE3D ``conditioning_params``).
    """
    config = config or LookAtCameraConfig()
    cam2world = lookat_cam2world(yaw, pitch, config)
    f, c = config.focal_length, config.principal_point
    intrinsics = torch.tensor([f, 0.0, c, 0.0, f, c, 0.0, 0.0, 1.0]).expand(len(cam2world), -1)
    return torch.cat([cam2world.reshape(-1, 16), intrinsics], dim=1).to(device)
