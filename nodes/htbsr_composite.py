"""HTB-SR Composite: the terminal node that pulls the whole chain and composites head, torso and background."""

from __future__ import annotations

import torch

from r3dp_core import defaults
from r3dp_core.pipeline.options import GENERATE
from r3dp_core.pipeline.portrait_streams import PortraitStreams

from . import _types as t
from ._api import comfy_io


class HtbsrComposite(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_HtbsrComposite",
            display_name="HTB-SR Composite",
            category=f"{t.CATEGORY}/render",
            description="Super-resolves each rendered head to 512², warps the torso to the driving keypoints and "
                        "composites head, torso and background. Pulls the whole chain chunk by chunk (progress with "
                        "preview, Cancel between chunks). One video per portrait: outputs are lists, so Create Video "
                        "/ Save Video or Video Combine run once per portrait.",
            inputs=[
                t.Render.Input("render", tooltip="From Volume Render."),
                comfy_io.Image.Input("background", optional=True,
                                     tooltip="Optional background (Background Loader or any IMAGE; one for all "
                                             "portraits or one per portrait). Default: the photo's own background."),
                comfy_io.Float.Input("head_threshold", **GENERATE["head_threshold"].widget_kwargs(), step=0.01,
                                     tooltip=f"Ray-weight above which a pixel counts as head (official "
                                             f"{defaults.HEAD_THRESHOLD:g})."),
                comfy_io.Int.Input("chunk_size", **GENERATE["chunk_size"].widget_kwargs(),
                                   tooltip="Frames computed together. Larger is faster on big GPUs; an out-of-memory "
                                           "error halves it automatically."),
                comfy_io.Boolean.Input("preview", default=True,
                                       tooltip="Play the result (with its audio) inside this node when done."),
            ],
            outputs=[
                comfy_io.Image.Output(display_name="images", is_output_list=True,
                                      tooltip="[T,512,512,3] frames, one batch per portrait."),
                comfy_io.Mask.Output(display_name="head_mask", is_output_list=True),
                comfy_io.Mask.Output(display_name="torso_mask", is_output_list=True),
                comfy_io.Mask.Output(display_name="person_mask", is_output_list=True),
                comfy_io.Audio.Output(display_name="audio", is_output_list=True,
                                      tooltip="The motion's audio clip (None for a silent driving video)."),
                comfy_io.Float.Output(display_name="fps", is_output_list=True),
            ],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, render: PortraitStreams, head_threshold: float, chunk_size: int, preview: bool,
                background: torch.Tensor | None = None):
        from r3dp_core.errors import InputError
        from r3dp_core.pipeline.portrait_streams import composite_clips

        from ._runtime import node_host, write_preview_video

        if not isinstance(render, PortraitStreams):
            raise InputError("HTB-SR Composite composites photos: a persona's render goes to Persona Super-Resolution "
                             "or Persona Paste Back (stream).")
        clips = composite_clips(render, background, head_threshold, chunk_size, node_host(cls.hidden.unique_id))
        ui = {"r3dp_video": [write_preview_video(c, clips.fps, clips.audio) for c in clips.images]} if preview else None
        count = len(clips.images)
        return comfy_io.NodeOutput(clips.images, clips.head_masks, clips.torso_masks, clips.person_masks,
                                   [clips.audio] * count, [clips.fps] * count, ui=ui)


NODES = [HtbsrComposite]
