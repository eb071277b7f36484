"""Parity stage ``volume_render``: tri-planes + camera (+ recorded noise) -> feature / weights / depth images.

Official call: ``ray_sampler(c2w, K, R)`` then ``renderer(planes, decoder, ro, rd, rendering_kwargs)`` and
the reshapes of ``synthesis()``. The two random draws of the official renderer are the case's recorded
``noise_stratified [N,M,S,1]`` and ``noise_importance_u [N*M,F]``. The ``dbg_*_row<K>`` intermediates are
the per-ray tensors of the K-th image row, recomputed for those rays alone (every ray is independent once
the per-frame ray limits are known).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..models.decoder import OSGDecoder
from ..render import RenderConfig, RenderNoise, ray_limits, render_ray_batch, render_triplanes

if TYPE_CHECKING:
    from .case import ParityCase

PREFIX = "decoder."
_DEBUG_ROW = re.compile(r"^dbg_(\w+)_row(\d+)$")
# dbg tensor stem -> RayBatchResult field
_DEBUG_FIELDS = {"sigma_coarse": "density_coarse", "weights_coarse": "weights_coarse",
                 "depths_fine": "depths_fine", "sigma_fine": "density_fine", "weights_final": "weights_final"}


def render_config(case: ParityCase) -> RenderConfig:
    """Sample counts and box from the case's ``rendering_kwargs``; resolution from its noise (M = R*R rays)."""
    kwargs = case.call["rendering_kwargs"]
    num_rays = case.tensors_meta["noise_stratified"]["shape"][1]
    resolution = round(num_rays ** 0.5)
    return RenderConfig(resolution=resolution, num_coarse_samples=kwargs["depth_resolution"],
                        num_fine_samples=kwargs["depth_resolution_importance"], box_warp=float(kwargs["box_warp"]))


def build_decoder(case: ParityCase) -> OSGDecoder:
    """The OSGDecoder with the case's synthetic weights (official sub-keys, strict), in eval mode."""
    decoder = OSGDecoder()
    weights = {k[len(PREFIX):]: v for k, v in case.state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    load_into(decoder, weights, source=f"synthetic weights under {PREFIX}")
    return decoder.eval()


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Full-size outputs of ``case`` and every ``dbg_*_row<K>`` intermediate its sidecar lists."""
    config = render_config(case)
    decoder = build_decoder(case).to(device)
    planes = case.tensor("planes").to(device)
    camera = case.tensor("camera").to(device)
    noise = RenderNoise(case.tensor("noise_stratified"), case.tensor("noise_importance_u"))
    with torch.no_grad():
        out = render_triplanes(planes, decoder, camera, config, noise=noise)
        outputs = {"ray_origins": out.ray_origins, "ray_directions": out.ray_directions,
                   "feature_image": out.feature_image, "weights_image": out.weights, "depth_image": out.depth,
                   "is_ray_valid": out.is_ray_valid.to(torch.uint8)}
        outputs.update(_debug_rows(case, planes, decoder, out, noise, config))
    return outputs


def _debug_rows(case: ParityCase, planes: torch.Tensor, decoder: OSGDecoder, out, noise: RenderNoise,
                config: RenderConfig) -> dict[str, torch.Tensor]:
    """Per-ray intermediates ``[N,R,...]`` of each image row that the sidecar has ``dbg_*_row<K>`` for."""
    requested = [(name, m.group(1), int(m.group(2))) for name in case.tensors_meta
                 if (m := _DEBUG_ROW.match(name)) and m.group(1) in _DEBUG_FIELDS]
    start, end, _ = ray_limits(out.ray_origins, out.ray_directions, config.box_warp)
    n_frames, n_rays, _ = out.ray_origins.shape
    jitter = noise.stratified.to(planes.device)
    importance_u = noise.importance.to(planes.device).reshape(n_frames, n_rays, -1)
    results, debug = {}, {}
    for name, stem, row in requested:
        if row not in results:
            rays = slice(row * config.resolution, (row + 1) * config.resolution)
            results[row] = render_ray_batch(planes, decoder, out.ray_origins[:, rays], out.ray_directions[:, rays],
                                            start[:, rays], end[:, rays], jitter[:, rays], importance_u[:, rays],
                                            config.box_warp)
        debug[name] = getattr(results[row], _DEBUG_FIELDS[stem])
    return debug
