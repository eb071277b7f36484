"""Parity stage ``geom_secc``: SECC/PNCC rasterisation against the official PyTorch3D renderer.

Official call (``deep_3drecon/secc_renderer.py``, one forward per call): ``src`` = id with the first *driving*
expression, ``cano`` = id with exp 0, ``drv`` = a chunk of driving frames, all at zero pose, and ``posed`` (not an
inference call) with rotation and translation, which exercises self-occlusion and the z-buffer. Each call is
rebuilt along three code paths, each checked against the same reference (README §14 of the cases):

* ``@vertices``: the stored 3DMM vertices (``face_vertex_*``) and the official mesh (``face_buf``, colours)
  through :func:`render_secc` alone: rasteriser, face-0 quirk, colouring, background;
* ``@3dmm``: the coefficients through our 3DMM (``vertices_cam``) on the synthetic BFM with the case's triangle
  list, and the mesh built by the pipeline's loader from the official eye-face and NCC files;
* ``@pipeline`` (src, cano, drv): the inference path itself, ``frame_chain.secc_source`` on a motion made of the driving
  expressions, with a fitted photo expression that differs from driving frame 0, so ``src`` passes only if it is
  rendered from the driving expression as the official inference does.

SECC maps and masks are scored with the case's per-pixel metric (edge flips allowed, bounded and excused; the
face-0 quirk pixels exactly background); the depth crop (``mask·zbuf``) is checked on the ``@vertices`` path.
"""

from __future__ import annotations

import torch

from ..geometry.bfm import FaceModel3DMM, load_bfm_fields
from ..geometry.rasterizer import rasterize_triangles
from ..geometry.secc import SECCMesh, project_to_screen, render_secc
from ..pipeline.face import FaceGeometry
from ..pipeline.frame_chain import secc_source
from ..pipeline.loaders import load_secc_mesh_for
from ..pipeline.types import Avatar, Motion
from .case import ParityCase
from .synth_bfm import ensure_synth_bfm

CALLS = ("src", "cano", "drv", "posed")


def call_inputs(case: ParityCase) -> dict[str, tuple[torch.Tensor, ...]]:
    """``(id, exp, euler, trans)`` of each official call, id repeated to the call's batch as the case does."""
    identity, drv_exp = case.tensor("id"), case.tensor("drv_exp")
    posed_exp = case.tensor("posed_exp")

    def zero_pose(exp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        zeros = exp.new_zeros(exp.shape[0], 3)
        return identity.expand(exp.shape[0], -1), exp, zeros, zeros

    return {
        "src": zero_pose(drv_exp[:1]),                 # real3d_infer.py:404: exp[0:1] of the driving sequence
        "cano": zero_pose(drv_exp[:1] * 0),
        "drv": zero_pose(drv_exp),
        "posed": (identity.expand(posed_exp.shape[0], -1), posed_exp, case.tensor("posed_euler"),
                  case.tensor("posed_trans")),
    }


def case_face_model(case: ParityCase) -> FaceModel3DMM:
    """The synthetic BFM of the geometry cases with the real triangle mesh stored in this case (``tri_1based``)."""
    fields = load_bfm_fields(ensure_synth_bfm(case.dir))
    return FaceModel3DMM(**{**fields, "triangles": case.tensor("tri_1based").long() - 1})


def _render(vertices: torch.Tensor, mesh: SECCMesh, name: str, path: str, depth: bool = False
            ) -> dict[str, torch.Tensor]:
    # frame_offset 0: every official call is its own PyTorch3D batch, so its first mesh shows the face-0 quirk
    secc, mask = render_secc(vertices, mesh, frames_per_chunk=vertices.shape[0], return_mask=True)
    out = {f"secc_{name}@{path}": secc, f"mask_{name}@{path}": mask}
    if depth:
        # the official MeshRenderer returns mask·zbuf: 0 off the face and on the quirk pixels
        fragments = rasterize_triangles(project_to_screen(vertices), mesh.faces, secc.shape[-1])
        out[f"depth_{name}@{path}"] = torch.where(mask > 0, fragments.depth[:, None], 0.0)
    return out


def run(case: ParityCase) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    official_mesh = SECCMesh(case.tensor("face_buf").long(), case.tensor("vertex_colors"))
    for name in CALLS:
        outputs.update(_render(case.tensor(f"face_vertex_{name}"), official_mesh, name, "vertices", depth=True))

    bfm = case_face_model(case)
    mesh = load_secc_mesh_for(bfm, case.dir.parent / "official_data")
    outputs["face_buf"] = mesh.faces.int()
    calls = call_inputs(case)
    for name, inputs in calls.items():
        vertices = bfm.vertices_cam(*inputs)
        outputs[f"face_vertex_{name}"] = vertices
        outputs.update(_render(vertices, mesh, name, "3dmm"))

    identity, drv_exp = case.tensor("id"), case.tensor("drv_exp")
    photo = torch.zeros(1, 3, 512, 512)
    # a photo fit whose expression is not the first driving one: src must not depend on it
    avatar = Avatar(image=photo, id=identity, exp=case.tensor("posed_exp")[-1:], euler=torch.zeros(1, 3),
                    trans=torch.zeros(1, 3))
    source = secc_source(FaceGeometry(bfm, mesh), avatar, Motion(exp=drv_exp))
    outputs["secc_src@pipeline"] = source.src
    outputs["secc_cano@pipeline"] = source.cano
    outputs["secc_drv@pipeline"] = source.chunk(0, drv_exp.shape[0])
    return outputs
