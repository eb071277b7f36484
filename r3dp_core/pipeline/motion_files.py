"""Motion files: our own saved motions (``.safetensors``) and the official coefficient dicts (``.npy``).

The official pipeline drives a clip from ``np.save`` of a Python dict: ``exp [T,64]`` (expressions) and, for a
pose, ``euler [P,3]`` and ``trans [P,3]`` (radians / 3DMM translation); files written by its data tools often
carry ``id [T,80]`` and more, which are ignored (the portrait's identity is used, as official).

**Safety.** ``np.save`` stores a dict as a 0-d object array whose payload is a pickle, and ``np.load`` can only
read it with ``allow_pickle=True``, which runs whatever code the pickle names. This reader never does that: it
parses the ``.npy`` header itself and unpickles the payload with an unpickler that resolves only the four
numpy names an array pickle needs (array reconstruction, ``ndarray``, ``dtype``, numpy scalars), plus the
bytes decoder of old protocol-2 files. Anything else (a class, a function, ``os.system``) is refused before it
is looked up; the result must be a dict, and the entries used must be numeric arrays.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..defaults import MOTION_FPS
from ..errors import InputError
from ..geometry.camera import mirror_index
from .types import Motion

OFFICIAL_EXP_DIM = 64
OFFICIAL_ID_DIM = 80

# The objects numpy's own pickles name, taken from numpy itself (their module moved in numpy 2).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): lambda text, encoding="utf-8": str(text).encode(encoding),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, label: str):
        super().__init__(file)
        self._label = label

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise InputError(f"{self._label}: the file's pickle refers to {module}.{name}, which a coefficient file "
                             "never needs; it was not loaded (a pickle can run code). Save a plain dict of numpy "
                             "arrays with np.save.") from None


def read_npy_dict(path: str | Path) -> dict:
    """The dict in an ``np.save``-d ``.npy`` file, read without running pickled code.

    Its values can only be numpy arrays and scalars and Python's plain data (numbers, strings, lists, ...).

    Raises:
        InputError: not a ``.npy`` file, a plain array instead of a dict, or a pickle that names anything but
            numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Motion file {path} does not exist.")
    label = str(path)
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
        except ValueError as exc:
            raise InputError(f"{label} is not a readable .npy file ({exc}).") from None
        if dtype != np.dtype(object):
            raise InputError(f"{label} holds a single {dtype} array of shape {tuple(shape)}, not the official "
                             "coefficient dict; save a dict such as {'exp': exp [T,64], 'euler': [T,3], "
                             "'trans': [T,3]} with np.save.")
        try:
            loaded = _ArrayOnlyUnpickler(io.BytesIO(fh.read()), label).load()
        except InputError:
            raise
        except Exception as exc:  # a damaged pickle raises many kinds of errors
            raise InputError(f"{label}: the coefficient dict cannot be read ({type(exc).__name__}); the file is "
                             "damaged or not an np.save of a dict.") from None
    content = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(content, dict):
        raise InputError(f"{label} holds a {type(content).__name__}, not the official coefficient dict with "
                         "'exp' [T,64] (and optionally 'euler', 'trans' [T,3]).")
    if not all(isinstance(key, str) for key in content):
        raise InputError(f"{label}: the coefficient dict's keys must be names such as 'exp'.")
    return content


def _coefficients(arrays: dict, key: str, width: int, label: str) -> torch.Tensor:
    value = arrays[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        kind = f"{type(value).__name__} {getattr(value, 'dtype', '')}".strip()
        raise InputError(f"{label}: '{key}' must be a numeric array [T,{width}], got a {kind}.")
    if value.ndim == 3 and value.shape[0] == 1:  # [1,T,C]: a batch of one, as some official tools save
        value = value[0]
    if value.ndim != 2 or value.shape[1] != width or value.shape[0] < 1:
        raise InputError(f"{label}: '{key}' must be [T,{width}], got {list(value.shape)}.")
    tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{label}: '{key}' contains NaN or infinite values.")
    return tensor


def load_official_motion(path: str | Path) -> Motion:
    """An official coefficient ``.npy`` dict → ``Motion`` at 25 fps (the official frame rate).

    ``exp [T,64]`` is required; ``euler`` and ``trans`` (``[P,3]`` each, both or neither) become the motion's
    head pose, fitted to T frames by the official ping-pong (:func:`mirror_index`) when P ≠ T. ``id`` must be
    ``[T,80]`` or ``[1,80]`` if present (it is not used); other keys are ignored.
    """
    label = str(path)
    arrays = read_npy_dict(path)
    if "exp" not in arrays:
        raise InputError(f"{label} has no 'exp' entry (found: {', '.join(sorted(arrays)) or 'nothing'}); the "
                         "official coefficient dict needs 'exp' [T,64] expression coefficients.")
    exp = _coefficients(arrays, "exp", OFFICIAL_EXP_DIM, label)
    if "id" in arrays:
        _coefficients(arrays, "id", OFFICIAL_ID_DIM, label)
    has_pose = [key in arrays for key in ("euler", "trans")]
    if any(has_pose) and not all(has_pose):
        missing = "trans" if has_pose[0] else "euler"
        raise InputError(f"{label} has a head pose without '{missing}'; give both 'euler' and 'trans' [T,3], or "
                         "neither.")
    euler = trans = None
    if all(has_pose):
        euler = _coefficients(arrays, "euler", 3, label)
        trans = _coefficients(arrays, "trans", 3, label)
        if euler.shape != trans.shape:
            raise InputError(f"{label}: 'euler' {list(euler.shape)} and 'trans' {list(trans.shape)} must have the "
                             "same number of frames.")
        if euler.shape[0] != exp.shape[0]:
            index = mirror_index(exp.shape[0], euler.shape[0])
            euler, trans = euler[index], trans[index]
    return Motion(exp=exp, fps=MOTION_FPS, euler=euler, trans=trans)


def motion_at_25_fps(motion: Motion) -> Motion:
    """The motion at 25 fps (the clip's rate), resampled as driving videos are (nearest earlier frame, see
    :func:`~r3dp_core.pipeline.driving.resample_index`); a blink schedule is dropped (it is made per frame)."""
    from .driving import resample_index

    if abs(motion.fps - MOTION_FPS) < 1e-6:
        return motion
    index = resample_index(motion.num_frames, motion.fps)
    return Motion(exp=motion.exp[index], fps=MOTION_FPS, euler=None if motion.euler is None else motion.euler[index],
                  trans=None if motion.trans is None else motion.trans[index], audio=motion.audio)


def load_motion_file(path: str | Path) -> Motion:
    """A motion from a file: our saved motions (``.safetensors``) or the official ``.npy`` coefficient dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return load_official_motion(path)
    if suffix == ".safetensors":
        return Motion.load(path)
    raise InputError(f"{path}: a motion file is an r3dp .safetensors motion (Save Motion) or an official .npy "
                     "coefficient dict; this file is neither.")


__all__ = ["load_motion_file", "load_official_motion", "motion_at_25_fps", "read_npy_dict"]
