"""Video→3DMM: a driving video → expression and head pose per frame, resampled to 25 fps."""

from __future__ import annotations

import torch

from r3dp_core import defaults
from r3dp_core.errors import InputError
from r3dp_core.pipeline.face import FaceGeometry, FaceKit

from . import _types as t
from ._api import comfy_io
from ._audio import materialise_audio


class VideoToMotion(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_VideoToMotion",
            display_name="Video → 3DMM",
            category=f"{t.CATEGORY}/motion",
            description="A driving video → expression and head pose per frame (MediaPipe landmarks + 3DMM video fit "
                        "with one shared identity), resampled to 25 fps. Give a VIDEO (core Load Video) or an IMAGE "
                        "batch of frames with their fps; the video's sound travels with the motion.",
            inputs=[
                t.Landmarker.Input("landmarker", tooltip="From Load Face Landmarker."),
                t.Bfm.Input("bfm", tooltip="From Load BFM 3DMM."),
                comfy_io.Video.Input("video", optional=True, tooltip="A driving video (core Load Video)."),
                comfy_io.Image.Input("images", optional=True,
                                     tooltip="Or the driving frames as an IMAGE batch (e.g. from VideoHelperSuite)."),
                comfy_io.Float.Input("images_fps", default=defaults.MOTION_FPS, min=1.0, max=240.0, step=0.01,
                                     tooltip="Frame rate of the IMAGE batch (ignored for a VIDEO input)."),
                comfy_io.Audio.Input("audio", optional=True,
                                     tooltip="Optional sound for the result (default: the VIDEO's own track)."),
                comfy_io.Combo.Input("face", options=["largest", "0", "1", "2", "3"], default="largest",
                                     tooltip="Which face drives the motion when the video shows several."),
            ],
            outputs=[t.Motion.Output(display_name="motion"),
                     comfy_io.Audio.Output(display_name="audio"),
                     comfy_io.Int.Output(display_name="frames"),
                     comfy_io.Float.Output(display_name="fps")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, landmarker, bfm: FaceGeometry, images_fps: float, face: str, video=None,
                images: torch.Tensor | None = None, audio=None):
        from r3dp_core.pipeline.motion import MotionRecipe, resolve_motion

        from ._runtime import Progress

        if video is not None:
            components = video.get_components()
            frames, fps = components.images, float(components.frame_rate)
            audio = audio if audio is not None else components.audio
        elif images is not None:
            frames, fps = images, float(images_fps)
        else:
            raise InputError("Video→3DMM needs a driving video: connect a VIDEO (Load Video) or an IMAGE batch.")
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise InputError(f"The driving video has no frames (got {tuple(frames.shape)}).")
        progress = Progress(1, cls.hidden.unique_id)
        # blinks are the PNCC Builder's (blink=None); the sound is kept whole
        recipe = MotionRecipe(sound=materialise_audio(audio) if audio is not None else None, video=frames[..., :3],
                              video_fps=fps, face=face if face == "largest" else int(face), blink=None)
        motion = resolve_motion(recipe, kit=FaceKit(bfm, landmarker))
        progress.update(1)
        return comfy_io.NodeOutput(motion, motion.audio, motion.num_frames, float(motion.fps))


NODES = [VideoToMotion]
