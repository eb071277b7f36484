"""Head Pose: where the head (i.e. the camera around it) is on every frame.

The node outputs a *recipe*, ``r3dp_core.pipeline.pose.PoseRecipe``; the render stage resolves it against each
portrait's source pose and the clip, so one Head Pose node serves any number of portraits and any motion length.
"""

from __future__ import annotations

from r3dp_core.errors import InputError
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
                        "yaw/pitch path edited on the canvas (keyframes), or the driving pose when there is one "
                        "(auto). Angles are offsets from the source pose.",
            inputs=[
                comfy_io.Combo.Input("mode", options=list(POSE_MODES), default="static",
                                     tooltip="static: keep the photo's pose · driving: follow the motion's head "
                                             "pose · orbit: sweep the view · keyframes: follow the canvas path · "
                                             "auto: driving when the motion has a head pose, else static."),
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
                comfy_io.Combo.Input("easing", options=list(EASINGS), default=PoseRecipe.easing,
                                     tooltip="Keyframes mode: 'smooth' eases in and out of every key, 'linear' "
                                             "moves at constant speed."),
                comfy_io.Boolean.Input("smooth_cameras", default=PoseRecipe.smooth_cameras,
                                       tooltip="Smooth the camera over 7 frames (the official behaviour; removes "
                                               "jitter from driving poses)."),
                comfy_io.Boolean.Input("map_to_source", default=PoseRecipe.map_to_source,
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
        return comfy_io.NodeOutput(PoseRecipe(
            mode=mode, pose_motion=motion, map_to_source=map_to_source, orbit_yaw_degrees=yaw_degrees,
            orbit_pitch_degrees=pitch_degrees, orbit_loops=loops, keyframes=keyframes, easing=easing,
            smooth_cameras=smooth_cameras))


NODES = [HeadPose]
