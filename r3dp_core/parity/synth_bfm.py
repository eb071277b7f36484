"""The synthetic BFM of the geometry parity cases, rebuilt once per machine and loaded like a real one.

``case_geom_synth_bfm.py`` (beside the cases) rebuilds ``BFM_model_front.mat`` and
``index_mp468_from_mesh35709.npy`` from the official small data files; ``case_geom_synth_bfm.json`` holds
the sha256 of every field. The files go to ``$R3DP_PARITY_CACHE/synth_bfm`` (default
``~/.cache/r3dp/parity/synth_bfm``), are verified field by field after building, and are then read through
:func:`r3dp_core.geometry.bfm.FaceModel3DMM.from_file`, which exercises the real loader on the official
field names.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import InputError
from ..geometry.bfm import BFM_FILENAME, MP468_INDEX_FILENAME, FaceModel3DMM

SCRIPT, SIDECAR = "case_geom_synth_bfm.py", "case_geom_synth_bfm.json"
_VERIFIED = "verified.json"


def cache_dir() -> Path:
    """``$R3DP_PARITY_CACHE/synth_bfm``, default ``~/.cache/r3dp/parity/synth_bfm``."""
    root = os.environ.get("R3DP_PARITY_CACHE") or Path.home() / ".cache" / "r3dp" / "parity"
    return Path(root) / "synth_bfm"


def _sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build(parity_dir: Path, out_dir: Path) -> None:
    script = parity_dir / SCRIPT
    spec = importlib.util.spec_from_file_location("_r3dp_case_geom_synth_bfm", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = parity_dir.parent / "official_data"
    model, mp = module.build(np.load(data / "ncc_code.npy"), np.load(data / "index_mp468_from_mesh35709_v3.1.npy"),
                             np.load(data / "index_mp468_from_mesh35709_v3.npy"))
    scipy.io.savemat(str(out_dir / BFM_FILENAME), model, do_compression=True)
    np.save(out_dir / MP468_INDEX_FILENAME, mp)


def _verify_fields(out_dir: Path, expected: dict[str, dict]) -> None:
    loaded = scipy.io.loadmat(str(out_dir / BFM_FILENAME))
    loaded[MP468_INDEX_FILENAME] = np.load(out_dir / MP468_INDEX_FILENAME)
    wrong = [name for name, info in expected.items()
             if name not in loaded or _sha256_array(loaded[name]) != info["sha256_as_loaded"]]
    if wrong:
        raise InputError(f"the rebuilt synthetic BFM in {out_dir} does not match {SIDECAR} for "
                         f"{', '.join(wrong)}: the builder or its input files differ from the reference ones")


def _fingerprint(out_dir: Path) -> dict[str, str]:
    return {name: _sha256_file(out_dir / name) for name in (BFM_FILENAME, MP468_INDEX_FILENAME)}


def _is_verified(folder: Path, expected: dict[str, dict]) -> bool:
    try:
        with open(folder / _VERIFIED) as fh:
            recorded = json.load(fh)
        return recorded.get("fields") == expected and recorded.get("files") == _fingerprint(folder)
    except (OSError, ValueError):
        return False


def ensure_synth_bfm(parity_dir: Path) -> Path:
    """The folder holding the verified synthetic BFM, building it (about 60 MB, a few seconds) if needed."""
    parity_dir = Path(parity_dir).resolve()
    sidecar = parity_dir / SIDECAR
    if not sidecar.is_file() or not (parity_dir / SCRIPT).is_file():
        raise InputError(f"the geometry parity cases need {SCRIPT} and {SIDECAR} in {parity_dir}")
    with open(sidecar) as fh:
        expected = json.load(fh)["fields"]
    target = cache_dir()
    if _is_verified(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="synth_bfm.", dir=target.parent))
    try:
        _build(parity_dir, staging)
        _verify_fields(staging, expected)
        with open(staging / _VERIFIED, "w") as fh:
            json.dump({"fields": expected, "files": _fingerprint(staging)}, fh)
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not _is_verified(target, expected):  # else another process just finished the same build
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=2)
def _model(folder: str) -> FaceModel3DMM:
    return FaceModel3DMM.from_file(folder)


def synth_face_model(parity_dir: Path) -> FaceModel3DMM:
    """The synthetic BFM as a ``FaceModel3DMM`` (CPU float32, cached per process; do not modify)."""
    return _model(str(ensure_synth_bfm(parity_dir)))
