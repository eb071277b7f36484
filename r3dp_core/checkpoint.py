"""Safe checkpoint loading for every form the official files come in.

Supported: the trainer's ``.ckpt`` (weights nested in ``ckpt["state_dict"]["model"]``, or flat under
``state_dict`` with a ``model.`` prefix), plain state dicts, and ``.safetensors``. Pickled files are read
with ``torch.load(weights_only=True)`` and a short allow-list of harmless numpy scalar types; a file
whose pickle references anything else (a function, a class — i.e. code) is refused and nothing in it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFileError

# What each official model's state dict looks like, so a file in the wrong slot is named, not just rejected.
MODEL_DESCRIPTIONS = {
    "secc2plane_torso": "Real3D-Portrait's video model (secc2plane_torso, checkpoints/240210_real3dportrait_orig/"
                        "secc2plane_torso_orig/model_ckpt_steps_100000.ckpt)",
    "secc2plane": "Real3D-Portrait's head-only video model (secc2plane_orig), which has no torso/background branch",
    "audio2secc_vae": "Real3D-Portrait's audio model (audio2secc_vae, checkpoints/240210_real3dportrait_orig/"
                      "audio2secc_vae/model_ckpt_steps_400000.ckpt)",
    "hubert": "a HuBERT speech model",
    "stable_diffusion": "a Stable Diffusion / SDXL checkpoint",
    "liveportrait": "a LivePortrait model file",
    "unknown": "a file r3dp does not recognise",
}

_FINGERPRINTS: list[tuple[str, tuple[str, ...]]] = [
    # (kind, key prefixes that must all be present)
    ("secc2plane_torso", ("cano_img2plane_backbone.", "secc_img2plane_backbone.", "superresolution.torso_model.")),
    ("secc2plane", ("cano_img2plane_backbone.", "secc_img2plane_backbone.")),
    ("audio2secc_vae", ("vae.prior_flow.", "vae.decoder.")),
    ("audio2secc_vae", ("vae.decoder.", "vae.encoder.")),
    ("hubert", ("feature_extractor.conv_layers.",)),
    ("hubert", ("hubert.feature_extractor.",)),
    ("stable_diffusion", ("model.diffusion_model.",)),
    ("stable_diffusion", ("first_stage_model.",)),
    ("stable_diffusion", ("conditioner.embedders.",)),
    ("stable_diffusion", ("down_blocks.", "mid_block.")),
]
_LIVEPORTRAIT_MARKERS = ("spade", "G_middle", "dense_motion", "stitching", "warping_module", "third_pass",
                         "fc_kp", "fc_exp")

#: numpy scalars and dtypes that trainer checkpoints carry in their non-weight entries; inert data.
_SAFE_NUMPY_GLOBALS = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype")


@dataclass
class LoadedCheckpoint:
    """Weights of one model plus whatever configuration the file carried."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def _safe_numpy_globals() -> list:
    found = []
    try:
        import numpy as np
    except ImportError:
        return found
    found.append(np.dtype)
    found.extend(type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool"))
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
            found.append(module.scalar)
            break
        except (ImportError, AttributeError):
            continue
    return found


def _torch_load_safely(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).split("\n")[0]
        raise ModelFileError(
            f"Refusing to load {path}: its pickle references Python objects that are not plain data "
            f"({reason.strip()}). Such a file can run code when it is opened, so r3dp never unpickles it. "
            "If you trust its origin, convert the weights with a tool you trust to .safetensors; otherwise "
            "download the official file again.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(
            f"Cannot read {path}: the file is damaged or incomplete ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}). This usually means an interrupted "
            "download: delete it and download it again.") from None


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError, ...)
        raise ModelFileError(
            f"Cannot read {path} as safetensors ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
            " The file is damaged, incomplete or not a safetensors file: download or convert it again.") from None
    return tensors, metadata


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Normalise the official layouts to bare model keys.

    - nested trainer layout ``{"model": {...}, "disc": {...}}`` → the ``model`` entry;
    - flat layout with ``model.`` prefixes (and other children) → the ``model.`` keys, prefix removed;
    - ``_orig_mod.`` (left by ``torch.compile``) is removed wherever it appears.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    elif any(k.startswith("model.") for k in state_dict) and any("." in k for k in state_dict):
        state_dict = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    return {k.replace("_orig_mod.", ""): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def detect_kind(keys) -> str:
    """Which known model a set of state-dict keys belongs to (see ``MODEL_DESCRIPTIONS``)."""
    keys = list(keys)
    for kind, prefixes in _FINGERPRINTS:
        if all(any(k.startswith(p) for k in keys) for p in prefixes):
            return kind
    if any(marker in k for k in keys for marker in _LIVEPORTRAIT_MARKERS):
        return "liveportrait"
    return "unknown"


def _config_beside(path: Path) -> dict[str, Any]:
    """The official inference reads ``config.yaml`` from the checkpoint's folder."""
    config_path = path.parent / "config.yaml"
    if not config_path.is_file():
        return {}
    try:
        import yaml
    except ImportError:
        return {}
    try:
        with open(config_path) as fh:
            config = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ModelFileError(f"{config_path} beside the checkpoint is not valid YAML ({exc}); "
                             "download it again with the checkpoint.") from None
    return config if isinstance(config, dict) else {}


def load_checkpoint(path: str | Path, expected: str | None = None) -> LoadedCheckpoint:
    """Load any supported checkpoint form and return bare official keys.

    Args:
        path: ``.ckpt``/``.pt``/``.pth`` (pickled, loaded with ``weights_only=True``) or ``.safetensors``.
        expected: the model kind the caller's slot needs (e.g. ``"secc2plane_torso"``); a file of another
            kind is rejected with a sentence naming both.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    if path.stat().st_size == 0:
        raise ModelFileError(f"Model file {path} is empty (0 bytes): the download did not complete. "
                             "Delete it and download it again.")
    metadata: dict[str, str] = {}
    config: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        state_dict, metadata = _load_safetensors(path)
        state_dict = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
        if "r3dp_config" in metadata:
            config = json.loads(metadata["r3dp_config"])
    else:
        raw = _torch_load_safely(path)
        if not isinstance(raw, Mapping):
            raise ModelFileError(f"{path} holds a {type(raw).__name__}, not a state dict or training checkpoint.")
        state_dict = strip_wrappers(raw)
        config = _config_beside(path)
    if not state_dict:
        raise ModelFileError(f"{path} contains no weight tensors; it is not a model checkpoint.")
    kind = detect_kind(state_dict)
    if expected is not None and kind != expected:
        raise ModelFileError(
            f"{path.name} looks like {MODEL_DESCRIPTIONS[kind]}, but this slot expects "
            f"{MODEL_DESCRIPTIONS.get(expected, expected)}. Pick the right file for this loader.")
    return LoadedCheckpoint(path=path, state_dict=state_dict, kind=kind, config=config, metadata=metadata)


@dataclass
class KeyMismatch:
    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self, examples: int = 3) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:examples]) + (", ..." if len(items) > examples else "")
                parts.append(f"{len(items)} {label} (e.g. {shown})")
        if self.wrong_shape:
            shown = ", ".join(f"{key} {tuple(got)} instead of {tuple(want)}"
                              for key, got, want in self.wrong_shape[:examples])
            parts.append(f"{len(self.wrong_shape)} with the wrong shape (e.g. {shown})")
        return "; ".join(parts)


def compare_keys(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> KeyMismatch:
    """Missing / unexpected / wrong-shape keys between a model's state dict and a checkpoint."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    wrong = sorted((k, tuple(given[k].shape), tuple(expected[k].shape)) for k in expected
                   if k in given and tuple(given[k].shape) != tuple(expected[k].shape))
    return KeyMismatch(missing, unexpected, wrong)


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a readable summary instead of torch's wall of keys."""
    mismatch = compare_keys(module.state_dict(), state_dict)
    if mismatch:
        raise ModelFileError(
            f"{source} does not match {type(module).__name__}: {mismatch.describe()}. The file is probably "
            "for a different model or version; use the official checkpoint for this slot.")
    module.load_state_dict(state_dict, strict=True)


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str]) -> None:
    """Write tensors unchanged (values, dtypes, shapes); shared storage is split so safetensors accepts it."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    storages: set[int] = set()
    for key, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in storages and tensor.numel():
            tensors[key] = tensor.clone()
        storages.add(ptr)
    save_file(tensors, str(path), metadata=dict(metadata))


def write_converted(loaded: LoadedCheckpoint, out: str | Path) -> Path:
    """Write a loaded official checkpoint as flat safetensors with exactly its keys; the configuration it carried
    (``config.yaml``) goes into the metadata. Atomic: the file appears only when complete."""
    out = Path(out)
    metadata = {"format": "pt", "r3dp_model": loaded.kind, "r3dp_source": loaded.path.name,
                "r3dp_config": json.dumps(loaded.config, sort_keys=True, default=str)}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        save_safetensors(loaded.state_dict, partial, metadata)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
