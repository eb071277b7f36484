"""Tri-plane volume renderer (EG3D ``ImportanceRenderer`` as configured by Real3D-Portrait).

Per frame: one ray per pixel, ray range from the tri-plane box, 48 jittered coarse samples, 48 importance
samples drawn from the coarse weights, and a final compositing pass over all 96 sorted samples.

The same renderer serves Talk3D's EG3D "fixed tri-plane" generator through three ``RenderConfig`` settings
whose defaults are Real3D-Portrait's: the plane layout (``plane_axes``), the ray range (``ray_range``: the box
slab test, or fixed near/far depths) and whether the reported raw image is clamped (``clamp_raw_rgb``).

Rays are rendered in chunks so memory stays bounded for any batch; the two statistics that span rays
(the stand-in range of rays that miss the box and the depth clamp range) are taken per frame over all of
its rays, outside the chunk loop, so the chunk size never changes the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import InputError
from .camera import split_camera
from .importance import sample_importance
from .ray_box import ray_limits
from .ray_marcher import clamp_depth_per_frame, march_rays
from .ray_sampler import sample_rays
from .triplane import sample_triplanes

# Rays per chunk when the caller gives none. On CPU small chunks keep the per-sample tensors in cache
# (2048 rays: 1.7 s per 128x128 frame single-threaded vs 3.2 s for a whole frame); accelerators prefer
# large launches, and 8192 rays bound the working set to about half a GiB.
CPU_MAX_RAYS_PER_CHUNK = 2048
ACCELERATOR_MAX_RAYS_PER_CHUNK = 8192


def default_max_rays_per_chunk(device: torch.device) -> int:
    """The chunk size used when ``render_triplanes`` gets none: small on CPU, larger on GPUs."""
    return CPU_MAX_RAYS_PER_CHUNK if device.type == "cpu" else ACCELERATOR_MAX_RAYS_PER_CHUNK


@dataclass
class RenderConfig:
    """Rendering settings; the defaults are the official ones of the secc2plane_torso checkpoint.

    Densities use ``softplus(x - 1)``, the background is black and samples are uniform in depth (not
    disparity), as both official models hard-code. Talk3D's EG3D generator differs in three settings:
    ``RenderConfig(plane_axes="eg3d_fixed", ray_range=(2.25, 3.3), clamp_raw_rgb=False)``.
    """

    resolution: int = 128                  # neural rendering resolution (rays per image side)
    num_coarse_samples: int = 48           # official depth_resolution
    num_fine_samples: int = 48             # official depth_resolution_importance
    box_warp: float = 1.0                  # side of the world cube covered by the tri-planes
    #: plane layout (``triplane.PLANE_LAYOUTS``): ``"eg3d"`` samples the planes at (x,y), (x,z), (z,x)
    #: (Real3D-Portrait, EG3D's public code); ``"eg3d_fixed"`` at (x,y), (x,z), (z,y) (Talk3D, EG3D issue #67).
    plane_axes: str = "eg3d"
    #: ray range: None = ``'auto'``, the slab test against the ``box_warp`` cube (rays that miss get the frame's
    #: stand-in range); ``(near, far)`` = the same fixed depths for every ray (official float ``ray_start`` /
    #: ``ray_end``; coarse depths ``torch.linspace(near, far, S)``; every ray counts as valid).
    ray_range: tuple[float, float] | None = None
    #: whether ``RenderOutput.raw_rgb`` (the official ``image_raw``) is clamped to [-1, 1]: True for
    #: Real3D-Portrait, False for Talk3D. The feature image itself is never clamped.
    clamp_raw_rgb: bool = True

    def __post_init__(self):
        from .triplane import PLANE_LAYOUTS

        if self.plane_axes not in PLANE_LAYOUTS:
            raise ValueError(f"unknown plane_axes {self.plane_axes!r}; known: {', '.join(PLANE_LAYOUTS)}")
        if self.ray_range is not None:
            near, far = (float(v) for v in self.ray_range)
            if not far > near:
                raise ValueError(f"ray_range must be (near, far) with far > near, got {self.ray_range}")
            self.ray_range = (near, far)


@dataclass
class RenderNoise:
    """The two random draws of the official renderer, which it makes even in eval mode.

    stratified: ``[N,M,S_coarse,1]`` U[0,1) jitter of the coarse depths (camera, ray, sample).
    importance: ``[N*M,S_fine]`` U[0,1) inverse-CDF uniforms, rays flattened camera-major (row ``n*M + m``).
    """

    stratified: torch.Tensor
    importance: torch.Tensor

    @classmethod
    def draw(cls, num_frames: int, num_rays: int, config: RenderConfig,
             generator: torch.Generator | None = None) -> RenderNoise:
        """Draw both tensors from ``generator`` on the generator's own device (the global CPU RNG when
        None). With a CPU generator the same seed therefore gives the same render on every device."""
        device = generator.device if generator is not None else torch.device("cpu")
        stratified = torch.rand(num_frames, num_rays, config.num_coarse_samples, 1,
                                generator=generator, device=device)
        importance = torch.rand(num_frames * num_rays, config.num_fine_samples, generator=generator, device=device)
        return cls(stratified, importance)

    def check(self, num_frames: int, num_rays: int, config: RenderConfig) -> None:
        """Raise InputError unless the shapes match ``num_frames`` x ``num_rays`` and the sample counts."""
        expected = {"stratified": (num_frames, num_rays, config.num_coarse_samples, 1),
                    "importance": (num_frames * num_rays, config.num_fine_samples)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise InputError(f"RenderNoise.{name} must be {list(shape)} for {num_frames} frame(s) of "
                                 f"{num_rays} rays, got {list(got)}")


@dataclass
class RenderOutput:
    """Rendered images for N frames at resolution R (M = R*R rays, row-major)."""

    feature_image: torch.Tensor      # [N,32,R,R] ~[-1,1], unclamped; channels 0-2 are the raw rgb
    depth: torch.Tensor              # [N,1,R,R] expected depth, clamped to the frame's sample range
    weights: torch.Tensor            # [N,1,R,R] accumulated opacity in [0,1]
    is_ray_valid: torch.Tensor       # [N,1,R,R] bool, the ray hits the tri-plane box
    ray_origins: torch.Tensor        # [N,M,3]
    ray_directions: torch.Tensor     # [N,M,3] unit

    @property
    def rgb(self) -> torch.Tensor:
        """``[N,3,R,R]`` raw rgb, about [-1,1], unclamped (what the super-resolution receives)."""
        return self.feature_image[:, :3]

    def raw_rgb(self, config: RenderConfig | None = None) -> torch.Tensor:
        """The official ``image_raw`` ``[N,3,R,R]``: :attr:`rgb` clamped to [-1, 1] when ``config.clamp_raw_rgb``
        (Real3D-Portrait, the default), unclamped otherwise (Talk3D)."""
        config = config or RenderConfig()
        return self.rgb.clamp(-1, 1) if config.clamp_raw_rgb else self.rgb


class RayBatchResult(NamedTuple):
    """Per-ray results of one chunk of N frames x m rays (S coarse, F fine samples)."""

    features: torch.Tensor           # [N,m,C] composited features (x*2-1)
    depth: torch.Tensor              # [N,m,1] expected depth before the per-frame clamp
    weight_total: torch.Tensor       # [N,m,1]
    sample_depth_min: torch.Tensor   # [N] min of all sample depths of the chunk, per frame
    sample_depth_max: torch.Tensor   # [N]
    density_coarse: torch.Tensor     # [N,m,S,1] raw decoder density of the coarse samples
    weights_coarse: torch.Tensor     # [N,m,S-1,1] coarse per-interval weights
    depths_fine: torch.Tensor        # [N,m,F,1] importance depths, unsorted
    density_fine: torch.Tensor       # [N,m,F,1]
    weights_final: torch.Tensor      # [N,m,S+F-1,1] per-interval weights of the merged, sorted samples


def stratified_depths(start: torch.Tensor, end: torch.Tensor, jitter: torch.Tensor,
                      fixed_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Coarse depths ``[N,m,S,1]``: S evenly spaced depths from ``start`` to ``end`` (``[N,m,1]``), each
    moved forward by ``jitter [N,m,S,1] * (end-start)/(S-1)``, so the last one may pass ``end``.

    With ``fixed_range = (near, far)`` (``start``/``end`` are then ignored) the depths are the official ones for
    float ray limits: ``torch.linspace(near, far, S) + jitter * ((far - near) / (S - 1))``.
    """
    count = jitter.shape[-2]
    if fixed_range is not None:
        near, far = fixed_range
        depths = torch.linspace(near, far, count, dtype=jitter.dtype, device=jitter.device)
        return depths[:, None] + jitter * ((far - near) / (count - 1))
    steps = torch.arange(count, dtype=start.dtype, device=start.device) / (count - 1)
    depths = start.unsqueeze(-2) + steps[:, None] * (end - start).unsqueeze(-2)
    return depths + jitter * ((end - start) / (count - 1)).unsqueeze(-2)


def _decode(planes: torch.Tensor, decoder: nn.Module, origins: torch.Tensor, directions: torch.Tensor,
            depths: torch.Tensor, box_warp: float, plane_axes: str = "eg3d") -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder features ``[N,m,S,C]`` and raw density ``[N,m,S,1]`` at ``origin + depth * direction``."""
    n_frames, n_rays, n_samples, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(n_frames, -1, 3)
    features, density = decoder(sample_triplanes(planes, points, box_warp, plane_axes))
    return (features.reshape(n_frames, n_rays, n_samples, -1),
            density.reshape(n_frames, n_rays, n_samples, 1))


def render_ray_batch(planes: torch.Tensor, decoder: nn.Module, origins: torch.Tensor, directions: torch.Tensor,
                     start: torch.Tensor, end: torch.Tensor, jitter: torch.Tensor, importance_u: torch.Tensor,
                     box_warp: float, *, plane_axes: str = "eg3d",
                     fixed_range: tuple[float, float] | None = None) -> RayBatchResult:
    """Coarse pass, importance sampling and final pass for a chunk of rays.

    Args:
        planes: ``[N,3,C,H,W]`` (or ``[1,...]`` shared by all frames).
        decoder: maps plane features ``[N,3,P,C]`` to (features ``[N,P,C']``, density ``[N,P,1]``).
        origins, directions: ``[N,m,3]``.
        start, end: ``[N,m,1]`` ray range (already filled for rays that miss the box).
        jitter: ``[N,m,S,1]`` U[0,1) stratified jitter.
        importance_u: ``[N,m,F]`` U[0,1) inverse-CDF uniforms.
        box_warp: side of the tri-plane cube.
        plane_axes: plane layout (``RenderConfig.plane_axes``).
        fixed_range: ``(near, far)`` of every ray (``RenderConfig.ray_range``); then ``start``/``end`` are unused.
    """
    n_frames, n_rays, _ = origins.shape
    depths_coarse = stratified_depths(start, end, jitter, fixed_range)
    features_coarse, density_coarse = _decode(planes, decoder, origins, directions, depths_coarse, box_warp,
                                              plane_axes)
    weights_coarse = march_rays(features_coarse, density_coarse, depths_coarse).weights

    depths_fine = sample_importance(depths_coarse.reshape(n_frames * n_rays, -1),
                                    weights_coarse.reshape(n_frames * n_rays, -1),
                                    importance_u.reshape(n_frames * n_rays, -1))
    depths_fine = depths_fine.reshape(n_frames, n_rays, -1, 1)
    features_fine, density_fine = _decode(planes, decoder, origins, directions, depths_fine, box_warp, plane_axes)

    depths_all, order = torch.sort(torch.cat([depths_coarse, depths_fine], -2), dim=-2)
    features_all = torch.cat([features_coarse, features_fine], -2)
    features_all = features_all.gather(-2, order.expand(-1, -1, -1, features_all.shape[-1]))
    density_all = torch.cat([density_coarse, density_fine], -2).gather(-2, order)
    final = march_rays(features_all, density_all, depths_all)
    return RayBatchResult(
        features=final.features, depth=final.depth, weight_total=final.weights.sum(-2),
        sample_depth_min=depths_all.amin(dim=(1, 2, 3)), sample_depth_max=depths_all.amax(dim=(1, 2, 3)),
        density_coarse=density_coarse, weights_coarse=weights_coarse, depths_fine=depths_fine,
        density_fine=density_fine, weights_final=final.weights)


def ray_chunks(num_frames: int, num_rays: int, max_rays: int) -> Iterator[tuple[slice, slice]]:
    """(frames, rays) slices covering ``num_frames x num_rays`` with at most ``max(max_rays, 1)`` rays each:
    whole frames grouped when a frame fits, else one frame cut into ray ranges."""
    max_rays = max(int(max_rays), 1)
    frames_per_chunk = max(max_rays // num_rays, 1)
    rays_per_chunk = min(max_rays, num_rays)
    for f in range(0, num_frames, frames_per_chunk):
        for r in range(0, num_rays, rays_per_chunk):
            yield slice(f, f + frames_per_chunk), slice(r, r + rays_per_chunk)


def render_triplanes(planes: torch.Tensor, decoder: nn.Module, camera: torch.Tensor,
                     config: RenderConfig | None = None, *, resolution: int | None = None,
                     noise: RenderNoise | None = None, generator: torch.Generator | None = None,
                     max_rays_per_chunk: int | None = None) -> RenderOutput:
    """Render N frames of tri-planes; frame i uses ``camera[i]`` and ``planes[i]`` (or the shared plane).

    Args:
        planes: ``[N,3,32,H,W]`` or ``[1,3,32,H,W]`` (official: 256x256); float16/bfloat16 planes are
            rendered in float32, float64 planes in float64.
        decoder: ``OSGDecoder`` (or any module with its call signature).
        camera: ``[N,25]`` EG3D camera (cam2world 4x4 + normalized intrinsics 3x3).
        config: rendering settings, official defaults when None.
        resolution: overrides ``config.resolution``.
        noise: the two random draws (see ``RenderNoise``); drawn with ``generator`` when None.
        generator: RNG for the draws when ``noise`` is None (``RenderNoise.draw``).
        max_rays_per_chunk: rays rendered at once (memory bound, about 100 KiB per ray); the default
            is ``default_max_rays_per_chunk(planes.device)``. It does not change the result beyond float32
            kernel noise (SIMD tails of softplus/sigmoid at chunk edges, a few ulp).

    Returns:
        ``RenderOutput`` at resolution R: feature_image ``[N,32,R,R]``, depth / weights / is_ray_valid
        ``[N,1,R,R]``, ray origins / directions ``[N,R*R,3]``. With a fixed ``config.ray_range`` every ray is
        valid.
    """
    config = config or RenderConfig()
    resolution = resolution or config.resolution
    if planes.ndim != 5 or planes.shape[1] != 3:
        raise InputError(f"planes must be [N,3,C,H,W], got {tuple(planes.shape)}")
    # Reduced-precision planes are rendered in float32, as the official renderer pins float32 throughout.
    planes = planes.to(torch.promote_types(planes.dtype, torch.float32))
    cam2world, intrinsics = split_camera(camera.to(device=planes.device, dtype=planes.dtype))
    n_frames, n_rays = camera.shape[0], resolution * resolution
    if planes.shape[0] not in (1, n_frames):
        raise InputError(f"planes batch {planes.shape[0]} must be 1 or match the {n_frames} camera(s)")

    origins, directions = sample_rays(cam2world, intrinsics, resolution)
    if config.ray_range is None:
        start, end, is_valid = ray_limits(origins, directions, config.box_warp)
    else:
        start = torch.full_like(origins[..., :1], config.ray_range[0])
        end = torch.full_like(origins[..., :1], config.ray_range[1])
        is_valid = torch.ones_like(start, dtype=torch.bool)
    if noise is None:
        noise = RenderNoise.draw(n_frames, n_rays, config, generator)
    noise.check(n_frames, n_rays, config)
    jitter = noise.stratified.to(device=planes.device, dtype=planes.dtype)
    importance_u = noise.importance.to(device=planes.device, dtype=planes.dtype).reshape(n_frames, n_rays, -1)

    if max_rays_per_chunk is None:
        max_rays_per_chunk = default_max_rays_per_chunk(planes.device)
    features = depth = weights = None
    depth_min = torch.full((n_frames,), float("inf"), dtype=planes.dtype, device=planes.device)
    depth_max = torch.full_like(depth_min, float("-inf"))
    for frames, rays in ray_chunks(n_frames, n_rays, max_rays_per_chunk):
        chunk = render_ray_batch(planes if planes.shape[0] == 1 else planes[frames], decoder,
                                 origins[frames, rays], directions[frames, rays], start[frames, rays],
                                 end[frames, rays], jitter[frames, rays], importance_u[frames, rays],
                                 config.box_warp, plane_axes=config.plane_axes, fixed_range=config.ray_range)
        if features is None:
            features = chunk.features.new_empty(n_frames, n_rays, chunk.features.shape[-1])
            depth = chunk.depth.new_empty(n_frames, n_rays, 1)
            weights = chunk.weight_total.new_empty(n_frames, n_rays, 1)
        features[frames, rays] = chunk.features
        depth[frames, rays] = chunk.depth
        weights[frames, rays] = chunk.weight_total
        depth_min[frames] = torch.minimum(depth_min[frames], chunk.sample_depth_min)
        depth_max[frames] = torch.maximum(depth_max[frames], chunk.sample_depth_max)
    depth = clamp_depth_per_frame(depth, depth_min, depth_max)

    def image(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1).reshape(n_frames, -1, resolution, resolution)

    return RenderOutput(feature_image=image(features), depth=image(depth), weights=image(weights),
                        is_ray_valid=image(is_valid), ray_origins=origins, ray_directions=directions)
