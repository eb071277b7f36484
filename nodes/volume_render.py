"""Volume Render: EG3D rendering of the animated tri-planes under each frame's camera (lazy, chunked).

One render node for both families: ``planes`` takes a photo's animated tri-planes (R3DP_PLANES, Motion Adapter) or a
persona's (R3DP_PERSONA_PLANES, Persona Audio → Tri-plane); saved graphs keep their R3DP_PLANES links.
"""

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
                comfy_io.MultiType.Input("planes", types=[t.Planes, t.PersonaPlanes],
                                         tooltip="Animated tri-planes from Motion Adapter (a photo), or a persona's "
                                                 "from Persona Audio → Tri-plane."),
                t.Camera.Input("camera", optional=True,
                               tooltip="From Head Pose. Unconnected: the motion's own head pose if it has one "
                                       "(video-driven), else natural head motion around the photo's pose (Head "
                                       "Pose 'auto'; connect Head Pose 'static' to hold the photo's pose). For a "
                                       "persona: unconnected replays the training video's cameras (what paste-back "
                                       "needs); Head Pose's yaw/pitch turn the persona about the official pivot, the "
                                       "same way as a photo; roll and translation are dropped (the persona's "
                                       "camera is EG3D's look-at camera)."),
                comfy_io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                   tooltip="Seed of the renderer's sample jitter (each frame has its own stream, so "
                                           "chunking never changes a frame)."),
                comfy_io.Int.Input("preview_chunk", default=defaults.CHUNK_SIZE, min=1, max=256,
                                   tooltip=PREVIEW_CHUNK_TOOLTIP),
            ],
            outputs=[t.Render.Output(display_name="render"),
                     comfy_io.Image.Output(display_name="raw_rgb",
                                           tooltip="The raw 128² render (first three feature channels) of every frame, "
                                                   "computed only when this output is connected (for a persona: its "
                                                   "super-resolved frames).")],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, planes: PortraitStreams, seed: int, preview_chunk: int, camera: PoseRecipe | None = None):
        from r3dp_core.pipeline.portrait_streams import raw_rgb, render_streams

        from .persona import PersonaPlanes, persona_preview, persona_render

        if isinstance(planes, PersonaPlanes):
            render = persona_render(planes, camera, seed)
            return comfy_io.NodeOutput(render, persona_preview(cls, 1, render, preview_chunk))
        renders = render_streams(planes, camera, seed)
        return comfy_io.NodeOutput(renders, linked_preview(cls, 1, renders, preview_chunk, raw_rgb))


NODES = [VolumeRender]
