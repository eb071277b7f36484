"""The Basel Face Model (BFM 2009, Deep3DFaceRecon "front" layout) as Real3D-Portrait's 3DMM.

A face is ``S(id, exp) = mean + idBase·id + exBase·exp`` over the 35709 front vertices, in decimetres,
with x right, y up and z out of the face. Coefficients: identity [80], expression [64], Euler angles
(pitch, yaw, roll) in radians [3] and translation [3].

Two files from the user's BFM bundle are read once (they cannot be redistributed): ``BFM_model_front.mat``
and ``index_mp468_from_mesh35709.npy`` (MediaPipe landmark i ↦ BFM vertex). The fields inference needs are
kept beside the .mat in ``BFM_model_front.r3dp.safetensors``, keyed by the sha256 of both source files.

Conventions copied from the official code because the checkpoints were trained with them:

* ``compute_rotation`` returns ``(Rz·Ry·Rx)ᵀ`` and points are row vectors: ``v' = v @ rot + t``.
* camera space: ``z ← 10 − z`` (the camera looks at the face from z = 10).
* "fit space": a 224-px pinhole image, focal 1015, centre 112, with **y up**.
* ``lm68`` uses the 1-based ``keypoints`` minus one; ``lm68_helper_*`` (torso keypoints) uses them
  unshifted, one vertex off, as the official ``Face3DHelper`` did in training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelFileError

logger = logging.getLogger(__name__)

BFM_FILENAME = "BFM_model_front.mat"
MP468_INDEX_FILENAME = "index_mp468_from_mesh35709.npy"
CACHE_SUFFIX = ".r3dp.safetensors"
#: Bump when the cached fields or their processing change; older caches are then rebuilt.
CACHE_VERSION = "1"

N_ID, N_EXP, N_MP468 = 80, 64, 468
CAMERA_DISTANCE = 10.0
FIT_FOCAL, FIT_CENTER, FIT_SIZE = 1015.0, 112.0, 224

#: MediaPipe landmarks without a BFM counterpart (−999 in the mapping; weight 0 in the fits).
MP468_UNMATCHED = (93, 127, 132, 234, 323, 356, 361, 454)

_REQUIRED_FIELDS = ("meanshape", "idBase", "exBase", "tri", "keypoints")
_CACHED_FIELDS = ("mean_shape", "id_base", "exp_base", "triangles", "keypoints68", "mp468_index")

_WHERE_FROM = (
    "Both files come from the BFM bundle linked in the Real3D-Portrait README (the folder the official code "
    "expects at deep_3drecon/BFM/). The Basel Face Model is not redistributable: register at "
    "https://faces.dmi.unibas.ch/bfm/ to be allowed to use it. If you only have 01_MorphableModel.mat, run "
    "Deep3DFaceRecon_pytorch once (its BFM folder converts it into BFM_model_front.mat).")


def _missing_file_message(path: Path, what: str) -> str:
    return (f"{what} not found at {path}. r3dp needs {BFM_FILENAME} and {MP468_INDEX_FILENAME} together in "
            f"{path.parent}. {_WHERE_FROM}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_bfm_paths(bfm_path: str | os.PathLike, mp468_index_path: str | os.PathLike | None = None
                      ) -> tuple[Path, Path]:
    """``(BFM_model_front.mat, index_mp468_from_mesh35709.npy)`` from a folder or a .mat path.

    The index file defaults to the .mat's folder. Raises ``ModelFileError`` when either is missing.
    """
    bfm_path = Path(bfm_path)
    mat = bfm_path / BFM_FILENAME if bfm_path.is_dir() else bfm_path
    index = Path(mp468_index_path) if mp468_index_path is not None else mat.parent / MP468_INDEX_FILENAME
    if not mat.is_file():
        raise ModelFileError(_missing_file_message(mat, "The BFM 3D face model"))
    if not index.is_file():
        raise ModelFileError(_missing_file_message(index, "The MediaPipe-to-BFM landmark index"))
    return mat, index


def _read_mat(mat: Path) -> dict[str, np.ndarray]:
    try:
        listing = {name: shape for name, shape, _ in scipy.io.whosmat(str(mat))}
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/... for files that are not .mat
        raise ModelFileError(
            f"{mat} could not be read as a MATLAB .mat file ({type(exc).__name__}: {exc}). It is probably "
            f"truncated or corrupt: download {BFM_FILENAME} again. {_WHERE_FROM}") from exc
    missing = [f for f in _REQUIRED_FIELDS if f not in listing]
    if missing and len(missing) < len(_REQUIRED_FIELDS):  # scipy lists the variables before the cut
        raise ModelFileError(
            f"{mat} is damaged or incomplete (probably a truncated download): the field(s) {', '.join(missing)} "
            f"are missing. Download {BFM_FILENAME} again. {_WHERE_FROM}")
    if missing:
        hint = (" This looks like the raw 01_MorphableModel.mat, not the converted front model."
                if "shapePC" in listing else "")
        raise ModelFileError(
            f"{mat} is not {BFM_FILENAME}: it lacks the field(s) {', '.join(missing)} (it contains "
            f"{', '.join(sorted(listing)) or 'nothing'}).{hint} {_WHERE_FROM}")
    try:
        fields = scipy.io.loadmat(str(mat), variable_names=list(_REQUIRED_FIELDS))
    except Exception as exc:
        raise ModelFileError(
            f"{mat} is damaged: its fields could not be decoded ({type(exc).__name__}: {exc}). Download "
            f"{BFM_FILENAME} again. {_WHERE_FROM}") from exc
    return {k: np.ascontiguousarray(fields[k]) for k in _REQUIRED_FIELDS}


def _check_shapes(mat: Path, f: dict[str, np.ndarray]) -> int:
    n3 = f["meanshape"].size
    n_vertices = n3 // 3
    f["keypoints"] = f["keypoints"].reshape(-1)
    problems = [f"{k} has shape {tuple(f[k].shape)}, expected {shape}"
                for k, shape in {"idBase": (n3, N_ID), "exBase": (n3, N_EXP), "keypoints": (68,)}.items()
                if f[k].shape != shape]
    if n3 % 3 or f["tri"].ndim != 2 or f["tri"].shape[1] != 3:
        problems.append(f"meanshape {tuple(f['meanshape'].shape)} / tri {tuple(f['tri'].shape)} are not "
                        "xyz-interleaved vertices and triangles")
    # 1-based ids; keypoints must stay valid with the torso helper's off-by-one (id k read as vertex k)
    for name, ids, hi in (("tri", f["tri"], n_vertices), ("keypoints", f["keypoints"], n_vertices - 1)):
        if ids.size and (ids.min() < 1 or ids.max() > hi):
            problems.append(f"{name} holds vertex ids outside 1..{hi}")
    if problems:
        raise ModelFileError(f"{mat} is not the Deep3DFaceRecon {BFM_FILENAME} r3dp expects: "
                             f"{'; '.join(problems)}. {_WHERE_FROM}")
    return n_vertices


def check_bfm_file(mat: str | os.PathLike) -> int:
    """Check a ``BFM_model_front.mat`` has the fields and shapes r3dp reads; returns its vertex count.

    Raises:
        ModelFileError: naming the missing field or wrong shape.
    """
    mat = Path(mat)
    return _check_shapes(mat, _read_mat(mat))


def _read_index(index: Path, n_vertices: int) -> np.ndarray:
    try:
        mp = np.load(index, allow_pickle=False)
    except Exception as exc:
        raise ModelFileError(f"{index} could not be read as a .npy array ({type(exc).__name__}: {exc}). "
                             f"Download {MP468_INDEX_FILENAME} again. {_WHERE_FROM}") from exc
    if mp.shape != (N_MP468,) or mp.dtype.kind not in "iu" or mp.max() >= n_vertices:
        raise ModelFileError(
            f"{index} is not a MediaPipe-to-BFM index: expected {N_MP468} integer vertex ids below {n_vertices}, "
            f"got shape {mp.shape} dtype {mp.dtype}. {_WHERE_FROM}")
    return mp.astype(np.int64)


def _fields_from_sources(mat: Path, index: Path) -> dict[str, torch.Tensor]:
    f = _read_mat(mat)
    n_vertices = _check_shapes(mat, f)
    mean = f["meanshape"].reshape(-1, 3).astype(np.float32)
    # float32 numpy mean over axis 0, as the official code recentres: bit-identical to its mean shape.
    mean = mean - np.mean(mean, axis=0, keepdims=True)
    return {
        "mean_shape": torch.from_numpy(mean),
        "id_base": torch.from_numpy(f["idBase"].astype(np.float32)),
        "exp_base": torch.from_numpy(f["exBase"].astype(np.float32)),
        "triangles": torch.from_numpy(f["tri"].astype(np.int64) - 1),
        "keypoints68": torch.from_numpy(f["keypoints"].astype(np.int64)),
        "mp468_index": torch.from_numpy(_read_index(index, n_vertices)),
    }


def cache_path_for(mat: str | os.PathLike) -> Path:
    """Where the compact copy of ``mat`` lives: ``BFM_model_front.r3dp.safetensors`` beside it."""
    mat = Path(mat)
    return mat.with_name(mat.stem + CACHE_SUFFIX)


def _read_cache(path: Path, metadata: dict[str, str]) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if fh.metadata() != metadata or set(fh.keys()) != set(_CACHED_FIELDS):
                return None
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None  # unreadable cache: rebuilt from the sources


def _write_cache(path: Path, fields: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(fields, tmp, metadata=metadata)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old cache or the complete new one
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as exc:
        logger.warning("could not write the BFM cache %s (%s); the .mat will be parsed on every load", path, exc)


def load_bfm_fields(bfm_path: str | os.PathLike, mp468_index_path: str | os.PathLike | None = None, *,
                    cache: bool = True) -> dict[str, torch.Tensor]:
    """Read the inference fields of the BFM (CPU tensors), through the safetensors cache when valid.

    Args:
        bfm_path: ``BFM_model_front.mat`` or the folder holding it.
        mp468_index_path: the MediaPipe→BFM index (default: ``index_mp468_from_mesh35709.npy`` beside the .mat).
        cache: reuse / write ``BFM_model_front.r3dp.safetensors`` beside the .mat.

    Returns:
        ``mean_shape [N,3]`` float32 (re-centred), ``id_base [3N,80]``, ``exp_base [3N,64]`` float32
        (rows xyz-interleaved per vertex), ``triangles [F,3]`` int64 0-based, ``keypoints68 [68]`` int64 as
        stored (1-based), ``mp468_index [468]`` int64 as stored (−999 = no BFM counterpart).

    Raises:
        ModelFileError: a file is missing, not the expected kind, or corrupt.
    """
    mat, index = resolve_bfm_paths(bfm_path, mp468_index_path)
    metadata = {"format": "r3dp-bfm", "version": CACHE_VERSION,
                "mat_sha256": _sha256(mat), "mp468_sha256": _sha256(index)}
    cached = _read_cache(cache_path_for(mat), metadata) if cache else None
    if cached is not None:
        return cached
    fields = _fields_from_sources(mat, index)
    if cache:
        _write_cache(cache_path_for(mat), fields, metadata)
    return fields


def compute_rotation(euler: torch.Tensor) -> torch.Tensor:
    """Row-vector rotation ``(Rz·Ry·Rx)ᵀ`` from Euler angles.

    Args:
        euler: ``[B,3]`` (pitch x, yaw y, roll z) in radians.

    Returns:
        ``[B,3,3]``; a point row ``v`` rotates as ``v @ rot``.
    """
    ones, zeros = torch.ones_like(euler[:, 0]), torch.zeros_like(euler[:, 0])
    cos, sin = torch.cos(euler), torch.sin(euler)
    cx, cy, cz = cos.unbind(1)
    sx, sy, sz = sin.unbind(1)
    rot_x = torch.stack([ones, zeros, zeros, zeros, cx, -sx, zeros, sx, cx], 1).reshape(-1, 3, 3)
    rot_y = torch.stack([cy, zeros, sy, zeros, ones, zeros, -sy, zeros, cy], 1).reshape(-1, 3, 3)
    rot_z = torch.stack([cz, -sz, zeros, sz, cz, zeros, zeros, zeros, ones], 1).reshape(-1, 3, 3)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`compute_rotation`: ``[B,3,3]`` row-vector rotations → ``[B,3]`` (pitch, yaw, roll).

    Yaw is taken in (−π/2, π/2), which covers every head pose the pipeline produces.
    """
    p = rotation.transpose(1, 2)  # P = Rz·Ry·Rx
    pitch = torch.atan2(p[:, 2, 1], p[:, 2, 2])
    yaw = torch.atan2(-p[:, 2, 0], torch.sqrt(p[:, 2, 1] ** 2 + p[:, 2, 2] ** 2))
    roll = torch.atan2(p[:, 1, 0], p[:, 0, 0])
    return torch.stack([pitch, yaw, roll], 1)


def transform_points(points: torch.Tensor, rotation: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """``points [B,K,3] @ rotation [B,3,3] + trans [B,3]`` (row vectors, the official order)."""
    return points @ rotation + trans.unsqueeze(1)


def to_camera(points: torch.Tensor, distance: float = CAMERA_DISTANCE) -> torch.Tensor:
    """Posed head frame → camera frame: ``z ← distance − z`` (x, y unchanged)."""
    return torch.cat([points[..., :2], distance - points[..., 2:]], -1)


def project_to_fit_space(points_cam: torch.Tensor, focal: float = FIT_FOCAL, center: float = FIT_CENTER
                         ) -> torch.Tensor:
    """Pinhole projection ``[...,3] → [...,2]`` into the 224-px fit space (y up): ``(v @ Kᵀ)_xy / z``."""
    k = points_cam.new_tensor([[focal, 0.0, center], [0.0, focal, center], [0.0, 0.0, 1.0]])
    proj = points_cam @ k.T
    return proj[..., :2] / proj[..., 2:]


def fit_space_to_pixels(uv: torch.Tensor, image_size: float = 512.0) -> torch.Tensor:
    """Fit-space points (224 px, y up) → image pixels of a square ``image_size`` image (y down)."""
    scale = image_size / FIT_SIZE
    return torch.stack([uv[..., 0] * scale, image_size - uv[..., 1] * scale], -1)


def pixels_to_fit_space(lms: torch.Tensor, image_height: float) -> torch.Tensor:
    """Image landmarks (px, y down) → fit space, as the official fitters do: ``y ← H − y``, then ``/ (H/224)``.

    Both axes are divided by the image **height** (the official code does so for non-square images too).
    """
    flipped = torch.stack([lms[..., 0], image_height - lms[..., 1]], -1)
    return flipped / (image_height / FIT_SIZE)


def normalized_coordinate_code(mean_shape: torch.Tensor) -> torch.Tensor:
    """Per-axis min–max normalised mean shape ``[N,3]`` in [0,1] (the PNCC/SECC vertex colour).

    The official ``ncc_code.npy`` has exactly this structure (one vertex at 0 and one at 1 per axis, the
    z maximum at the nose tip); that it equals the normalised BFM mean shape could not be verified
    without the real BFM, so prefer the official file when it is available.
    """
    lo, hi = mean_shape.amin(0), mean_shape.amax(0)
    return (mean_shape - lo) / (hi - lo)


class ShapeBasis(NamedTuple):
    """The 3DMM over K vertices (all, or a keypoint subset): ``mean [K,3]``, ``id_base [3K,80]``,
    ``exp_base [3K,64]`` (rows xyz-interleaved per vertex)."""

    mean: torch.Tensor
    id_base: torch.Tensor
    exp_base: torch.Tensor


def shape_from_basis(basis: ShapeBasis, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
    """``mean + id_base·id + exp_base·exp`` → ``[B,K,3]`` (official summation order: (id + exp) + mean)."""
    flat = id_coeff @ basis.id_base.T + exp_coeff @ basis.exp_base.T + basis.mean.reshape(1, -1)
    return flat.reshape(flat.shape[0], -1, 3)


def posed_vertices_cam(basis: ShapeBasis, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor,
                  trans: torch.Tensor) -> torch.Tensor:
    """The basis' vertices posed (``v @ rot + t``, official ``compute_face_vertex`` order) and in camera space
    (``z ← 10 − z``): ``[B,K,3]``."""
    return to_camera(transform_points(shape_from_basis(basis, id_coeff, exp_coeff), compute_rotation(euler), trans))


class FaceModel3DMM(nn.Module):
    """The BFM 3DMM (``ParametricFaceModel`` + ``Face3DHelper`` of the official code), batched.

    Buffers (move with ``.to(device)`` / ``.to(dtype)``): ``mean_shape [N,3]``, ``id_base [3N,80]``,
    ``exp_base [3N,64]``, ``triangles [F,3]`` (0-based), ``lm68_ids`` (keypoints − 1), ``lm68_helper_ids``
    (keypoints, the off-by-one torso set), ``mp468_ids`` (unmatched → vertex 0), ``mp468_matched [468]`` bool.
    Identity rows broadcast: ``id [1,80]`` works with ``exp [T,64]``.
    """

    def __init__(self, mean_shape: torch.Tensor, id_base: torch.Tensor, exp_base: torch.Tensor,
                 triangles: torch.Tensor, keypoints68: torch.Tensor, mp468_index: torch.Tensor):
        super().__init__()
        buffers = {
            "mean_shape": mean_shape, "id_base": id_base, "exp_base": exp_base, "triangles": triangles,
            "lm68_ids": keypoints68 - 1, "lm68_helper_ids": keypoints68,
            "mp468_ids": mp468_index.clamp(min=0), "mp468_matched": mp468_index >= 0,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    @classmethod
    def from_file(cls, bfm_path: str | os.PathLike, mp468_index_path: str | os.PathLike | None = None, *,
                  cache: bool = True) -> FaceModel3DMM:
        """Load from the user's ``BFM_model_front.mat`` (see :func:`load_bfm_fields`); CPU float32."""
        return cls(**load_bfm_fields(bfm_path, mp468_index_path, cache=cache))

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def basis(self) -> ShapeBasis:
        """The whole model as a :class:`ShapeBasis`."""
        return ShapeBasis(self.mean_shape, self.id_base, self.exp_base)

    def compute_shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """Canonical (unposed) shape: ``id [B,80]``, ``exp [B,64]`` → ``[B,N,3]`` decimetres."""
        return shape_from_basis(self.basis, id_coeff, exp_coeff)

    def keypoint_basis(self, vertex_ids: torch.Tensor) -> ShapeBasis:
        """The model restricted to ``vertex_ids [K]`` (the official ``key_*`` tensors), for repeated evaluation."""
        vertex_ids = vertex_ids.to(self.mean_shape.device)
        rows = (vertex_ids[:, None] * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
        return ShapeBasis(self.mean_shape[vertex_ids], self.id_base[rows], self.exp_base[rows])

    compute_rotation = staticmethod(compute_rotation)

    def vertices_cam(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor,
                     trans: torch.Tensor) -> torch.Tensor:
        """All vertices posed and in camera space (official ``compute_face_vertex``): ``[B,N,3]``."""
        return posed_vertices_cam(self.basis, id_coeff, exp_coeff, euler, trans)

    def lm468(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor, trans: torch.Tensor
              ) -> torch.Tensor:
        """MediaPipe-468 landmarks in fit space (224 px, y up): ``[B,468,2]``.

        The official ``compute_for_landmark_fit``; unmatched landmarks sit on vertex 0.
        """
        return project_to_fit_space(posed_vertices_cam(self.keypoint_basis(self.mp468_ids), id_coeff, exp_coeff,
                                                  euler, trans))

    def lm68(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor, trans: torch.Tensor
             ) -> torch.Tensor:
        """The 68 landmarks (correct vertex ids) in fit space (224 px, y up): ``[B,68,2]``."""
        return project_to_fit_space(posed_vertices_cam(self.keypoint_basis(self.lm68_ids), id_coeff, exp_coeff,
                                                  euler, trans))

    def lm68_helper_3d(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor,
                       trans: torch.Tensor) -> torch.Tensor:
        """Torso-keypoint vertices (off-by-one ids) in camera space: ``[B,68,3]`` (``reconstruct_lm3d``)."""
        return posed_vertices_cam(self.keypoint_basis(self.lm68_helper_ids), id_coeff, exp_coeff, euler, trans)

    def lm68_helper_2d(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor, euler: torch.Tensor,
                       trans: torch.Tensor) -> torch.Tensor:
        """Torso keypoints ``[B,68,2]`` in [0,1] image coords, x right, y down (``Face3DHelper.reconstruct_lm2d``)."""
        uv = project_to_fit_space(self.lm68_helper_3d(id_coeff, exp_coeff, euler, trans))
        return torch.stack([uv[..., 0], FIT_SIZE - uv[..., 1]], -1) / FIT_SIZE

    def ncc_code(self) -> torch.Tensor:
        """Derived per-vertex SECC colour ``[N,3]`` in [0,1]; see :func:`normalized_coordinate_code`."""
        return normalized_coordinate_code(self.mean_shape)


__all__ = [
    "BFM_FILENAME", "MP468_INDEX_FILENAME", "MP468_UNMATCHED", "N_EXP", "N_ID", "FaceModel3DMM", "ShapeBasis",
    "cache_path_for", "compute_rotation", "fit_space_to_pixels", "load_bfm_fields", "normalized_coordinate_code",
    "pixels_to_fit_space", "posed_vertices_cam", "project_to_fit_space", "resolve_bfm_paths", "rotation_to_euler",
    "shape_from_basis", "to_camera", "transform_points",
]
