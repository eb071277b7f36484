"""Background Loader: the plate behind the talking portrait (the photo's own, any IMAGE, or a colour)."""

from __future__ import annotations

import re

import torch

from r3dp_core.defaults import FRAME_SIZE
from r3dp_core.errors import InputError
from r3dp_core.pipeline.types import Avatar

from . import _types as t
from ._api import comfy_io

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_colour(text: str) -> tuple[float, float, float]:
    match = _HEX.match(text.strip())
    if match is None:
        raise InputError(f"Colour {text!r} is not a hex colour like '#3a6ea5'.")
    value = match[1]
    return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))


class BackgroundLoader(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_BackgroundLoader",
            display_name="Background Loader",
            category=f"{t.CATEGORY}/render",
            description="The background behind the talking portrait, as a 512² IMAGE for HTB-SR Composite: the photo's "
                        "own background with the person filled in (source), any IMAGE resized as official (image), "
                        "or a solid colour (color).",
            inputs=[
                comfy_io.Combo.Input("mode", options=["source", "image", "color"], default="source",
                                     tooltip="source: recovered from the portrait · image: the connected IMAGE · "
                                             "color: a solid colour."),
                comfy_io.String.Input("color", default="#3a6ea5", tooltip="Color mode: hex colour, e.g. #00ff00."),
                t.Avatar.Input("avatar", optional=True,
                                 tooltip="Source mode: the portrait(s) from Image→Triplane (one plate each)."),
                comfy_io.Image.Input("image", optional=True, tooltip="Image mode: the new background (any size; "
                                                                     "one for all portraits or one per portrait)."),
            ],
            outputs=[comfy_io.Image.Output(display_name="background")],
        )

    @classmethod
    def validate_inputs(cls, mode: str, color: str):
        if mode == "color":
            try:
                parse_colour(color)
            except InputError as exc:
                return str(exc)
        return True

    @classmethod
    def execute(cls, mode: str, color: str, avatar: list[Avatar] | None = None, image: torch.Tensor | None = None):
        from r3dp_core.images import to_comfy_image
        from r3dp_core.pipeline.portrait_streams import background_plates

        if mode == "source":
            if avatar is None:
                raise InputError("Background Loader 'source' needs the avatar input (Image→Triplane).")
            return comfy_io.NodeOutput(torch.cat([to_comfy_image(a.background) for a in avatar]))
        if mode == "image":
            if image is None:
                raise InputError("Background Loader 'image' needs an IMAGE connected to its image input.")
            plates = background_plates(image, image.shape[0])
            return comfy_io.NodeOutput(torch.cat([to_comfy_image(p) for p in plates]))
        if mode == "color":
            rgb = torch.tensor(parse_colour(color), dtype=torch.float32)
            return comfy_io.NodeOutput(rgb.expand(1, FRAME_SIZE, FRAME_SIZE, 3).clone())
        raise InputError(f"Unknown background mode {mode!r}; use source, image or color.")


NODES = [BackgroundLoader]
