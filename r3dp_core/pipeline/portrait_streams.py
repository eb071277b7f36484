"""The frame chain over a batch of portraits: one lazy stream per portrait, per stage (the ComfyUI stage nodes).

``frame_chain.py`` builds each stage for one portrait; here every stage is built for each portrait of a batch
and carried, with what the later stages need, as one :class:`PortraitStreams` value (the R3DP_PNCC, R3DP_PLANES
and R3DP_RENDER sockets): :func:`secc_streams` → :func:`plane_streams` → :func:`render_streams` wire sources
without computing a frame, and :func:`composite_clips` (or :func:`stream_images` for a stage's preview) pulls
every portrait's frames chunk by chunk, with the models on the compute device for the pull (:class:`Host`).

    secc = secc_streams(motion, avatars, face)                 # SECC of each portrait, nothing rendered yet
    planes = plane_streams(avatars, secc, model)
    renders = render_streams(planes, PoseRecipe(mode="natural"), seed=0)
    clips = composite_clips(renders)                            # [T,512,512,3] frames and masks per portrait
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .. import defaults
from ..errors import InputError
from ..geometry.camera import HeadPose
from ..host import HERE, Host
from . import frame_chain, stages
from .face import FaceGeometry
from .pose import PoseRecipe, resolve_pose
from .stream import FrameSource, iterate_chunks
from .types import Avatar, Motion


@dataclass
class PortraitStreams:
    """Lazy frames of one stage for every portrait, plus what the later stages need to continue the chain.

    Attributes:
        avatars: the portraits, in the order of ``sources``.
        motion: the driving motion (length, fps, audio).
        sources: one ``FrameSource`` per portrait (``SeccSource``, ``PlaneSource`` or ``RenderSource``).
        face: the ``FaceGeometry`` the SECC renders and torso keypoints read (its BFM and SECC mesh move to the
            device while pulling); the streams' own copy.
        model: the video model whose sub-networks the sources use (None for the SECC stage).
        poses: each portrait's ``HeadPose`` once a camera is set (:func:`render_streams`), for the torso keypoints.
    """

    avatars: list[Avatar]
    motion: Motion
    sources: list[FrameSource]
    face: FaceGeometry
    model: torch.nn.Module | None = None
    poses: list[HeadPose] | None = field(default=None)

    @property
    def num_frames(self) -> int:
        return self.motion.num_frames

    def with_sources(self, sources: list[FrameSource], **changes) -> PortraitStreams:
        return replace(self, sources=sources, **changes)


def check_portraits(avatars: list[Avatar], streams: PortraitStreams, what: str) -> None:
    """Refuse avatars that are not the ones the streams were built for (their number)."""
    if len(avatars) != len(streams.avatars):
        raise InputError(f"{what}: the avatar input has {len(avatars)} portrait(s) but the incoming stream was built "
                         f"for {len(streams.avatars)}; connect the same Image→Triplane output to both.")


def secc_streams(motion: Motion, avatars: list[Avatar], face: FaceGeometry, *, blink: bool = defaults.BLINK,
                 mouth_scale: float = defaults.MOUTH_SCALE, seed: int = defaults.SEED) -> PortraitStreams:
    """The driving SECC of ``motion`` on each portrait's identity (``frame_chain.secc_source``), lazily.

    Args:
        motion: the driving motion; its own blink schedule, else the official periodic one when ``blink``
            (``stages.with_blinks``, seeded by ``seed``); without ``blink``, none.
        avatars: the portraits (their identities).
        face: the 3DMM and SECC mesh; the streams keep their own copy, whose mesh moves to the compute device
            while frames are pulled.
        mouth_scale: scales the mouth's motion in every frame (0..``defaults.MOUTH_SCALE_MAX``; 1 as driven).
    """
    if motion.num_frames < 1:
        raise InputError("The motion has no frames.")
    face = replace(face)
    driving = stages.with_blinks(motion, blink, seed)
    with torch.inference_mode():
        sources = [frame_chain.secc_source(face, avatar, driving, mouth_scale=mouth_scale) for avatar in avatars]
    return PortraitStreams(avatars=list(avatars), motion=motion, sources=sources, face=face)


def plane_streams(avatars: list[Avatar], secc: PortraitStreams, model: torch.nn.Module) -> PortraitStreams:
    """Each portrait's animated tri-planes (``frame_chain.plane_source``) over its SECC stream, lazily."""
    check_portraits(avatars, secc, "Motion Adapter")
    sources = [frame_chain.plane_source(model, avatar, source) for avatar, source in zip(avatars, secc.sources)]
    return secc.with_sources(sources, avatars=list(avatars), model=model)


def render_streams(planes: PortraitStreams, recipe: PoseRecipe | None = None, seed: int = 0) -> PortraitStreams:
    """Each portrait's volume renders (``frame_chain.render_source``) under its own head pose, lazily.

    Args:
        planes: the tri-plane streams (:func:`plane_streams`).
        recipe: the head-pose recipe, resolved against each portrait and the motion (``pose.resolve_pose``: each
            portrait gets its own natural-motion seed, so people do not sway in sync); None: ``auto``.
        seed: the renderer's sample jitter.
    """
    if planes.model is None:
        raise InputError("Volume Render needs tri-planes from Motion Adapter.")
    recipe = recipe if recipe is not None else PoseRecipe(mode="auto")
    poses = [resolve_pose(recipe, avatar, planes.motion, index) for index, avatar in enumerate(planes.avatars)]
    sources = [frame_chain.render_source(planes.model, source, pose, seed)
               for source, pose in zip(planes.sources, poses)]
    return planes.with_sources(sources, poses=poses)


def raw_rgb(render) -> torch.Tensor:
    """The first three feature channels of a ``RenderOutput`` chunk (the raw render), ``[B,3,R,R]``."""
    return render.feature_image[:, :3]


@contextlib.contextmanager
def pulling(streams: PortraitStreams, host: Host = HERE) -> Iterator[torch.device]:
    """The chain's models on the compute device for the block (the video model's own stages apply its precision),
    the SECC mesh with them, in inference mode."""
    with host.place(streams.model, streams.face.bfm) as device:
        parked_mesh = streams.face.secc_mesh
        streams.face.secc_mesh = parked_mesh.to(device)
        try:
            with torch.inference_mode():
                yield device
        finally:
            streams.face.secc_mesh = parked_mesh


def pull(streams: PortraitStreams, chunk_size: int, consume: Callable[[int, int, int, Any], torch.Tensor | None],
         host: Host = HERE, source_for: Callable[[int], FrameSource] | None = None) -> None:
    """Pull every portrait's frames in chunks, portrait after portrait.

    ``consume(portrait, start, stop, value)`` returns a preview frame (``[3,H,W]`` in [-1,1]) or None; progress is
    reported over all portraits' frames. ``source_for(portrait)`` may build the source inside the pull (when it
    needs device-side state, as the HTB-SR reference does); by default the streams' own sources are pulled.
    """
    total = streams.num_frames * len(streams.sources)
    with pulling(streams, host):
        for portrait in range(len(streams.sources)):
            source = source_for(portrait) if source_for is not None else streams.sources[portrait]
            offset = portrait * streams.num_frames
            for start, stop, value in iterate_chunks(source, chunk_size, should_stop=host.should_stop):
                preview = consume(portrait, start, stop, value)
                host.report(offset + stop, total, preview)


def stream_images(streams: PortraitStreams, chunk_size: int, select: Callable[[Any], torch.Tensor] = lambda x: x,
                  host: Host = HERE) -> torch.Tensor:
    """Every frame of every portrait as one IMAGE batch ``[P·T,H,W,3]`` in [0,1] (portrait after portrait),
    computed in chunks; ``select`` takes the ``[B,3,H,W]`` images in [-1,1] out of a chunk (default: the chunk)."""
    from ..images import to_comfy_image

    frames = []

    def consume(portrait, start, stop, value):
        images = select(value)
        frames.append(to_comfy_image(images))
        return images[-1]

    pull(streams, chunk_size, consume, host)
    return torch.cat(frames)


def background_plates(background: torch.Tensor, count: int) -> list[torch.Tensor]:
    """An IMAGE batch ``[1 or count,H,W,3]`` of backgrounds → ``count`` plates ``[1,3,512,512]`` in [-1,1] (the
    official resize)."""
    from ..geometry.inpaint import resize_background
    from ..images import comfy_to_uint8, u8_image_to_tensor

    if background.shape[0] not in (1, count):
        raise InputError(f"{background.shape[0]} backgrounds for {count} portraits; give one background for all or "
                         "one per portrait.")
    return [u8_image_to_tensor(resize_background(comfy_to_uint8(background[min(i, background.shape[0] - 1)])))
            for i in range(count)]


@dataclass
class CompositeClips:
    """HTB-SR Composite's result, one entry per portrait.

    Attributes:
        images: ``[T,512,512,3]`` float in [0,1] frames of each portrait.
        head_masks, torso_masks, person_masks: ``[T,512,512]`` float masks of each portrait.
        audio: the motion's sound (ComfyUI AUDIO), or None.
        fps: the motion's frame rate.
    """

    images: list[torch.Tensor]
    head_masks: list[torch.Tensor]
    torso_masks: list[torch.Tensor]
    person_masks: list[torch.Tensor]
    audio: dict | None
    fps: float


def composite_clips(renders: PortraitStreams, background: torch.Tensor | None = None,
                    head_threshold: float = defaults.HEAD_THRESHOLD, chunk_size: int = defaults.CHUNK_SIZE,
                    host: Host = HERE) -> CompositeClips:
    """Pull the whole chain and composite head, torso and background (HTB-SR) for every portrait.

    Args:
        renders: the render streams (:func:`render_streams`).
        background: optional IMAGE batch of 1 or one per portrait instead of each photo's own background.
        head_threshold: ray weight above which a pixel counts as head (official 0.9).
        chunk_size: frames computed together (an out-of-memory error halves it).
        host: where the models compute, progress (with the latest frame), cancel between chunks.
    """
    from ..images import to_comfy_image

    if renders.poses is None or renders.model is None:
        raise InputError("HTB-SR Composite needs the output of Volume Render.")
    count = len(renders.sources)
    plates = background_plates(background, count) if background is not None else [None] * count
    frames = [[] for _ in range(count)]
    masks = {name: [[] for _ in range(count)] for name in ("head_mask", "torso_mask", "person_mask")}

    def consume(portrait, start, stop, out):
        frames[portrait].append(to_comfy_image(out.image))
        for name, parts in masks.items():
            parts[portrait].append(getattr(out, name)[:, 0].float().cpu())
        return out.image[-1]

    def composite(p: int):  # built inside the pull: the portrait's reference is prepared on the compute device
        avatar = renders.avatars[p]
        keypoints = frame_chain.torso_keypoint_tracks(renders.face, avatar, renders.motion, renders.poses[p])
        return frame_chain.composite_source(renders.model, avatar, renders.sources[p], keypoints, plates[p],
                                            head_threshold)

    pull(renders, chunk_size, consume, host, source_for=composite)
    return CompositeClips([torch.cat(parts) for parts in frames],
                          *([torch.cat(p) for p in masks[name]] for name in masks),
                          audio=renders.motion.audio, fps=float(renders.motion.fps))
