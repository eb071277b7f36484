"""Lazy, chunked frame sources: the streaming spine shared by the CLI and the ComfyUI nodes.

Each stage is a ``FrameSource`` that knows how many frames it has and computes any range of them on
demand from the stage before it. Nothing is evaluated until a consumer pulls chunks, so a long clip never
holds every frame's SECC images, tri-planes or renders at once: per chunk, SECC → Motion Adapter →
Volume Render → HTB-SR run and the chunk is handed on (to the encoder, or to ComfyUI's IMAGE batch).
Work that depends only on the portrait (canonical planes, SR reference features) is done once.

These are the mechanics; ``frame_chain.py`` builds each stage from a model, a portrait and a motion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..device import release_cached_memory
from ..errors import InputError
from ..render.noise import frame_noise
from ..render.renderer import RenderOutput, render_triplanes

log = logging.getLogger(__name__)


class FrameSource:
    """Frames ``0..num_frames-1`` of some stage, computed on demand in ranges.

    ``chunk(start, stop, trace)``: when ``trace`` is a dict, each stage also puts its own output in it
    (``"secc"``, ``"planes"``, ``"render"``), so a consumer can show intermediate results without computing
    them twice.
    """

    num_frames: int

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> Any:
        raise NotImplementedError

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frame range {start}:{stop} outside 0:{self.num_frames}")


def iterate_chunks(source: FrameSource, chunk_size: int, *, on_chunk: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], None] | None = None,
                   min_chunk_size: int = 1) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(start, stop, value)`` over the whole source.

    ``should_stop`` is called between chunks and may raise to interrupt (ComfyUI's interrupt check, or a
    KeyboardInterrupt); ``on_chunk(done, total)`` reports progress. A GPU out-of-memory error halves the
    chunk and retries it (logged) until ``min_chunk_size``; only then is it re-raised.
    """
    if chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, got {chunk_size}")
    start = 0
    while start < source.num_frames:
        if should_stop is not None:
            should_stop()
        stop = min(start + chunk_size, source.num_frames)
        try:
            value = source.chunk(start, stop)
        except torch.OutOfMemoryError:
            if chunk_size <= min_chunk_size:
                raise
            chunk_size = max(min_chunk_size, chunk_size // 2)
            log.warning("out of memory at frames %d:%d; retrying with chunks of %d frames", start, stop, chunk_size)
            release_cached_memory()
            continue
        yield start, stop, value
        start = stop
        if on_chunk is not None:
            on_chunk(stop, source.num_frames)


@dataclass
class TensorSource(FrameSource):
    """Frames already in memory ``[T,...]``."""

    frames: torch.Tensor

    def __post_init__(self):
        self.num_frames = int(self.frames.shape[0])

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> torch.Tensor:
        self._check_range(start, stop)
        return self.frames[start:stop]


@dataclass
class SeccFrames(TensorSource):
    """Driving SECC images already in memory ``[T,3,S,S]`` in [-1,1], with the canonical and source SECC."""

    cano: torch.Tensor                                  # [1,3,S,S]
    src: torch.Tensor                                   # [1,3,S,S]


@dataclass
class SeccSource(FrameSource):
    """Driving SECC images ``[B,3,512,512]`` in [-1,1], rendered per chunk, plus the canonical and source SECC
    (once).

    ``render_secc(exp [B,64], first_frame) -> [B,3,512,512]`` renders the identity with the given expressions
    at zero pose (``first_frame`` is the sequence index of ``exp[0]``); ``edit_blink(images, amplitude [B],
    edited [B])`` closes the eyes by ``amplitude`` in the ``edited`` frames (None: no blinks).
    """

    render_secc: Callable[[torch.Tensor, int], torch.Tensor]
    exp: torch.Tensor                                   # [T,64] driving expressions
    cano: torch.Tensor                                  # [1,3,512,512] identity with exp = 0
    src: torch.Tensor                                   # [1,3,512,512] identity with the first driving exp
    blink: torch.Tensor | None = None                   # [T] eye-closing amplitude in [0,1]
    blink_edited: torch.Tensor | None = None            # [T] bool; None: where blink > 0
    edit_blink: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        self.num_frames = int(self.exp.shape[0])

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> torch.Tensor:
        self._check_range(start, stop)
        images = self.render_secc(self.exp[start:stop], start)
        if self.blink is not None and self.edit_blink is not None:
            amplitude = self.blink[start:stop].to(images.device)
            edited = amplitude > 0 if self.blink_edited is None else self.blink_edited[start:stop].to(images.device)
            if bool(edited.any()):
                images = self.edit_blink(images, amplitude, edited)
        if trace is not None:
            trace["secc"] = images
        return images


@dataclass
class PlaneSource(FrameSource):
    """Animated tri-planes ``[B,3,32,256,256]`` = canonical planes + Motion Adapter(cano, src, driving SECC)."""

    motion_adapter: torch.nn.Module
    cano_planes: torch.Tensor                           # [1,3,32,256,256]
    secc: FrameSource                                   # driving SECC [T,3,512,512]
    cano_secc: torch.Tensor                             # [1,3,512,512]
    src_secc: torch.Tensor                              # [1,3,512,512]

    def __post_init__(self):
        self.num_frames = self.secc.num_frames

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> torch.Tensor:
        self._check_range(start, stop)
        driving = self.secc.chunk(start, stop, trace)
        param = next(self.motion_adapter.parameters())
        driving = driving.to(param.device, param.dtype)
        batch = driving.shape[0]
        residual = self.motion_adapter(self.cano_secc.to(driving).expand(batch, -1, -1, -1),
                                       self.src_secc.to(driving).expand(batch, -1, -1, -1), driving)
        planes = self.cano_planes.to(residual) + residual
        if trace is not None:
            trace["planes"] = planes
        return planes


@dataclass
class RenderSource(FrameSource):
    """Volume renders of animated tri-planes under per-frame cameras."""

    decoder: torch.nn.Module
    planes: FrameSource                                 # tri-planes [T,3,32,256,256]
    cameras: torch.Tensor                               # [T,25] (or [1,25]: one camera for every frame)
    seed: int = 0
    render_config: Any = None
    max_rays_per_chunk: int | None = None  # None: the renderer's device-aware default

    def __post_init__(self):
        self.num_frames = self.planes.num_frames
        if self.cameras.ndim != 2 or self.cameras.shape[1] != 25:
            raise InputError(f"cameras must be [T,25], got {tuple(self.cameras.shape)}")
        if self.cameras.shape[0] not in (1, self.num_frames):
            raise InputError(f"{self.cameras.shape[0]} cameras for {self.num_frames} frames; "
                             "give one camera or one per frame")

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> RenderOutput:
        from ..render.renderer import RenderConfig

        self._check_range(start, stop)
        config = self.render_config or RenderConfig()
        planes = self.planes.chunk(start, stop, trace)
        cameras = self.cameras if self.cameras.shape[0] == 1 else self.cameras[start:stop]
        cameras = cameras.expand(stop - start, -1)
        noise = frame_noise(range(start, stop), config.resolution ** 2, config.num_coarse_samples,
                            config.num_fine_samples, self.seed, device=planes.device)
        render = render_triplanes(planes, self.decoder, cameras.to(planes.device, torch.float32), config,
                                  noise=noise, max_rays_per_chunk=self.max_rays_per_chunk)
        if trace is not None:
            trace["render"] = render
        return render


@dataclass
class CompositeSource(FrameSource):
    """Final frames: HTB-SR of each render over the torso reference and background.

    ``reference`` is ``superresolution.prepare_reference(...)`` of the portrait, computed once.
    """

    superresolution: torch.nn.Module
    reference: Any
    renders: FrameSource                                # RenderOutput chunks
    kp_driving: torch.Tensor                            # [T,68,3] xy in [-1,1], z 0
    head_threshold: float | None = None

    def __post_init__(self):
        self.num_frames = self.renders.num_frames
        if self.kp_driving.shape[0] != self.num_frames:
            raise InputError(f"{self.kp_driving.shape[0]} driving keypoint frames for {self.num_frames} frames")

    def chunk(self, start: int, stop: int, trace: dict | None = None):
        self._check_range(start, stop)
        render = self.renders.chunk(start, stop, trace)
        kp = self.kp_driving[start:stop].to(render.feature_image)
        return self.superresolution.render_frames(render.feature_image, render.weights, kp, self.reference,
                                                  head_threshold=self.head_threshold)


@dataclass
class PanelFrames:
    image: torch.Tensor                                 # [B,3,S,5S] in [-1,1]


def depth_panel(depth: torch.Tensor) -> torch.Tensor:
    """The official debug view of the renderer's depth: grey, min–max normalised, near dark and far white.

    The official ``concat_debug`` normalises over the whole sequence, which a streamed clip does not know
    until its last frame; each frame is normalised over its own depths instead (frames render the same in any
    chunk). Its largest depth is the far end of the rays that miss the head, so the background is white.

    Args:
        depth: ``[B,1,R,R]`` expected depth (``RenderOutput.depth``).

    Returns:
        ``[B,3,R,R]`` in [-1,1].
    """
    low = depth.amin(dim=(1, 2, 3), keepdim=True)
    high = depth.amax(dim=(1, 2, 3), keepdim=True)
    unit = (depth - low) / (high - low).clamp(min=torch.finfo(depth.dtype).tiny)
    return (unit * 2 - 1).expand(-1, 3, -1, -1)


@dataclass
class DebugPanelSource(FrameSource):
    """Side-by-side panels for inspecting a clip (the official ``concat_debug``): source | driving SECC | raw
    volume render | depth (:func:`depth_panel`) | final frame.

    Every panel is shown at the final frame's size ``S`` (the 128² raw render and depth upsampled, nearest).
    """

    composite: CompositeSource
    source_image: torch.Tensor                          # [1,3,H,W] in [-1,1]

    def __post_init__(self):
        self.num_frames = self.composite.num_frames

    def chunk(self, start: int, stop: int, trace: dict | None = None) -> PanelFrames:
        trace = {} if trace is None else trace
        final = self.composite.chunk(start, stop, trace).image
        batch, size = final.shape[0], final.shape[-2:]

        def panel(image: torch.Tensor, mode: str) -> torch.Tensor:
            image = image.to(final.device, final.dtype)
            if image.shape[-2:] != size:
                image = torch.nn.functional.interpolate(image, size=size, mode=mode,
                                                        **({} if mode == "nearest" else {"antialias": True}))
            return image.expand(batch, -1, -1, -1).clamp(-1, 1)

        render = trace["render"]
        panels = [panel(self.source_image, "bilinear"), panel(trace["secc"], "bilinear"), panel(render.rgb, "nearest"),
                  panel(depth_panel(render.depth.float()), "nearest"), final.clamp(-1, 1)]
        return PanelFrames(torch.cat(panels, dim=-1))
