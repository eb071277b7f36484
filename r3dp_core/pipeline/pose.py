"""Head pose decided once: a pose *recipe*, resolved for one portrait and one motion into a ``HeadPose``.

The front ends only build a ``PoseRecipe`` (the CLI from its options, the Head Pose node from its widgets);
:func:`resolve_pose` turns it into per-frame euler/trans for a portrait's source pose and the clip's length and
frame rate, so one recipe serves any number of portraits and any motion. Modes:

* ``static`` — the photo's pose held (official ``drv_pose='static'``);
* ``driving`` — the head pose of a motion from a driving video (the pose motion, else the driving motion's
  own), length-matched and mapped onto the photo's pose as official;
* ``orbit`` — a closed sweep of the view around the photo's pose (novel views);
* ``keyframes`` — a yaw/pitch path through keys given in seconds (the canvas widget's text format);
* ``auto`` — ``driving`` when there is a pose to follow, else ``static``.

A resolved pose carries its camera smoothing (``HeadPose.smooth_kernel``), which the renderer applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..errors import InputError
from ..geometry import camera as cam
from .types import Avatar, Motion

POSE_MODES = ("static", "driving", "orbit", "keyframes", "auto")
EASINGS = ("smooth", "linear")
_KEY = re.compile(r"^([-+]?\d*\.?\d+)\s*:\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)$")


def parse_keyframes(text: str) -> tuple[tuple[float, float, float], ...]:
    """``"0: 0, 0; 2: 20, -5"`` → ``((seconds, yaw°, pitch°), ...)`` sorted by time (the web widget's format)."""
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
    return tuple(keys)


@dataclass(frozen=True)
class PoseRecipe:
    """How the head moves over a clip, independent of the portrait and the clip length.

    Attributes:
        mode: one of ``POSE_MODES``.
        pose_motion: the motion whose head pose ``driving``/``auto`` follow (a pose video's); None: the driving
            motion's own pose.
        map_to_source: driving: start from the photo's pose and apply the driving pose's changes (official).
        orbit_yaw_degrees, orbit_pitch_degrees, orbit_loops: orbit: the swing, the up/down excursion and the
            number of full swings over the clip.
        keyframes: keyframes: ``'seconds: yaw, pitch; ...'`` in degrees, offsets from the photo's pose (checked
            when the recipe is made); the pose holds after the last key.
        easing: keyframes: ``'smooth'`` (ease in and out of every key) or ``'linear'``.
        smooth_cameras: smooth the cameras over the official 7 frames.
    """

    mode: str = "auto"
    pose_motion: Motion | None = None
    map_to_source: bool = True
    orbit_yaw_degrees: float = 20.0
    orbit_pitch_degrees: float = 0.0
    orbit_loops: float = 1.0
    keyframes: str = ""
    easing: str = "smooth"
    smooth_cameras: bool = True
    # Issue 16 adds here: a ``natural`` mode (a seeded, speech-aware [T,6] pose, one more entry of _PATHS), a
    # ``pose_strength`` scaling every frame's deviation from the first pose (applied in resolve_pose after the
    # mode's path, before smoothing) and a smoothing window K (replacing the fixed 7 of ``smooth_cameras``).

    def __post_init__(self):
        if self.mode not in POSE_MODES:
            raise InputError(f"Unknown head-pose mode {self.mode!r}: use one of {', '.join(POSE_MODES)}.")
        if self.easing not in EASINGS:
            raise InputError(f"Unknown keyframe easing {self.easing!r}: use one of {', '.join(EASINGS)}.")
        parse_keyframes(self.keyframes)  # a bad key is reported when the recipe is made, not at render time


def resolve_pose(recipe: PoseRecipe, avatar: Avatar, motion: Motion) -> cam.HeadPose:
    """The head pose of every frame of ``motion`` for the portrait ``avatar``.

    Args:
        recipe: how the head moves.
        avatar: the portrait; its source pose ``euler``/``trans`` ``[1,3]`` is the pose of frame 0 (and the
            reference of every offset).
        motion: the driving motion: its length ``T`` and ``fps`` (keyframes), and its own head pose if any.

    Returns:
        ``HeadPose`` with ``euler``/``trans`` ``[T,3]`` on the avatar's device and dtype, carrying the recipe's
        camera smoothing.
    """
    mode = recipe.mode
    if mode == "auto":
        mode = "driving" if _pose_to_follow(recipe, motion).euler is not None else "static"
    path = _PATHS[mode](recipe, avatar.euler[:1], avatar.trans[:1], motion)
    return replace(path, smooth_kernel=cam.SMOOTH_KERNEL if recipe.smooth_cameras else None)


def _pose_to_follow(recipe: PoseRecipe, motion: Motion) -> Motion:
    return recipe.pose_motion if recipe.pose_motion is not None else motion


def _static(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion) -> cam.HeadPose:
    return cam.static_pose(src_euler, src_trans, motion.num_frames)


def _driving(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion) -> cam.HeadPose:
    followed = _pose_to_follow(recipe, motion)
    if followed.euler is None or followed.trans is None:
        raise InputError("The 'driving' head pose follows the head pose of a driving video, but this motion has "
                         "none (it is audio-driven): give a pose video (or a motion fitted to a video), or pick "
                         "another head-pose mode.")
    return cam.driving_pose(followed.euler.to(src_euler), followed.trans.to(src_trans), motion.num_frames,
                            src_euler, src_trans, map_to_init_pose=recipe.map_to_source)


def _orbit(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion) -> cam.HeadPose:
    return cam.orbit_pose(src_euler, src_trans, motion.num_frames, yaw_deg=recipe.orbit_yaw_degrees,
                          pitch_deg=recipe.orbit_pitch_degrees, loops=recipe.orbit_loops)


def _keyframes(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion
               ) -> cam.HeadPose:
    keys = parse_keyframes(recipe.keyframes)
    if not keys:
        return cam.static_pose(src_euler, src_trans, motion.num_frames)
    frames, euler = [], []
    for seconds, yaw, pitch in keys:
        frame = int(round(seconds * motion.fps))
        if frames and frame <= frames[-1]:
            continue  # two keys closer than one frame: the first wins
        frames.append(frame)
        euler.append([math.radians(pitch), math.radians(yaw), 0.0])
    offsets = torch.tensor(euler, dtype=src_euler.dtype, device=src_euler.device)
    key_euler = src_euler.reshape(1, 3) + offsets
    key_trans = src_trans.reshape(1, 3).expand(len(frames), 3)
    return cam.keyframe_pose(frames, key_euler, key_trans, motion.num_frames, easing=recipe.easing)


#: mode → its pose path ``(recipe, src_euler [1,3], src_trans [1,3], motion) -> HeadPose``
_PATHS: dict[str, Callable[[PoseRecipe, torch.Tensor, torch.Tensor, Motion], cam.HeadPose]] = {
    "static": _static, "driving": _driving, "orbit": _orbit, "keyframes": _keyframes,
}
