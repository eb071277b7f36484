"""The value of the R3DP_PNCC / R3DP_PLANES / R3DP_RENDER sockets: lazy frame sources, one per portrait.

A stage node only wires a new ``FrameSource`` on top of the previous one (cheap, nothing rendered), so a
long clip never holds every frame's SECC images, tri-planes or renders. The terminal node (HTB-SR Composite,
or a stage whose preview IMAGE output is connected) pulls chunks: the models go to the compute device for the
pull, ComfyUI's progress bar advances with the latest frame as preview, and Cancel is honoured between chunks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from r3dp_core.errors import InputError
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.types import Avatar, Motion


@dataclass
class Stream:
    """Lazy frames of one stage for every portrait, plus what the later stages need to continue the chain.

    Attributes:
        avatars: the portraits, in the order of ``sources``.
        motion: the driving motion (length, fps, audio).
        sources: one ``FrameSource`` per portrait (``SeccSource``, ``PlaneSource`` or ``RenderSource``).
        face: the ``FaceGeometry`` the SECC renders and torso keypoints read (its BFM and SECC mesh move to the
            device while pulling).
        video_model: the ``VideoModel`` whose sub-networks the sources use (None for PNCC only).
        poses: per-portrait ``HeadPose`` once a camera is set (Volume Render), for the torso keypoints.
    """

    avatars: list[Avatar]
    motion: Motion
    sources: list[Any]
    face: FaceGeometry
    video_model: Any = None
    poses: list[Any] | None = field(default=None)

    @property
    def num_frames(self) -> int:
        return self.motion.num_frames

    def with_sources(self, sources: list[Any], **changes) -> Stream:
        return replace(self, sources=sources, **changes)


def check_portraits(avatars: list[Avatar], stream: Stream, what: str) -> None:
    if len(avatars) != len(stream.avatars):
        raise InputError(f"{what}: the avatar input has {len(avatars)} portrait(s) but the incoming stream was built "
                         f"for {len(stream.avatars)}; connect the same Image→Triplane output to both.")


@contextlib.contextmanager
def pulling(stream: Stream) -> Iterator[torch.device]:
    """Models of the chain on the compute device for the block (the video model's own stages apply its precision)."""
    from ._runtime import on_compute_device

    network = stream.video_model.module if stream.video_model is not None else None
    with on_compute_device(network, stream.face.bfm) as device:
        parked_mesh = stream.face.secc_mesh
        stream.face.secc_mesh = parked_mesh.to(device)
        try:
            with torch.inference_mode():
                yield device
        finally:
            stream.face.secc_mesh = parked_mesh


def pull(stream: Stream, chunk_size: int, node_id: str | None,
         consume: Callable[[int, int, int, Any], torch.Tensor | None],
         source_for: Callable[[int], Any] | None = None) -> None:
    """Pull every portrait's frames in chunks: ``consume(portrait, start, stop, value)`` returns a preview frame
    (``[3,H,W]`` in [-1,1]) or None. ``source_for(portrait)`` may build the source inside the pull (when it needs
    device-side state, as the HTB-SR reference does); by default the stream's own sources are pulled."""
    from r3dp_core.pipeline.stream import iterate_chunks

    from ._runtime import Progress, check_interrupt

    total = stream.num_frames * len(stream.sources)
    progress = Progress(total, node_id)
    with pulling(stream):
        for portrait in range(len(stream.sources)):
            source = source_for(portrait) if source_for is not None else stream.sources[portrait]
            offset = portrait * stream.num_frames
            for start, stop, value in iterate_chunks(source, chunk_size, should_stop=check_interrupt):
                preview = consume(portrait, start, stop, value)
                progress.update(offset + stop, preview=preview)


def output_is_linked(node_cls, slot: int) -> bool:
    """Whether any node of the running prompt reads output ``slot`` of this node (previews are computed only then)."""
    dynprompt = node_cls.hidden.dynprompt
    me = node_cls.hidden.unique_id
    if dynprompt is None or me is None:
        return True
    for node_id in dynprompt.all_node_ids():
        for value in dynprompt.get_node(node_id).get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(me) and value[1] == slot:
                return True
    return False


PREVIEW_CHUNK_TOOLTIP = "Frames per chunk when the preview is computed (lower it if the GPU runs out of memory)."


def preview_frames(node_cls, stream: Stream, chunk_size: int, to_frames) -> torch.Tensor:
    """All frames of every portrait as one IMAGE batch (portrait after portrait), computed in chunks."""
    from r3dp_core.images import to_comfy_image

    frames = []

    def consume(portrait, start, stop, value):
        images = to_frames(value)
        frames.append(to_comfy_image(images))
        return images[-1]

    pull(stream, chunk_size, node_cls.hidden.unique_id, consume)
    return torch.cat(frames)
