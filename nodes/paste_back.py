"""Paste Back: the animated 512² square put back into the original photo (or into frames made before)."""

from __future__ import annotations

from r3dp_core.errors import InputError

from . import _types as t
from ._api import comfy_io


class PasteBack(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PasteBack",
            display_name="Paste Back",
            category=f"{t.CATEGORY}/render",
            description="Puts the animated 512² square back into the original photo at the photo's resolution "
                        "(longest side capped at 2048 px): each frame is resized into the square it was cut from "
                        "and blended through a feathered mask around the animated person; elsewhere the photo's "
                        "pixels are kept exactly. Chain two: the second pastes person 2 into the first's frames.",
            is_input_list=True,
            inputs=[
                comfy_io.Image.Input("images", tooltip="The frames of HTB-SR Composite (one clip per portrait)."),
                t.Avatar.Input("avatar", tooltip="The avatar(s) the frames were made from (Image → Triplane or "
                                                   "Load Avatar): they carry the photo and where the square lies."),
                comfy_io.Mask.Input("person_mask", optional=True,
                                    tooltip="HTB-SR Composite's person_mask: the blend follows the moving head and "
                                            "torso. Without it the whole square is pasted (softened at its edges)."),
                comfy_io.Image.Input("background_frames", optional=True,
                                     tooltip="Paste into these frames instead of the photo: connect a previous Paste "
                                             "Back's images to animate a second person of the same photo. Of "
                                             "different lengths, the shorter clip holds its last frame."),
                comfy_io.Int.Input("feather", default=16, min=1, max=64,
                                   tooltip="Width of the soft blend edge, in pixels of the 512² frame."),
            ],
            outputs=[
                comfy_io.Image.Output(display_name="images", is_output_list=True,
                                      tooltip="Frames at the photo's resolution, one batch per clip."),
                comfy_io.Mask.Output(display_name="mask", is_output_list=True,
                                     tooltip="Where the animated square was blended in (1 = animated frame)."),
            ],
        )

    @classmethod
    def execute(cls, images: list, avatar: list, feather: list, person_mask: list | None = None,
                background_frames: list | None = None):
        avatars = [a for group in avatar for a in (group if isinstance(group, list) else [group])]
        if len(avatars) not in (1, len(images)):
            raise InputError(f"Paste Back: {len(images)} clip(s) but {len(avatars)} avatar(s); connect the avatar "
                             "output that made these frames.")
        for name, given in (("person_mask", person_mask), ("background_frames", background_frames)):
            if given is not None and len(given) not in (1, len(images)):
                raise InputError(f"Paste Back: {len(images)} clip(s) but {len(given)} {name}; give one, or one per "
                                 "clip.")

        def pick(values: list | None, index: int):
            return None if values is None else values[min(index, len(values) - 1)]

        from r3dp_core.pipeline.paste_back import paste_clip

        results = [paste_clip(clip, pick(avatars, i), pick(person_mask, i), pick(background_frames, i),
                              int(feather[0])) for i, clip in enumerate(images)]
        return comfy_io.NodeOutput([r[0] for r in results], [r[1] for r in results])


NODES = [PasteBack]
