"""Loading every model of a job from its file, with errors that say what to get and where.

These functions read a checkpoint or model file from a path and return the module (strict keys, eval mode, on
the given device): the CLI, the batch workers and the self-test call them, and so do the ComfyUI loader nodes
(``nodes/loaders.py``), which add the dropdowns of model files, ComfyUI's device placement and precision widget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import model_files
from ..checkpoint import load_checkpoint, load_into
from ..device import Precision
from ..errors import ModelFileError
from ..geometry.bfm import FaceModel3DMM
from ..geometry.secc import LEFT_EYE_FACES_FILE, NCC_CODE_FILE, RIGHT_EYE_FACES_FILE, SECCMesh, secc_mesh
from ..models.a2m_vae import A2MConfig, AudioToMotionVAE
from ..models.secc2plane_torso import Secc2PlaneTorso, Secc2PlaneTorsoConfig
from .face import FaceGeometry, FaceKit


def load_video_model(path: str | Path, precision: Precision | None = None, fold: bool = True) -> Secc2PlaneTorso:
    """The secc2plane_torso model from an official ``.ckpt`` (config.yaml beside it) or a converted
    ``.safetensors`` (config in its metadata); strict keys, eval mode, on ``precision.device``."""
    precision = precision or Precision.resolve("cpu", "fp32")
    loaded = load_checkpoint(path, expected="secc2plane_torso")
    config = Secc2PlaneTorsoConfig.from_hparams(loaded.config) if loaded.config else Secc2PlaneTorsoConfig()
    model = Secc2PlaneTorso(config)
    load_into(model, loaded.state_dict, source=str(path))
    model = model.eval().requires_grad_(False).to(precision.device)
    if fold:
        model.fold_constant_styles()
    return model


def load_audio_model(path: str | Path, device: torch.device | str = "cpu") -> AudioToMotionVAE:
    """The audio2secc VAE from an official ``.ckpt`` or a converted ``.safetensors`` (class detected from the
    keys); strict keys, eval mode, on ``device``."""
    loaded = load_checkpoint(path, expected="audio2secc_vae")
    model = AudioToMotionVAE(A2MConfig.from_state_dict(loaded.state_dict))
    load_into(model, loaded.state_dict, source=str(path))
    return model.eval().requires_grad_(False).to(device)


def load_secc_mesh_for(bfm: FaceModel3DMM, data_dir: Path) -> SECCMesh:
    """The SECC mesh of ``bfm`` (see :func:`~r3dp_core.geometry.secc.secc_mesh`) from the official eye-triangle
    files in ``data_dir``.

    The NCC code is derived from the BFM mean shape (it equals the official ``ncc_code.npy``); an official
    ``ncc_code.npy`` beside the BFM takes precedence.
    """
    eyes = []
    for name in (LEFT_EYE_FACES_FILE, RIGHT_EYE_FACES_FILE):
        path = data_dir / name
        if not path.is_file():
            key = "bfm_left_eye_faces" if "left" in name else "bfm_right_eye_faces"
            raise ModelFileError(model_files.BY_KEY[key].missing_message(data_dir.parent))
        eyes.append(np.load(path, allow_pickle=False))
    ncc_path = data_dir / NCC_CODE_FILE
    colors = (torch.from_numpy(np.load(ncc_path, allow_pickle=False).T.astype(np.float32)) if ncc_path.is_file()
              else bfm.ncc_code())
    try:
        return secc_mesh(bfm.triangles.cpu(), np.concatenate(eyes), colors)
    except ModelFileError as exc:
        raise ModelFileError(f"{data_dir}: {exc}") from None


def load_face_kit(models_dir: Path, need_segmenter: bool = True, device: torch.device | str = "cpu") -> FaceKit:
    """BFM 3DMM, SECC mesh and the MediaPipe model paths from ``models_dir``."""
    bfm_path = model_files.require("bfm", models_dir)
    index_path = model_files.require("bfm_mediapipe_index", models_dir)
    bfm = FaceModel3DMM.from_file(bfm_path, index_path)
    mesh = load_secc_mesh_for(bfm, bfm_path.parent)
    landmarker = model_files.require("face_landmarker", models_dir)
    segmenter = model_files.require("segmenter", models_dir) if need_segmenter else None
    return FaceKit(FaceGeometry(bfm.to(device), mesh.to(device)), landmarker, segmenter)
