"""Head Pose: where the head (i.e. the camera around it) is on every frame.

The node outputs a *recipe*, ``CameraPath``; the render stage resolves it against each portrait's source pose
and the clip length, so one Head Pose node serves any number of portraits and any motion length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from r3dp_core.errors import InputError
from r3dp_core.geometry import camera as cam
from r3dp_core.pipeline.types import Motion

from . import _types as t
from ._api import comfy_io

MODES = ("static", "driving", "orbit", "keyframes")
_KEY = re.compile(r"^([-+]?\d*\.?\d+)\s*:\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)$")


def parse_keyframes(text: str) -> list[tuple[float, float, float]]:
    """``"0: 0, 0; 2: 20, -5"`` → ``[(seconds, yaw°, pitch°), ...]`` sorted by time (the web widget's format)."""
    keys = []
    for number, part in enumerate(p.strip() for p in text.split(";")):
        if not part:
            continue
        match = _KEY.match(part)
        if match is None:
            raise InputError(f"Keyframe {number + 1} ({part!r}) is not 'seconds: yaw, pitch' (degrees), "
                             "e.g. '0: 0, 0; 2: 20, -5'.")
        keys.append((max(0.0, float(match[1])), float(match[2]), float(match[3])))
    keys.sort()
    if any(b[0] == a[0] for a, b in zip(keys, keys[1:])):
        raise InputError("Two keyframes share the same time; give each keyframe its own time.")
    return keys


@dataclass(frozen=True)
class CameraPath:
    """A head-pose recipe. ``pose(...)`` turns it into per-frame euler/trans for one portrait."""

    mode: str = "static"
    motion: Motion | None = None          # driving mode: the motion whose pose is followed
    map_to_source: bool = True
    yaw_degrees: float = 20.0
    pitch_degrees: float = 0.0
    loops: float = 1.0
    keyframes: tuple[tuple[float, float, float], ...] = ()
    easing: str = "smooth"
    smooth: bool = True

    def pose(self, src_euler: torch.Tensor, src_trans: torch.Tensor, num_frames: int, fps: float) -> cam.HeadPose:
        """Euler/trans ``[T,3]`` for a portrait whose source pose is ``src_euler``/``src_trans`` ``[1,3]``."""
        if self.mode == "static":
            return cam.static_pose(src_euler, src_trans, num_frames)
        if self.mode == "driving":
            motion = self.motion
            if motion is None or motion.euler is None or motion.trans is None:
                raise InputError("Head Pose is set to 'driving' but the connected motion has no head pose; "
                                 "connect a motion from Video→3DMM (or Load Motion of one), or pick another mode.")
            return cam.driving_pose(motion.euler.to(src_euler), motion.trans.to(src_trans), num_frames,
                                    src_euler, src_trans, map_to_init_pose=self.map_to_source)
        if self.mode == "orbit":
            return cam.orbit_pose(src_euler, src_trans, num_frames, yaw_deg=self.yaw_degrees,
                                  pitch_deg=self.pitch_degrees, loops=self.loops)
        if self.mode == "keyframes":
            if not self.keyframes:
                return cam.static_pose(src_euler, src_trans, num_frames)
            frames, euler = [], []
            for seconds, yaw, pitch in self.keyframes:
                frame = int(round(seconds * fps))
                if frames and frame <= frames[-1]:
                    continue  # two keys closer than one frame: the first wins
                frames.append(frame)
                euler.append([math.radians(pitch), math.radians(yaw), 0.0])
            offsets = torch.tensor(euler, dtype=src_euler.dtype, device=src_euler.device)
            key_euler = src_euler.reshape(1, 3) + offsets
            key_trans = src_trans.reshape(1, 3).expand(len(frames), 3)
            return cam.keyframe_pose(frames, key_euler, key_trans, num_frames, easing=self.easing)
        raise InputError(f"Unknown head pose mode {self.mode!r}; use one of {', '.join(MODES)}.")

    def cameras(self, pose: cam.HeadPose) -> torch.Tensor:
        """EG3D cameras ``[T,25]``, smoothed over 7 frames as official when ``smooth``."""
        return pose.cameras(cam.SMOOTH_KERNEL if self.smooth else None)


class HeadPose(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_HeadPose",
            display_name="Head Pose",
            category=f"{t.CATEGORY}/camera",
            description="Head pose / camera path per frame: the source pose held (static), the pose of a driving "
                        "video (driving), an orbit around the head (orbit, a novel-view sweep), or a keyframed "
                        "yaw/pitch path edited on the canvas (keyframes). Angles are offsets from the source pose.",
            inputs=[
                comfy_io.Combo.Input("mode", options=list(MODES), default="static",
                                     tooltip="static: keep the photo's pose · driving: follow the motion's head "
                                             "pose · orbit: sweep the view · keyframes: follow the canvas path."),
                comfy_io.Float.Input("yaw_degrees", default=20.0, min=-60.0, max=60.0, step=0.5,
                                     tooltip="Orbit: left/right swing of the view in degrees."),
                comfy_io.Float.Input("pitch_degrees", default=0.0, min=-40.0, max=40.0, step=0.5,
                                     tooltip="Orbit: up/down excursion of the view in degrees (0 = level sweep)."),
                comfy_io.Float.Input("loops", default=1.0, min=0.0, max=20.0, step=0.25,
                                     tooltip="Orbit: how many full swings over the clip."),
                comfy_io.String.Input("keyframes", default="0: 0, 0; 2: 15, 0; 4: -15, 5; 6: 0, 0",
                                      tooltip="Keyframes mode: 'seconds: yaw, pitch' in degrees, separated by ';'. "
                                              "Edit on the canvas below or type here; the pose holds after the "
                                              "last key."),
                comfy_io.Combo.Input("easing", options=["smooth", "linear"], default="smooth",
                                     tooltip="Keyframes mode: 'smooth' eases in and out of every key, 'linear' "
                                             "moves at constant speed."),
                comfy_io.Boolean.Input("smooth_cameras", default=True,
                                       tooltip="Smooth the camera over 7 frames (the official behaviour; removes "
                                               "jitter from driving poses)."),
                comfy_io.Boolean.Input("map_to_source", default=True,
                                       tooltip="Driving mode: start from the photo's pose and apply the driving "
                                               "video's pose changes (official default)."),
                t.Motion.Input("motion", optional=True,
                               tooltip="Driving mode: a motion with head pose (from Video→3DMM)."),
            ],
            outputs=[t.Camera.Output(display_name="camera")],
        )

    @classmethod
    def validate_inputs(cls, keyframes: str = ""):  # no **kwargs: that would switch off the min/max checks
        try:
            parse_keyframes(keyframes or "")
        except InputError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, mode: str, yaw_degrees: float, pitch_degrees: float, loops: float, keyframes: str,
                easing: str, smooth_cameras: bool, map_to_source: bool, motion: Motion | None = None):
        if mode == "driving" and (motion is None or motion.euler is None):
            raise InputError("Head Pose 'driving' needs a motion with head pose: connect Video→3DMM's motion.")
        path = CameraPath(mode=mode, motion=motion, map_to_source=map_to_source, yaw_degrees=yaw_degrees,
                          pitch_degrees=pitch_degrees, loops=loops, keyframes=tuple(parse_keyframes(keyframes)),
                          easing=easing, smooth=smooth_cameras)
        return comfy_io.NodeOutput(path)


NODES = [HeadPose]
