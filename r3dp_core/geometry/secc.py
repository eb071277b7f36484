"""SECC / PNCC images: the BFM face mesh coloured with the per-vertex NCC code, rendered frontally.

The official renderer (PyTorch3D, spec §13) sees the camera-space face through a pinhole with focal
1015/224 of the image size (2320 px at 512²) and principal point at the image centre:
``col + 0.5 = S/2 + f·x/z``, ``row + 0.5 = S/2 − f·y/z`` (x right, y up, z = distance in front of the camera,
i.e. the 3DMM's ``to_camera`` output with the camera 10 dm away). The eye triangles are removed, so the
eyes are holes; colours are interpolated perspective-correctly and mapped to [-1,1] with background −1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..defaults import FRAME_SIZE
from ..errors import ModelFileError
from .rasterizer import interpolate_vertex_attributes, rasterize_triangles

FIT_FOCAL = 1015.0           # focal length of the 224-pixel 3DMM fit space
FIT_IMAGE_SIZE = 224
# The official code packs 50 meshes per PyTorch3D call and tests `pix_to_face > 0`, so triangle 0 of the first
# mesh of every call is drawn as background; with its chunking that is every 50th frame (and the single-frame
# cano/src renders).
OFFICIAL_FACE0_PERIOD = 50

NCC_CODE_FILE = "ncc_code.npy"
LEFT_EYE_FACES_FILE = "bfm_left_eye_faces.npy"
RIGHT_EYE_FACES_FILE = "bfm_right_eye_faces.npy"


@dataclass
class SECCMesh:
    """The SECC render mesh.

    faces:  [F',3] int64, BFM triangles (0-based) without the eye triangles, official order kept.
    colors: [V,3] float32 NCC code in [0,1].
    """

    faces: torch.Tensor
    colors: torch.Tensor

    def to(self, device: torch.device | str) -> SECCMesh:
        return SECCMesh(self.faces.to(device), self.colors.to(device))


def remove_triangles(tri: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """tri [F,3] minus the rows listed (0-based, duplicates allowed) in ``drop``; order of the rest kept."""
    keep = torch.ones(tri.shape[0], dtype=torch.bool, device=tri.device)
    keep[drop.to(tri.device).long()] = False
    return tri[keep]


def secc_mesh(tri: torch.Tensor, eye_faces: np.ndarray, colors: torch.Tensor) -> SECCMesh:
    """The official SECC mesh: the BFM triangles without the eye triangles, coloured with the NCC code.

    Args:
        tri: ``[F,3]`` BFM triangles, **0-based** vertex ids (``BFM_model_front.mat['tri'] − 1``).
        eye_faces: the official eye triangles, **1-based** triangle ids (``bfm_left_eye_faces.npy`` and
            ``bfm_right_eye_faces.npy`` concatenated).
        colors: ``[V,3]`` NCC colour of each vertex (the official ``ncc_code.npy`` transposed).
    """
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ModelFileError(f"NCC colours of shape {tuple(colors.shape)}: expected [num_vertices, 3] (the official "
                             "ncc_code.npy is [3, num_vertices]).")
    tri = tri.long()
    if tri.ndim != 2 or tri.shape[1] != 3 or int(tri.min()) < 0 or int(tri.max()) >= colors.shape[0]:
        raise ModelFileError(f"BFM triangle list {tuple(tri.shape)} does not index the {colors.shape[0]} NCC "
                             "vertices (expected 0-based [F,3]).")
    eye = np.asarray(eye_faces).astype(np.int64) - 1
    if eye.min() < 0 or eye.max() >= tri.shape[0]:
        raise ModelFileError(f"The eye-triangle files do not fit this BFM ({tri.shape[0]} triangles); download "
                             "them again.")
    return SECCMesh(remove_triangles(tri, torch.from_numpy(eye)), colors.float().contiguous())


def project_to_screen(vertices: torch.Tensor, image_size: int = FRAME_SIZE,
                      focal: float | None = None) -> torch.Tensor:
    """Camera-space vertices [B,V,3] (x right, y up, z = depth > 0) → screen vertices [B,V,3] (col, row, depth).

    ``focal`` defaults to the official ``1015/224 · image_size`` (2320 at 512).
    """
    focal = FIT_FOCAL * image_size / FIT_IMAGE_SIZE if focal is None else focal
    x, y, z = vertices.unbind(-1)
    center = image_size / 2
    return torch.stack([center + focal * x / z, center - focal * y / z, z], dim=-1)


def render_secc(vertices: torch.Tensor, mesh: SECCMesh, image_size: int = FRAME_SIZE,
                focal: float | None = None, frames_per_chunk: int = 8,
                face0_period: int | None = OFFICIAL_FACE0_PERIOD, frame_offset: int = 0,
                return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Render SECC images.

    Args:
        vertices: [T,V,3] camera-space BFM vertices (see :func:`project_to_screen`); at inference the official
            pipeline uses zero pose, i.e. ``S(id, exp)`` with z ← 10 − z.
        mesh: :class:`SECCMesh` (moved to the vertices' device as needed).
        frames_per_chunk: frames rasterised together; bounds the working memory (about 60 MB per frame of a
            chunk at 512² for a BFM-sized mesh, besides the 3 MB per frame of output).
        face0_period: frames whose index is a multiple of this draw triangle 0 as background (the official
            quirk); None draws every triangle.
        frame_offset: sequence index of ``vertices[0]``, for callers that render a clip piecewise.
        return_mask: also return the coverage mask.

    Returns:
        secc [T,3,S,S] float32 in [-1,1] (background exactly −1), and mask [T,1,S,S] float32 if requested.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[1] != mesh.colors.shape[0]:
        raise ValueError(f"vertices must be [T,{mesh.colors.shape[0]},3], got {tuple(vertices.shape)}")
    device = vertices.device
    faces, colors = mesh.faces.to(device), mesh.colors.to(device)
    frames = vertices.shape[0]
    secc = torch.empty(frames, 3, image_size, image_size, device=device, dtype=torch.float32)
    mask = torch.empty(frames, 1, image_size, image_size, device=device, dtype=torch.float32) if return_mask else None
    for start in range(0, frames, frames_per_chunk):
        stop = min(start + frames_per_chunk, frames)
        fragments = rasterize_triangles(project_to_screen(vertices[start:stop].float(), image_size, focal),
                                        faces, image_size)
        if face0_period is not None:
            hit_face0 = fragments.face_index == 0
            quirk_frames = (torch.arange(start, stop, device=device) + frame_offset) % face0_period == 0
            fragments.face_index = torch.where(hit_face0 & quirk_frames[:, None, None], -1, fragments.face_index)
        color = interpolate_vertex_attributes(fragments, faces, colors, background=0.0)
        secc[start:stop] = (color - 0.5) / 0.5
        if mask is not None:
            mask[start:stop] = fragments.mask[:, None].float()
    return (secc, mask) if return_mask else secc
