"""Volume Render: EG3D rendering of the animated tri-planes under each frame's camera (lazy, chunked)."""

from __future__ import annotations

from r3dp_core import defaults
from r3dp_core.errors import InputError

from . import _types as t
from ._api import comfy_io
from ._stream import PREVIEW_CHUNK_TOOLTIP, Stream, output_is_linked, preview_frames
from .head_pose import CameraPath


class VolumeRender(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_VolumeRender",
            display_name="Volume Render",
            category=f"{t.CATEGORY}/render",
            description="EG3D volume rendering of the animated tri-planes at 128² (48 coarse + 48 importance samples) "
                        "under each frame's camera from Head Pose; lazily, in chunks downstream.",
            inputs=[
                t.Planes.Input("planes", tooltip="Animated tri-planes from Motion Adapter."),
                t.Camera.Input("camera", optional=True,
                               tooltip="From Head Pose. Unconnected: the motion's own head pose if it has one "
                                       "(video-driven), else the photo's pose held still."),
                comfy_io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                   tooltip="Seed of the renderer's sample jitter (each frame has its own stream, so "
                                           "chunking never changes a frame)."),
                comfy_io.Int.Input("preview_chunk", default=defaults.CHUNK_SIZE, min=1, max=256,
                                   tooltip=PREVIEW_CHUNK_TOOLTIP),
            ],
            outputs=[t.Render.Output(display_name="render"),
                     comfy_io.Image.Output(display_name="raw_rgb",
                                           tooltip="The raw 128² render (first three feature channels) of every frame, "
                                                   "computed only when this output is connected.")],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, planes: Stream, seed: int, preview_chunk: int, camera: CameraPath | None = None):
        from r3dp_core.pipeline.stages import head_pose
        from r3dp_core.pipeline.stream import RenderSource

        if planes.video_model is None:
            raise InputError("Volume Render needs tri-planes from Motion Adapter.")
        model = planes.video_model.module
        motion = planes.motion
        poses, sources = [], []
        for portrait, source in zip(planes.avatars, planes.sources):
            if camera is None:
                pose = head_pose(portrait, motion, "auto")
                cameras = pose.cameras()
            else:
                pose = camera.pose(portrait.euler[:1], portrait.trans[:1], motion.num_frames, motion.fps)
                cameras = camera.cameras(pose)
            poses.append(pose)
            sources.append(RenderSource(model.decoder, source, cameras.float(), seed=seed,
                                        render_config=model.config.render))
        stream = planes.with_sources(sources, poses=poses)
        raw = (preview_frames(cls, stream, preview_chunk, lambda r: r.feature_image[:, :3])
               if output_is_linked(cls, 1) else None)
        return comfy_io.NodeOutput(stream, raw)


NODES = [VolumeRender]
