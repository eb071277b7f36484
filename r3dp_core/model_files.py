"""Where r3dp's model files live, which are present, and how to obtain the missing ones.

Inside ComfyUI the folder is ``models/real3dportrait`` (registered by the node pack with folder_paths);
standalone it is ``--models-dir``, else ``$R3DP_MODELS``, else ``~/.cache/r3dp/models``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFileError, R3DPError

OFFICIAL_README = "https://github.com/yerfor/Real3DPortrait#prepare-models"


@dataclass(frozen=True)
class ModelFile:
    """One file (or folder) r3dp needs, relative to the models folder."""

    key: str
    relpath: str
    purpose: str
    source: str
    size: str
    url: str | None = None      # direct download from the official source, if one exists
    sha256: str | None = None
    required_for: tuple[str, ...] = ("generate",)
    alternatives: tuple[str, ...] = ()   # other accepted relative paths (e.g. a converted .safetensors)

    def candidates(self, models_dir: Path) -> list[Path]:
        return [models_dir / p for p in (self.relpath, *self.alternatives)]

    def find(self, models_dir: Path) -> Path | None:
        return next((p for p in self.candidates(models_dir) if p.exists()), None)

    def missing_message(self, models_dir: Path) -> str:
        how = f"download it from {self.url}" if self.url else f"get it from {self.source}"
        return (f"Missing model file for {self.purpose}: {models_dir / self.relpath} — {how} "
                f"and put it there (or run `r3dp models fetch`{'' if self.url else ' for instructions'}).")


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("video_model", "secc2plane_torso/model_ckpt_steps_100000.ckpt",
              "the video model (Image→Triplane, Motion Adapter, renderer, HTB-SR)",
              f"the official Real3D-Portrait checkpoints (Google Drive/Baidu links in {OFFICIAL_README}); "
              "copy checkpoints/240210_real3dportrait_orig/secc2plane_torso_orig/ with its config.yaml",
              "≈ 0.6 GB", alternatives=("secc2plane_torso.safetensors",)),
    ModelFile("audio_model", "audio2secc_vae/model_ckpt_steps_400000.ckpt",
              "the audio-to-motion model",
              f"the official Real3D-Portrait checkpoints ({OFFICIAL_README}); copy "
              "checkpoints/240210_real3dportrait_orig/audio2secc_vae/ with its config.yaml",
              "≈ 50 MB", required_for=("audio",), alternatives=("audio2secc_vae.safetensors",)),
    ModelFile("hubert", "hubert/hubert-large-ls960-ft",
              "HuBERT speech features (facebook/hubert-large-ls960-ft)",
              "Hugging Face: huggingface-cli download facebook/hubert-large-ls960-ft --local-dir "
              "<models>/hubert/hubert-large-ls960-ft", "≈ 1.2 GB", required_for=("audio",)),
    ModelFile("bfm", "BFM/BFM_model_front.mat", "the BFM 3D morphable face model",
              "the BFM bundle linked in the official README (deep_3drecon/BFM/; Basel Face Model 2009 needs a "
              "free sign-up at https://faces.dmi.unibas.ch/bfm/)", "≈ 200 MB"),
    ModelFile("bfm_mediapipe_index", "BFM/index_mp468_from_mesh35709.npy",
              "the MediaPipe→BFM landmark index", "the same BFM bundle (deep_3drecon/BFM/)", "4 KB"),
    ModelFile("bfm_left_eye_faces", "BFM/bfm_left_eye_faces.npy", "the SECC eye-hole triangles (left eye)",
              "the official Real3D-Portrait repository (deep_3drecon/bfm_left_eye_faces.npy, MIT)", "5 KB",
              url="https://raw.githubusercontent.com/yerfor/Real3DPortrait/main/deep_3drecon/bfm_left_eye_faces.npy",
              sha256="9651756ea2c0fac069a1edf858ed1f125eddc358fa74c529a370c1e7b5730d28"),
    ModelFile("bfm_right_eye_faces", "BFM/bfm_right_eye_faces.npy", "the SECC eye-hole triangles (right eye)",
              "the official Real3D-Portrait repository (deep_3drecon/bfm_right_eye_faces.npy, MIT)", "5 KB",
              url="https://raw.githubusercontent.com/yerfor/Real3DPortrait/main/deep_3drecon/bfm_right_eye_faces.npy",
              sha256="28cb5bbacf578d30a3d5006ec28c617fe5a3ecaeeeb87d9433a884e0f0301a2e"),
    ModelFile("face_landmarker", "face_landmarker.task", "MediaPipe face landmarks",
              "MediaPipe (Apache-2.0)", "3.8 MB",
              url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
                  "face_landmarker.task",
              sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
              required_for=("generate", "dry-run")),
    ModelFile("segmenter", "selfie_multiclass_256x256.tflite", "MediaPipe 6-class selfie segmentation",
              "MediaPipe (Apache-2.0)", "16 MB",
              url="https://storage.googleapis.com/mediapipe-models/image_segmenter/selfie_multiclass_256x256/"
                  "float32/latest/selfie_multiclass_256x256.tflite"),
)

BY_KEY = {m.key: m for m in MODEL_FILES}


def default_models_dir(explicit: str | Path | None = None) -> Path:
    """``explicit`` → ``$R3DP_MODELS`` → ComfyUI's ``models/real3dportrait`` if running inside ComfyUI →
    ``~/.cache/r3dp/models``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("R3DP_MODELS"):
        return Path(os.environ["R3DP_MODELS"]).expanduser()
    # Inside a running ComfyUI its folder_paths module is already loaded; r3dp_core never imports ComfyUI.
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None and hasattr(folder_paths, "models_dir"):
        return Path(folder_paths.models_dir) / "real3dportrait"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "r3dp" / "models"


def require(key: str, models_dir: Path) -> Path:
    """The path of a needed model file, or a ``ModelFileError`` that says where it goes and where it comes from."""
    spec = BY_KEY[key]
    found = spec.find(models_dir)
    if found is None:
        raise ModelFileError(spec.missing_message(models_dir))
    return found


def status(models_dir: Path) -> list[tuple[ModelFile, Path | None]]:
    return [(m, m.find(models_dir)) for m in MODEL_FILES]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(spec: ModelFile, models_dir: Path, progress=None, opener=urllib.request.urlopen) -> Path:
    """Download ``spec`` with resume (``.partial`` + HTTP Range) and sha256 verification; atomic rename."""
    if spec.url is None:
        raise R3DPError(f"{spec.relpath} cannot be downloaded automatically: {spec.source}.")
    target = models_dir / spec.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(spec.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with opener(request) as response:
            resumed = offset and getattr(response, "status", 200) == 206
            with open(partial, "ab" if resumed else "wb") as out:
                done = offset if resumed else 0
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done)
    except OSError as exc:
        raise R3DPError(f"Download of {spec.url} failed ({exc}); run the command again to resume.") from None
    if spec.sha256 and (actual := sha256_of(partial)) != spec.sha256:
        partial.unlink()
        raise ModelFileError(f"{spec.relpath}: checksum mismatch (sha256 {actual}, expected {spec.sha256}); "
                             "the partial file was removed, run the command again.")
    os.replace(partial, target)
    return target
