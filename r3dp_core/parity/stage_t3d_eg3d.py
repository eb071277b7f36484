"""Parity stage ``t3d_eg3d``: Talk3D's EG3D fixed-tri-plane generator (mapping, cameras, backbone, render + SR).

Official calls (``shared/parity/README.md`` §16.2), all on the generator built from
``manifest_eg3d_fixed_triplane.json``:

* ``ws_psi<a>p<b>`` = ``get_ws(z, psi, truncation_cutoff)``: mapping of ``z`` under the frontal conditioning camera,
  one output per truncation psi (``ws_psi1p0`` → psi 1.0, ``ws_psi0p5`` → 0.5; psi is read from the name).
* ``cameras`` / ``render_camera`` = ``get_camera_parameters(yaw, pitch)`` for ``yaw_pitch`` / ``render_yaw_pitch``.
* ``planes`` = ``backbone.synthesis(ws_synth, noise_mode='const')``.
* ``feature_image``, ``image_raw``, ``image_depth``, ``weights_image``, ``image`` = render + SR of ``P + ΔP``
  (``delta_planes``) at ``render_camera`` with the recorded renderer noise and ``ws_synth`` for the SR.
  The batch B is that of ``render_yaw_pitch``; ``P`` and ``ws_synth`` are shared by all B frames, as the trainer
  repeats them.

The render takes ``P`` as the official harness did: the official ``P`` (the stored reference ``planes``, what the
official render loaded from its file). It is also run from r3dp's own ``P`` and checked as ``<name>@own_planes``,
so the chain backbone → render → SR is covered end to end. Sample counts and the render resolution follow the
recorded noise shapes, so the stage runs on variants of other sizes.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import torch

from ..checkpoint import load_into
from ..render import RenderNoise
from ..talk3d.eg3d_generator import EG3DGeneratorConfig, TriPlaneGenerator

if TYPE_CHECKING:
    from .case import ParityCase

MANIFEST = "eg3d_fixed_triplane"
_WS_OUTPUT = re.compile(r"^ws_psi(\d+)p(\d+)$")
RENDER_OUTPUTS = ("feature_image", "image_raw", "image_depth", "weights_image", "image")


def build_model(case: ParityCase) -> TriPlaneGenerator:
    """The generator with the case's synthetic weights (official keys, strict), its render settings sized by the
    case's noise (M = R*R rays, S coarse, F fine samples), in eval mode."""
    noise_shape = case.tensors_meta["noise_stratified"]["shape"]
    fine = case.tensors_meta["noise_importance_u"]["shape"][1]
    default = EG3DGeneratorConfig()
    render = dataclasses.replace(default.render, resolution=round(noise_shape[1] ** 0.5),
                                 num_coarse_samples=noise_shape[2], num_fine_samples=fine)
    model = TriPlaneGenerator(dataclasses.replace(default, render=render))
    load_into(model, case.state_dict(MANIFEST), source=f"synthetic weights of manifest_{MANIFEST}.json")
    return model.eval()


def _psi(name: str) -> float:
    m = _WS_OUTPUT.match(name)
    return float(f"{m.group(1)}.{m.group(2)}")


def run(case: ParityCase, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every output of the case (and the render outputs once more from r3dp's own planes, as ``@own_planes``)."""
    model = build_model(case).to(device)
    cutoff = case.call.get("truncation_cutoff")
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        z = case.tensor("z").to(device)
        for name in case.names("output"):
            if _WS_OUTPUT.match(name):
                outputs[name] = model.mapping(z, truncation_psi=_psi(name), truncation_cutoff=cutoff)
        yaw_pitch = case.tensor("yaw_pitch")
        outputs["cameras"] = model.cameras(yaw_pitch[:, 0], yaw_pitch[:, 1])
        render_yaw_pitch = case.tensor("render_yaw_pitch")
        camera = model.cameras(render_yaw_pitch[:, 0], render_yaw_pitch[:, 1])
        outputs["render_camera"] = camera

        ws = case.tensor("ws_synth").to(device)
        own_planes = model.synthesize_planes(ws)
        outputs["planes"] = own_planes
        noise = RenderNoise(case.tensor("noise_stratified").to(device), case.tensor("noise_importance_u").to(device))
        delta = case.tensor("delta_planes").to(device)
        for suffix, planes in (("", case.tensor("planes").to(device)), ("@own_planes", own_planes)):
            out = model.render(planes, ws, camera, delta_planes=delta, noise=noise)
            outputs.update({name + suffix: getattr(out, name) for name in RENDER_OUTPUTS})
    return outputs
