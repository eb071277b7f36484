"""Paste Back: the animated 512² square put back into the original photo (or into frames made before).

Two forms: Paste Back gives the clip as IMAGE frames at the photo's resolution (float32, ≈ 25 MB a frame at
1080p, for short clips and core image nodes); Paste Back (stream) gives an R3DP_FRAMES source that pastes nothing
until Save Video (r3dp) pulls it chunk by chunk into an mp4, so a long clip never exists whole at that size.
"""

from __future__ import annotations

import os

from r3dp_core.errors import InputError

from . import _types as t
from ._api import comfy_io

_DESCRIPTION = ("Puts the animated 512² square back into the original photo at the photo's resolution (longest side "
                "capped at 2048 px): each frame is resized into the square it was cut from and blended through a "
                "feathered mask around the animated person; elsewhere the photo's pixels are kept exactly.")
_IMAGES_TOOLTIP = "The frames of HTB-SR Composite (one clip per portrait)."
_AVATAR_TOOLTIP = ("The avatar(s) the frames were made from (Image → Triplane or Load Avatar): they carry the photo "
                   "and where the square lies.")
_PERSON_TOOLTIP = ("HTB-SR Composite's person_mask: the blend follows the moving head and torso. Without it the whole "
                   "square is pasted (softened at its edges).")
_FEATHER_TOOLTIP = "Width of the soft blend edge, in pixels of the 512² frame."


def _paste_inputs(background) -> list:
    """The inputs both Paste Back nodes take, in their saved order, with the node's own ``background`` input."""
    return [comfy_io.Image.Input("images", tooltip=_IMAGES_TOOLTIP),
            t.Avatar.Input("avatar", tooltip=_AVATAR_TOOLTIP),
            comfy_io.Mask.Input("person_mask", optional=True, tooltip=_PERSON_TOOLTIP),
            background,
            comfy_io.Int.Input("feather", default=16, min=1, max=64, tooltip=_FEATHER_TOOLTIP)]


def _sources(images: list, avatar: list, feather: list, person_mask: list | None, background: list | None,
             background_name: str) -> list:
    """The list inputs of a Paste Back node (each avatar input a list of avatars) → ``paste_back.clip_sources``."""
    from r3dp_core.pipeline.paste_back import clip_sources

    avatars = [a for group in avatar for a in (group if isinstance(group, list) else [group])]
    return clip_sources(images, avatars, person_mask, background, int(feather[0]), background_name)


class PasteBack(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PasteBack",
            display_name="Paste Back",
            category=f"{t.CATEGORY}/render",
            description=f"{_DESCRIPTION} Chain two: the second pastes person 2 into the first's frames. The output "
                        "holds the whole clip at the photo's resolution (about 25 MB a frame at 1080p); for long clips "
                        "use Paste Back (stream) → Save Video (r3dp).",
            is_input_list=True,
            inputs=_paste_inputs(comfy_io.Image.Input(
                "background_frames", optional=True,
                tooltip="Paste into these frames instead of the photo: connect a previous Paste Back's images to "
                        "animate a second person of the same photo. Of different lengths, the shorter clip holds its "
                        "last frame.")),
            outputs=[
                comfy_io.Image.Output(display_name="images", is_output_list=True,
                                      tooltip="Frames at the photo's resolution, one batch per clip."),
                comfy_io.Mask.Output(display_name="mask", is_output_list=True,
                                     tooltip="Where the animated square was blended in (1 = animated frame)."),
            ],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, images: list, avatar: list, feather: list, person_mask: list | None = None,
                background_frames: list | None = None):
        from r3dp_core.pipeline.paste_back import paste_clips

        from ._runtime import node_host

        sources = _sources(images, avatar, feather, person_mask, background_frames, "background_frames")
        results = paste_clips(sources, node_host(cls.hidden.unique_id))
        return comfy_io.NodeOutput([r[0] for r in results], [r[1] for r in results])


class PasteBackStream(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PasteBackStream",
            display_name="Paste Back (stream)",
            category=f"{t.CATEGORY}/render",
            description=f"{_DESCRIPTION} For long clips: nothing is pasted here; Save Video (r3dp) pastes and encodes "
                        "chunk by chunk, so memory does not grow with the clip's length at the photo's resolution. "
                        "Chain two (the second's background is the first's frames) to animate two people of one photo.",
            is_input_list=True,
            inputs=_paste_inputs(t.Frames.Input(
                "background", optional=True,
                tooltip="Paste into these frames instead of the photo: connect a previous Paste Back (stream)'s frames "
                        "to animate a second person of the same photo. Of different lengths, the shorter clip holds "
                        "its last frame.")),
            outputs=[
                t.Frames.Output(display_name="frames", is_output_list=True,
                                tooltip="The pasted frames, computed chunk by chunk by the node that reads them "
                                        "(Save Video (r3dp)); one per clip."),
            ],
        )

    @classmethod
    def execute(cls, images: list, avatar: list, feather: list, person_mask: list | None = None,
                background: list | None = None):
        return comfy_io.NodeOutput(_sources(images, avatar, feather, person_mask, background, "background"))


class SaveVideo(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from r3dp_core.pipeline.paste_back import PASTE_CHUNK

        return comfy_io.Schema(
            node_id="R3DP_SaveVideo",
            display_name="Save Video (r3dp)",
            category=f"{t.CATEGORY}/io",
            description="Writes the frames of Paste Back (stream) to an H.264 mp4 (with the audio as AAC) in ComfyUI's "
                        "output folder, pasting and encoding chunk by chunk: memory stays flat however long the clip. "
                        "Progress with preview; Cancel between chunks. The file appears only when complete.",
            inputs=[
                t.Frames.Input("frames", tooltip="From Paste Back (stream) or Persona Paste Back (stream)."),
                comfy_io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                                     tooltip="Frame rate: connect HTB-SR Composite's fps (25 for r3dp motions and "
                                             "personas)."),
                comfy_io.Audio.Input("audio", optional=True,
                                     tooltip="The soundtrack, muxed as AAC: HTB-SR Composite's audio (or any AUDIO)."),
                comfy_io.String.Input("filename_prefix", default="r3dp/paste_back",
                                      tooltip="File name prefix in the output folder; may contain sub-folders. A "
                                              "number is appended."),
                comfy_io.Int.Input("chunk_size", default=PASTE_CHUNK, min=1, max=256,
                                   tooltip="Frames pasted and encoded together: memory grows with this, not with the "
                                           "clip's length."),
            ],
            outputs=[],
            hidden=[comfy_io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, frames, fps: float, filename_prefix: str, chunk_size: int, audio: dict | None = None):
        import folder_paths

        from r3dp_core.pipeline.paste_back import ClipPasteSource, write_clip_video

        from ._runtime import node_host
        from .persona import PersonaPasteSource, write_persona_video

        if not isinstance(frames, (ClipPasteSource, PersonaPasteSource)):
            raise InputError("Save Video (r3dp): frames must come from Paste Back (stream) or Persona Paste Back "
                             "(stream).")
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), frames.width, frames.height)
        name = f"{filename}_{counter:05}_.mp4"
        host = node_host(cls.hidden.unique_id)
        if isinstance(frames, PersonaPasteSource):
            write_persona_video(frames, os.path.join(folder, name), fps, audio, chunk_size=chunk_size, host=host)
        else:
            write_clip_video(frames, os.path.join(folder, name), fps, audio, chunk_size=chunk_size,
                             on_chunk=host.report, should_stop=host.should_stop)
        saved = {"filename": name, "subfolder": subfolder, "type": "output"}
        return comfy_io.NodeOutput(ui={"images": [saved], "animated": (True,)})


NODES = [PasteBack, PasteBackStream, SaveVideo]
