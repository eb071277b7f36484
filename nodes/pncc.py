"""PNCC Builder: the driving SECC images (the node keeps the name PNCC) of a motion on each portrait's identity
(lazy, chunked)."""

from __future__ import annotations

from r3dp_core import defaults
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.options import GENERATE
from r3dp_core.pipeline.types import Avatar, Motion

from . import _types as t
from ._api import comfy_io
from ._stream import PREVIEW_CHUNK_TOOLTIP, linked_preview


class PnccBuilder(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PnccBuilder",
            display_name="PNCC Builder",
            category=f"{t.CATEGORY}/render",
            description="Renders the driving expression of every frame on each portrait's 3DMM identity as a PNCC/SECC "
                        "image (frontal, colour-coded face), with blinks (the motion's own schedule, else the "
                        "official periodic one, as for audio-driven motion); lazily, frame chunks are made when a "
                        "later node needs them.",
            inputs=[
                t.Motion.Input("motion", tooltip="The driving motion (Audio→3DMM, Video→3DMM or Load Motion)."),
                t.Avatar.Input("avatar", tooltip="The portrait(s) whose identity is animated (Image→Triplane)."),
                t.Bfm.Input("bfm", display_name="face_geometry",
                            tooltip="The face geometry (BFM 3DMM and SECC mesh) from Load BFM 3DMM."),
                comfy_io.Boolean.Input("blink", **GENERATE["blink"].widget_kwargs(),
                                       tooltip="Blink (eyes close by editing the PNCC): the motion's own schedule, "
                                               "else the official periodic one (video-driven and loaded motions "
                                               "too, as the official pipeline blinks every driving SECC)."),
                comfy_io.Int.Input("preview_chunk", **GENERATE["chunk_size"].widget_kwargs(),
                                   tooltip=PREVIEW_CHUNK_TOOLTIP),
                comfy_io.Float.Input("mouth_scale", **GENERATE["mouth_scale"].widget_kwargs(), step=0.05,
                                     optional=True,
                                     tooltip="Scale the mouth's motion in the PNCC (1 = as driven, 0 = closed, "
                                             ">1 exaggerated); works for audio- and video-driven motion."),
                comfy_io.Int.Input("seed", **GENERATE["seed"].widget_kwargs(), optional=True,
                                   control_after_generate=False,  # a fixed schedule: no re-run on every queue
                                   tooltip="Blink timing of a motion that has no blinks of its own (video-driven "
                                           "or loaded)."),
            ],
            outputs=[t.Pncc.Output(display_name="pncc"),
                     comfy_io.Image.Output(display_name="pncc_images",
                                           tooltip="Every PNCC frame, rendered only when this output is connected.")],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, motion: Motion, avatar: list[Avatar], bfm: FaceGeometry, blink: bool, preview_chunk: int,
                mouth_scale: float = 1.0, seed: int = defaults.SEED):
        from r3dp_core.pipeline.portrait_streams import secc_streams

        secc = secc_streams(motion, avatar, bfm, blink=blink, mouth_scale=mouth_scale, seed=seed)
        return comfy_io.NodeOutput(secc, linked_preview(cls, 1, secc, preview_chunk))


NODES = [PnccBuilder]
