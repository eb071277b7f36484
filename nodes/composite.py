"""HTB-SR Composite (the terminal node that pulls the whole chain) and the Background Loader."""

from __future__ import annotations

import re

import torch

from r3dp_core.errors import InputError
from r3dp_core.pipeline.types import Avatar

from . import _types as t
from ._api import comfy_io
from ._stream import DEFAULT_CHUNK, Stream, pull

BACKGROUND_SIZE = 512


def background_plates(background: torch.Tensor, count: int) -> list[torch.Tensor]:
    """An IMAGE batch of 1 or ``count`` backgrounds → ``count`` plates ``[1,3,512,512]`` in [-1,1] (official resize)."""
    from r3dp_core.geometry.inpaint import resize_background
    from r3dp_core.pipeline.images import u8_image_to_tensor

    from .avatar import to_uint8

    if background.shape[0] not in (1, count):
        raise InputError(f"{background.shape[0]} backgrounds for {count} portraits; give one background for all or "
                         "one per portrait.")
    return [u8_image_to_tensor(resize_background(to_uint8(background[min(i, background.shape[0] - 1)])))
            for i in range(count)]


def composite_source(stream: Stream, portrait: int, background: torch.Tensor | None, head_threshold: float | None):
    """The lazy HTB-SR source of one portrait, with its frame-invariant reference prepared on the device."""
    from r3dp_core.geometry.keypoints import smooth_torso_keypoints, torso_keypoints
    from r3dp_core.pipeline.stages import with_z
    from r3dp_core.pipeline.stream import CompositeSource

    model = stream.video_model.module
    bfm = stream.kit.bfm
    avatar, pose, motion = stream.avatars[portrait], stream.poses[portrait], stream.motion
    device = bfm.mean_shape.device
    identity = avatar.id[:1].to(device)
    kp_source = with_z(torso_keypoints(bfm, identity, avatar.exp[:1].to(device), avatar.euler[:1].to(device),
                                       avatar.trans[:1].to(device)))
    kp_driving = torso_keypoints(bfm, identity, motion.exp.to(device), pose.euler.to(device), pose.trans.to(device))
    kp_driving = with_z(smooth_torso_keypoints(kp_driving))
    plate = avatar.background if background is None else background
    param = next(model.parameters())
    reference = model.prepare_reference(*(x.to(param.device, param.dtype) for x in (
        avatar.torso_image, plate, avatar.segmap, kp_source)))
    return CompositeSource(model.superresolution, reference, stream.sources[portrait], kp_driving,
                           head_threshold=head_threshold)


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
                comfy_io.Float.Input("head_threshold", default=0.9, min=0.0, max=1.0, step=0.01,
                                     tooltip="Ray-weight above which a pixel counts as head (official 0.9)."),
                comfy_io.Int.Input("chunk_size", default=DEFAULT_CHUNK, min=1, max=256,
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
    def execute(cls, render: Stream, head_threshold: float, chunk_size: int, preview: bool,
                background: torch.Tensor | None = None):
        from r3dp_core.pipeline.images import to_comfy_image

        from ._runtime import write_preview_video

        if render.poses is None or render.video_model is None:
            raise InputError("HTB-SR Composite needs the output of Volume Render.")
        count = len(render.sources)
        plates = background_plates(background, count) if background is not None else [None] * count
        frames = [[] for _ in range(count)]
        masks = {name: [[] for _ in range(count)] for name in ("head_mask", "torso_mask", "person_mask")}

        def consume(portrait, start, stop, out):
            frames[portrait].append(to_comfy_image(out.image))
            for name, parts in masks.items():
                parts[portrait].append(getattr(out, name)[:, 0].float().cpu())
            return out.image[-1]

        pull(render, chunk_size, cls.hidden.unique_id, consume,
             source_for=lambda p: composite_source(render, p, plates[p], head_threshold))
        images = [torch.cat(parts) for parts in frames]
        fps = float(render.motion.fps)
        audio = render.motion.audio
        ui = None
        if preview:
            ui = {"r3dp_video": [write_preview_video(clip, fps, audio) for clip in images]}
        return comfy_io.NodeOutput(images, *([torch.cat(p) for p in masks[name]] for name in masks),
                                   [audio] * count, [fps] * count, ui=ui)


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
                t.Triplane.Input("avatar", optional=True,
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
        from r3dp_core.pipeline.images import to_comfy_image

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
            return comfy_io.NodeOutput(rgb.expand(1, BACKGROUND_SIZE, BACKGROUND_SIZE, 3).clone())
        raise InputError(f"Unknown background mode {mode!r}; use source, image or color.")


NODES = [HtbsrComposite, BackgroundLoader]
