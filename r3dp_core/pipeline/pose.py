"""Head pose decided once: a pose *recipe*, resolved for one portrait and one motion into a ``HeadPose``.

The front ends only build a ``PoseRecipe`` (the CLI from its options, the Head Pose node from its widgets);
:func:`resolve_pose` turns it into per-frame euler/trans for a portrait's source pose and the clip's length and
frame rate, so one recipe serves any number of portraits and any motion. Modes:

* ``static`` — the photo's pose held (official ``drv_pose='static'``);
* ``driving`` — the head pose of a motion from a driving video (the pose motion, else the driving motion's
  own), length-matched and mapped onto the photo's pose as official;
* ``orbit`` — a closed sweep of the view around the photo's pose (novel views);
* ``keyframes`` — a yaw/pitch path through keys given in seconds (the canvas widget's text format);
* ``natural`` — the photo's pose plus a seeded, speech-aware head motion
  (:func:`~r3dp_core.geometry.natural_pose.natural_head_motion`, driven by the speech activity — the loudness
  of the voiced sound — of the motion's own sound on a fixed 100 Hz grid, so the path does not depend on the
  frame rate; no sound: a calm drift), starting at the photo's pose, with the total angles inside absolute
  bounds;
* ``auto`` — ``driving`` when there is a pose to follow, else ``natural`` (a frozen head looks dead; the official
  pipeline's ``static`` is one option away);
* ``replay`` — a persona's own training video's cameras (:mod:`r3dp_core.pipeline.persona`); a photo has none.

``pose_strength`` scales the motion that comes from a source — a driving pose (about its first frame, as
:func:`~r3dp_core.geometry.natural_pose.scale_pose`) and natural motion (about the photo's pose, inside the same
absolute bounds); the paths given in degrees (orbit, keyframes) keep their own amplitudes, and ``static`` has
nothing to scale. Orbit and keyframe paths can carry natural motion on top (``natural_on_top``, bounded on the
path + motion). A resolved pose carries its camera smoothing window (``HeadPose.smooth_kernel``,
``pose_smoothing`` frames), which the renderer applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .. import defaults
from ..errors import InputError
from ..geometry import camera as cam
from ..geometry.natural_pose import apply_deviation, natural_head_motion, scale_pose
from .types import Avatar, Motion

POSE_MODES = ("static", "driving", "orbit", "keyframes", "natural", "auto", "replay")
#: Natural motion reads the speech activity on this fixed grid (Hz), whatever the clip's frame rate.
ENERGY_FPS = 100.0
#: Largest pose strength the front ends offer (natural motion's absolute bounds do not scale with it).
MAX_POSE_STRENGTH = 3.0
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
        map_to_init_pose: driving: start from the photo's pose and apply the driving pose's changes (official).
        orbit_yaw_degrees, orbit_pitch_degrees, orbit_loops: orbit: the swing, the up/down excursion and the
            number of full swings over the clip.
        keyframes: keyframes: ``'seconds: yaw, pitch; ...'`` in degrees, offsets from the photo's pose (checked
            when the recipe is made); the pose holds after the last key.
        easing: keyframes: ``'smooth'`` (ease in and out of every key) or ``'linear'``.
        pose_smoothing: window (odd number of frames) the cameras are smoothed over; official 7, 1 = none.
        pose_strength: scales the head motion of ``driving`` (about its first frame) and ``natural`` (about the
            photo's pose: linearly up to 1, above 1 more motion inside the same absolute bounds); 0 holds the
            pose, 1 keeps the motion, 2 doubles it. Orbit and keyframe paths are given in degrees and are not
            scaled (their natural motion on top is).
        seed: natural motion's path (the same seed gives the same motion at any frame rate).
        natural_on_top: orbit and keyframes: add natural motion to the path.
    """

    mode: str = defaults.POSE_MODE
    pose_motion: Motion | None = None
    map_to_init_pose: bool = True
    orbit_yaw_degrees: float = 20.0
    orbit_pitch_degrees: float = 0.0
    orbit_loops: float = 1.0
    keyframes: str = ""
    easing: str = "smooth"
    pose_smoothing: int = cam.SMOOTH_KERNEL
    pose_strength: float = 1.0
    seed: int = defaults.SEED
    natural_on_top: bool = False

    def __post_init__(self):
        if self.mode not in POSE_MODES:
            raise InputError(f"Unknown head-pose mode {self.mode!r}: use one of {', '.join(POSE_MODES)}.")
        if self.easing not in EASINGS:
            raise InputError(f"Unknown keyframe easing {self.easing!r}: use one of {', '.join(EASINGS)}.")
        parse_keyframes(self.keyframes)  # a bad key is reported when the recipe is made, not at render time
        if isinstance(self.pose_smoothing, bool) or int(self.pose_smoothing) != self.pose_smoothing \
                or self.pose_smoothing < 1 or self.pose_smoothing % 2 == 0:
            raise InputError(f"The pose smoothing window must be an odd number of frames >= 1 (official "
                             f"{cam.SMOOTH_KERNEL}, 1 = none), got {self.pose_smoothing}.")
        if not 0.0 <= self.pose_strength <= MAX_POSE_STRENGTH:
            raise InputError(f"The pose strength {self.pose_strength} is outside 0..{MAX_POSE_STRENGTH:g} (0 holds "
                             "the pose, 1 keeps the motion).")


def resolve_pose(recipe: PoseRecipe, avatar: Avatar, motion: Motion, portrait: int = 0) -> cam.HeadPose:
    """The head pose of every frame of ``motion`` for the portrait ``avatar``.

    Args:
        recipe: how the head moves.
        avatar: the portrait; its source pose ``euler``/``trans`` ``[1,3]`` is the pose of frame 0 (and the
            reference of every offset).
        motion: the driving motion: its length ``T`` and ``fps`` (keyframes), and its own head pose if any.
        portrait: the avatar's place among the portraits rendered together (0 for the first or only one).

    Returns:
        ``HeadPose`` with ``euler``/``trans`` ``[T,3]`` on the avatar's device and dtype, carrying the recipe's
        camera smoothing. Natural motion takes the seed :func:`portrait_seed`, so that people rendered with one
        recipe do not sway in sync.
    """
    recipe = replace(recipe, seed=portrait_seed(recipe.seed, avatar, portrait))
    if recipe.mode == "replay":
        raise InputError("The 'replay' head pose replays a persona's training video; a photo has none. Pick another "
                         "head-pose mode (static, orbit, keyframes, natural, driving or auto).")
    path = _PATHS[effective_mode(recipe, motion)](recipe, avatar.euler[:1], avatar.trans[:1], motion)
    return replace(path, smooth_kernel=recipe.pose_smoothing if recipe.pose_smoothing > 1 else None)


def portrait_seed(seed: int, avatar: Avatar, portrait: int = 0) -> int:
    """Natural motion's seed for one portrait: ``seed`` plus the portrait's place among those rendered together
    plus the number of its face in its photo (``avatar.face_index``, 0 from the left). The first (or only)
    portrait of the leftmost (or only) face keeps ``seed``; two people of one photo (face 0 and face 1 of two
    Image → Triplane nodes sharing a Head Pose) and the portraits of one batch get different head paths."""
    face = int(avatar.face_index.reshape(-1)[0]) if getattr(avatar, "face_index", None) is not None else 0
    return int(seed) + int(portrait) + face


def effective_mode(recipe: PoseRecipe, motion: Motion) -> str:
    """The mode ``recipe`` takes for ``motion``: its own, or for ``auto`` ``driving`` when there is a pose to
    follow, else ``natural``."""
    if recipe.mode != "auto":
        return recipe.mode
    return "driving" if _pose_to_follow(recipe, motion).euler is not None else "natural"


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
    pose = cam.driving_pose(followed.euler.to(src_euler), followed.trans.to(src_trans), motion.num_frames,
                            src_euler, src_trans, map_to_init_pose=recipe.map_to_init_pose)
    if recipe.pose_strength == 1.0:
        return pose
    return cam.HeadPose(*scale_pose(pose.euler, pose.trans, recipe.pose_strength, reference="first"))


def natural_deviation(recipe: PoseRecipe, motion: Motion, base_euler: torch.Tensor | None = None) -> torch.Tensor:
    """``[T,6]`` natural head motion for ``motion`` (see :func:`natural_head_motion`), scaled by the recipe's
    strength, bounded on ``base_euler + motion`` (``[1,3]`` or ``[T,3]``, the pose it is added to; None:
    frontal) and driven by the speech activity of the motion's sound (``motion.audio``) on the
    :data:`ENERGY_FPS` grid; a motion without sound gets the activity-free drift."""
    activity = None
    if motion.audio is not None:
        from ..audio.energy import speech_activity
        from ..audio.io import load_audio

        sound = load_audio(motion.audio)
        # the whole sound (the path at a time does not depend on where the clip is cut), and one sample past the
        # clip's end, so that sound shorter than the clip reads as silence after it
        grid = int(math.ceil(max(sound.duration_s, motion.duration_s) * ENERGY_FPS)) + 1
        activity = speech_activity(sound, ENERGY_FPS, grid)
    return natural_head_motion(motion.num_frames, motion.fps, activity, seed=recipe.seed,
                               strength=recipe.pose_strength, energy_fps=ENERGY_FPS, base_euler=base_euler)


def _with_natural(pose: cam.HeadPose, recipe: PoseRecipe, motion: Motion) -> cam.HeadPose:
    return cam.HeadPose(*apply_deviation(pose.euler, pose.trans, natural_deviation(recipe, motion, pose.euler)))


def _natural(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion) -> cam.HeadPose:
    return _with_natural(cam.static_pose(src_euler, src_trans, motion.num_frames), recipe, motion)


def _orbit(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion) -> cam.HeadPose:
    pose = cam.orbit_pose(src_euler, src_trans, motion.num_frames, yaw_deg=recipe.orbit_yaw_degrees,
                          pitch_deg=recipe.orbit_pitch_degrees, loops=recipe.orbit_loops)
    return _with_natural(pose, recipe, motion) if recipe.natural_on_top else pose


def _keyframes(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion
               ) -> cam.HeadPose:
    pose = _keyframe_path(recipe, src_euler, src_trans, motion)
    return _with_natural(pose, recipe, motion) if recipe.natural_on_top else pose


def _keyframe_path(recipe: PoseRecipe, src_euler: torch.Tensor, src_trans: torch.Tensor, motion: Motion
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
    "static": _static, "driving": _driving, "orbit": _orbit, "keyframes": _keyframes, "natural": _natural,
}
