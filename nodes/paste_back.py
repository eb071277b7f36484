"""Paste Back: the animated 512² square put back into the original photo (or into frames made before)."""

from __future__ import annotations

import torch

from r3dp_core.errors import InputError
from r3dp_core.images import uint8_to_unit

from . import _types as t
from ._api import comfy_io

#: Frames blended together (bounds the resized-square intermediates; the IMAGE output holds every frame anyway).
PASTE_CHUNK = 16


def _base_for(background: torch.Tensor | None, avatar) -> torch.Tensor:
    """``[T,H,W,3]`` float in [0,1]: the frames to paste into, or the avatar's photo as one frame."""
    from r3dp_core.pipeline.paste_back import avatar_placement

    if background is not None:
        if background.ndim != 4 or background.shape[-1] < 3:
            raise InputError(f"Paste Back: background_frames must be an IMAGE batch [T,H,W,3], got "
                             f"{tuple(background.shape)}.")
        return background[..., :3].float()
    photo, _ = avatar_placement(avatar)
    return uint8_to_unit(photo.cpu()[None])


def paste_clip(frames: torch.Tensor, avatar, person: torch.Tensor | None, background: torch.Tensor | None,
               feather: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip ``[T,S,S,3]`` pasted into its photo (or ``background [Tb,H,W,3]``) → (IMAGE, MASK) at that size.

    A base of several frames and a clip of different lengths give the longer length; the shorter one holds its
    last frame.
    """
    from r3dp_core.pipeline.paste_back import (
        BLEND_DILATION,
        FRAME_SIZE,
        avatar_placement,
        blend_mask,
        paste,
        source_person_mask,
    )

    if frames.ndim != 4 or frames.shape[1] != frames.shape[2]:
        raise InputError(f"Paste Back: images must be square frames [T,S,S,3] from HTB-SR Composite, got "
                         f"{tuple(frames.shape)}.")
    if person is not None and tuple(person.shape) != tuple(frames.shape[:3]):
        raise InputError(f"Paste Back: person_mask is {tuple(person.shape)} but the images are "
                         f"{tuple(frames.shape[:3])}; connect HTB-SR Composite's person_mask of the same clip.")
    photo, square = avatar_placement(avatar)
    base = _base_for(background, avatar)
    height, width = photo.shape[:2]
    base_h, base_w = base.shape[1:3]
    if (base_h, base_w) != (height, width):
        if abs(base_w / width - base_h / height) > 0.01 * base_w / width:
            raise InputError(f"Paste Back: background_frames are {base_w}x{base_h} but the avatar's photo is "
                             f"{width}x{height}; give frames of the same photo (e.g. the first Paste Back's output).")
        square = square.scaled(base_w / width)
    count = max(frames.shape[0], base.shape[0] if base.shape[0] > 1 else 0)
    source = source_person_mask(avatar)
    images, masks = [], []
    for start in range(0, count, PASTE_CHUNK):
        index = torch.arange(start, min(start + PASTE_CHUNK, count))
        clip = frames[index.clamp(max=frames.shape[0] - 1)].permute(0, 3, 1, 2).float()
        weights = blend_mask(person[index.clamp(max=person.shape[0] - 1)][:, None] if person is not None else None,
                             source, clip.shape[-1], BLEND_DILATION, feather)
        base_chunk = base[index.clamp(max=base.shape[0] - 1)] if base.shape[0] > 1 else base
        pasted, mask = paste(clip[:, :3], weights, base_chunk, square, fade=feather / FRAME_SIZE)
        images.append(pasted)
        masks.append(mask)
    return torch.cat(images), torch.cat(masks)


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

        results = [paste_clip(clip, pick(avatars, i), pick(person_mask, i), pick(background_frames, i),
                              int(feather[0])) for i, clip in enumerate(images)]
        return comfy_io.NodeOutput([r[0] for r in results], [r[1] for r in results])


NODES = [PasteBack]
