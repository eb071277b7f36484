"""Motion Adapter: animated tri-planes = canonical tri-plane + the adapter's residual (lazy, chunked)."""

from __future__ import annotations

from r3dp_core.pipeline.portrait_streams import PortraitStreams
from r3dp_core.pipeline.types import Avatar

from . import _types as t
from ._api import comfy_io
from .loaders import VideoModel


class MotionAdapter(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_MotionAdapter",
            display_name="Motion Adapter",
            category=f"{t.CATEGORY}/render",
            description="Adds the motion adapter's per-frame residual (from the canonical, source and driving PNCC) "
                        "to each portrait's canonical tri-plane: animated tri-planes, evaluated in chunks downstream.",
            inputs=[
                t.Avatar.Input("avatar", tooltip="The portrait(s) from Image→Triplane (canonical tri-planes)."),
                t.Pncc.Input("pncc", tooltip="The driving PNCC from PNCC Builder (same portraits)."),
                t.VideoModel.Input("video_model", tooltip="From Load Video Model."),
            ],
            outputs=[t.Planes.Output(display_name="planes")],
        )

    @classmethod
    def execute(cls, avatar: list[Avatar], pncc: PortraitStreams, video_model: VideoModel):
        from r3dp_core.pipeline.portrait_streams import plane_streams

        return comfy_io.NodeOutput(plane_streams(avatar, pncc, video_model.module))


NODES = [MotionAdapter]
