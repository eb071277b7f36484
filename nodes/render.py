"""PNCC Builder → Motion Adapter → Volume Render: each wires one lazy stage (nothing is computed unless its
preview IMAGE output is connected; the HTB-SR Composite pulls the whole chain chunk by chunk)."""

from __future__ import annotations

from dataclasses import replace

import torch

from r3dp_core.errors import InputError
from r3dp_core.pipeline.types import Avatar, Motion

from . import _types as t
from ._api import comfy_io
from ._stream import DEFAULT_CHUNK, Stream, check_portraits, output_is_linked, pull
from .camera import CameraPath
from .loaders import FaceModel, VideoModel

_CHUNK_TOOLTIP = "Frames per chunk when the preview is computed (lower it if the GPU runs out of memory)."


def _preview(node_cls, stream: Stream, chunk_size: int, to_frames) -> torch.Tensor:
    """All frames of every portrait as one IMAGE batch (portrait after portrait), computed in chunks."""
    from r3dp_core.pipeline.images import to_comfy_image

    frames = []

    def consume(portrait, start, stop, value):
        images = to_frames(value)
        frames.append(to_comfy_image(images))
        return images[-1]

    pull(stream, chunk_size, node_cls.hidden.unique_id, consume)
    return torch.cat(frames)


class PnccBuilder(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_PnccBuilder",
            display_name="PNCC Builder",
            category=f"{t.CATEGORY}/render",
            description="Renders the driving expression of every frame on each portrait's 3DMM identity as a PNCC/SECC "
                        "image (frontal, colour-coded face), with the motion's blinks; lazily, frame chunks are made "
                        "when a later node needs them.",
            inputs=[
                t.Motion.Input("motion", tooltip="The driving motion (Audio→3DMM, Video→3DMM or Load Motion)."),
                t.Triplane.Input("avatar", tooltip="The portrait(s) whose identity is animated (Image→Triplane)."),
                t.Bfm.Input("bfm", tooltip="From Load BFM 3DMM."),
                comfy_io.Boolean.Input("blink", default=True,
                                       tooltip="Apply the motion's blink schedule (eyes close by editing the PNCC)."),
                comfy_io.Int.Input("preview_chunk", default=DEFAULT_CHUNK, min=1, max=256, tooltip=_CHUNK_TOOLTIP),
                comfy_io.Float.Input("mouth_scale", default=1.0, min=0.0, max=3.0, step=0.05, optional=True,
                                     tooltip="Scale the mouth's motion in the PNCC (1 = as driven, 0 = closed, "
                                             ">1 exaggerated); works for audio- and video-driven motion."),
            ],
            outputs=[t.Pncc.Output(display_name="pncc"),
                     comfy_io.Image.Output(display_name="pncc_images",
                                           tooltip="Every PNCC frame, rendered only when this output is connected.")],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, motion: Motion, avatar: list[Avatar], bfm: FaceModel, blink: bool, preview_chunk: int,
                mouth_scale: float = 1.0):
        from r3dp_core.pipeline.stages import FaceKit, pncc_source

        if motion.num_frames < 1:
            raise InputError("The motion has no frames.")
        kit = FaceKit(bfm=bfm.bfm, secc_mesh=bfm.secc_mesh, landmarker_path=None)
        driving = motion if blink else replace(motion, blink=None, blink_edited=None)
        with torch.inference_mode():
            sources = [pncc_source(kit, a, driving, mouth_gain=mouth_scale) for a in avatar]
        stream = Stream(avatars=list(avatar), motion=motion, sources=sources, kit=kit)
        images = _preview(cls, stream, preview_chunk, lambda x: x) if output_is_linked(cls, 1) else None
        return comfy_io.NodeOutput(stream, images)


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
                t.Triplane.Input("avatar", tooltip="The portrait(s) from Image→Triplane (canonical tri-planes)."),
                t.Pncc.Input("pncc", tooltip="The driving PNCC from PNCC Builder (same portraits)."),
                t.VideoModel.Input("video_model", tooltip="From Load Video Model."),
            ],
            outputs=[t.Planes.Output(display_name="planes")],
        )

    @classmethod
    def execute(cls, avatar: list[Avatar], pncc: Stream, video_model: VideoModel):
        from r3dp_core.pipeline.stream import PlaneSource

        check_portraits(avatar, pncc, "Motion Adapter")
        adapter = video_model.module.secc_img2plane_backbone
        sources = []
        for portrait, source in zip(avatar, pncc.sources):
            if portrait.planes is None:
                raise InputError("The avatar has no canonical tri-plane; connect Image→Triplane or Load Avatar.")
            sources.append(PlaneSource(adapter, portrait.planes, source, source.cano, source.src))
        return comfy_io.NodeOutput(pncc.with_sources(sources, avatars=list(avatar), video_model=video_model))


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
                                       "(video-driven), else the photo's pose held still."),
                comfy_io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                   tooltip="Seed of the renderer's sample jitter (each frame has its own stream, so "
                                           "chunking never changes a frame)."),
                comfy_io.Int.Input("preview_chunk", default=DEFAULT_CHUNK, min=1, max=256, tooltip=_CHUNK_TOOLTIP),
            ],
            outputs=[t.Render.Output(display_name="render"),
                     comfy_io.Image.Output(display_name="raw_rgb",
                                           tooltip="The raw 128² render (first three feature channels) of every frame, "
                                                   "computed only when this output is connected.")],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
        )

    @classmethod
    def execute(cls, planes: Stream, seed: int, preview_chunk: int, camera: CameraPath | None = None):
        from r3dp_core.pipeline.stages import head_pose
        from r3dp_core.pipeline.stream import RenderSource

        if planes.video_model is None:
            raise InputError("Volume Render needs tri-planes from Motion Adapter.")
        model = planes.video_model.module
        motion = planes.motion
        poses, sources = [], []
        for portrait, source in zip(planes.avatars, planes.sources):
            if camera is None:
                pose = head_pose(portrait, motion, "auto")
                cameras = pose.cameras()
            else:
                pose = camera.pose(portrait.euler[:1], portrait.trans[:1], motion.num_frames, motion.fps)
                cameras = camera.cameras(pose)
            poses.append(pose)
            sources.append(RenderSource(model.decoder, source, cameras.float(), seed=seed,
                                        render_config=model.config.render))
        stream = planes.with_sources(sources, poses=poses)
        raw = (_preview(cls, stream, preview_chunk, lambda r: r.feature_image[:, :3])
               if output_is_linked(cls, 1) else None)
        return comfy_io.NodeOutput(stream, raw)


NODES = [PnccBuilder, MotionAdapter, VolumeRender]
