"""Head Pose: where the head (i.e. the camera around it) is on every frame.

The node outputs a *recipe*, ``r3dp_core.pipeline.pose.PoseRecipe``; the render stage resolves it against each
portrait's source pose and the clip, so one Head Pose node serves any number of portraits and any motion length.
"""

from __future__ import annotations

from r3dp_core.errors import InputError
from r3dp_core.pipeline.options import GENERATE
from r3dp_core.pipeline.pose import EASINGS, POSE_MODES, PoseRecipe, parse_keyframes
from r3dp_core.pipeline.types import Motion

from . import _types as t
from ._api import comfy_io


class HeadPose(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_HeadPose",
            display_name="Head Pose",
            category=f"{t.CATEGORY}/camera",
            description="Head pose / camera path per frame: the source pose held (static), the pose of a driving "
                        "video (driving), an orbit around the head (orbit, a novel-view sweep), a keyframed "
                        "yaw/pitch path edited on the canvas (keyframes), a seeded head motion that follows the "
                        "speech (natural), or the driving pose when there is one, else natural (auto). Angles are "
                        "offsets from the source pose.",
            inputs=[
                comfy_io.Combo.Input("mode", options=list(POSE_MODES), **GENERATE["camera"].widget_kwargs(),
                                     tooltip="static: keep the photo's pose (official) · driving: follow the "
                                             "motion's head pose · orbit: sweep the view · keyframes: follow the "
                                             "canvas path · natural: a calm, seeded head motion that moves more "
                                             "while the person speaks and nods on stressed syllables · auto (the "
                                             "default): driving when the motion has a head pose, else natural · "
                                             "replay (personas): the training video's cameras. For a persona auto "
                                             "is replay, the photo's pose is its resting camera, and only yaw/pitch "
                                             "are used (roll and translation are dropped)."),
                comfy_io.Float.Input("yaw_degrees", default=PoseRecipe.orbit_yaw_degrees, min=-60.0, max=60.0,
                                     step=0.5,
                                     tooltip="Orbit: left/right swing of the view in degrees."),
                comfy_io.Float.Input("pitch_degrees", default=PoseRecipe.orbit_pitch_degrees, min=-40.0, max=40.0,
                                     step=0.5,
                                     tooltip="Orbit: up/down excursion of the view in degrees (0 = level sweep)."),
                comfy_io.Float.Input("loops", default=PoseRecipe.orbit_loops, min=0.0, max=20.0, step=0.25,
                                     tooltip="Orbit: how many full swings over the clip."),
                comfy_io.String.Input("keyframes", default="0: 0, 0; 2: 15, 0; 4: -15, 5; 6: 0, 0",
                                      tooltip="Keyframes mode: 'seconds: yaw, pitch' in degrees, separated by ';'. "
                                              "Edit on the canvas below or type here; the pose holds after the "
                                              "last key."),
                comfy_io.Combo.Input("easing", options=list(EASINGS), **GENERATE["easing"].widget_kwargs(),
                                     tooltip="Keyframes mode: 'smooth' eases in and out of every key, 'linear' "
                                             "moves at constant speed."),
                comfy_io.Boolean.Input("smooth_cameras", default=True,
                                       tooltip="Smooth the camera over pose_smoothing frames (the official "
                                               "behaviour; removes jitter from driving poses). Off: raw cameras, "
                                               "as pose_smoothing 1."),
                comfy_io.Boolean.Input("map_to_source", **GENERATE["map_to_init_pose"].widget_kwargs(),
                                       tooltip="Driving mode: start from the photo's pose and apply the driving "
                                               "video's pose changes (official default)."),
                t.Motion.Input("motion", optional=True,
                               tooltip="Driving mode: a motion with head pose (from Video→3DMM)."),
                # added after the first release: optional with defaults, so earlier saved graphs still load
                comfy_io.Float.Input("pose_strength", **GENERATE["pose_strength"].widget_kwargs(), step=0.05,
                                     optional=True,
                                     tooltip="Driving and natural: scale the head's motion (0 = the pose held, 1 = "
                                             "as driven, 2 = doubled; natural motion stays within its absolute "
                                             "bounds of ±12° yaw, ±8° pitch, ±5° roll at any strength). Orbit and "
                                             "keyframe angles are not scaled; their natural motion on top is."),
                comfy_io.Int.Input("pose_smoothing", **GENERATE["pose_smoothing"].widget_kwargs(), step=2,
                                   optional=True,
                                   tooltip="Frames the camera is averaged over, odd (official 7; 1 = none; more = "
                                           "calmer, but slower to follow quick turns)."),
                comfy_io.Boolean.Input("natural_on_top", **GENERATE["natural_on_top"].widget_kwargs(),
                                       optional=True,
                                       tooltip="Orbit and keyframes: add natural head motion on top of the path."),
                # no randomise-after-run control (the frontend adds one to any 'seed' unless told not to): a new
                # seed on every run would re-render a static head for nothing
                comfy_io.Int.Input("seed", **GENERATE["seed"].widget_kwargs(), control_after_generate=False,
                                   optional=True,
                                   tooltip="Natural motion: the head's path (the same seed gives the same motion). "
                                           "Each portrait adds its place in the batch and its face number in the "
                                           "photo, so people sharing this node do not sway in sync."),
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
                easing: str, smooth_cameras: bool, map_to_source: bool, motion: Motion | None = None,
                pose_strength: float = PoseRecipe.pose_strength, pose_smoothing: int = PoseRecipe.pose_smoothing,
                natural_on_top: bool = PoseRecipe.natural_on_top, seed: int = PoseRecipe.seed):
        if mode == "driving" and (motion is None or motion.euler is None):
            raise InputError("Head Pose 'driving' needs a motion with head pose: connect Video→3DMM's motion.")
        return comfy_io.NodeOutput(PoseRecipe(
            mode=mode, pose_motion=motion, map_to_init_pose=map_to_source, orbit_yaw_degrees=yaw_degrees,
            orbit_pitch_degrees=pitch_degrees, orbit_loops=loops, keyframes=keyframes, easing=easing,
            pose_smoothing=pose_smoothing if smooth_cameras else 1, pose_strength=pose_strength, seed=seed,
            natural_on_top=natural_on_top))


NODES = [HeadPose]
