"""Volume Render: EG3D rendering of the animated tri-planes under each frame's camera (lazy, chunked)."""

from __future__ import annotations

from r3dp_core import defaults
from r3dp_core.pipeline.portrait_streams import PortraitStreams
from r3dp_core.pipeline.pose import PoseRecipe

from . import _types as t
from ._api import comfy_io
from ._stream import PREVIEW_CHUNK_TOOLTIP, linked_preview


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
                                       "(video-driven), else natural head motion around the photo's pose (Head "
                                       "Pose 'auto'; connect Head Pose 'static' to hold the photo's pose)."),
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
    def execute(cls, planes: PortraitStreams, seed: int, preview_chunk: int, camera: PoseRecipe | None = None):
        from r3dp_core.pipeline.portrait_streams import raw_rgb, render_streams

        renders = render_streams(planes, camera, seed)
        return comfy_io.NodeOutput(renders, linked_preview(cls, 1, renders, preview_chunk, raw_rgb))


NODES = [VolumeRender]
