"""Motion files: our own saved motions (``.safetensors``) and the official coefficient dicts (``.npy``).

The official pipeline drives a clip from ``np.save`` of a Python dict: ``exp [T,64]`` (expressions) and, for a
pose, ``euler [P,3]`` and ``trans [P,3]`` (radians / 3DMM translation); files written by its data tools often
carry ``id [T,80]`` and more, which are ignored (the portrait's identity is used, as official).

**Safety.** ``np.save`` stores a dict as a 0-d object array whose payload is a pickle, and ``np.load`` can only
read it with ``allow_pickle=True``, which runs whatever code the pickle names. This reader never does that: it
parses the ``.npy`` header itself and unpickles the payload with an unpickler that resolves only numpy's array
names (array reconstruction, ``ndarray``, ``dtype``, numpy scalars) and how old protocol-2 files store bytes
(``_codecs.encode`` of text, ``bytes()`` when empty). Anything else (a class, a function, ``os.system``) is
refused before it is looked up. Even numpy's own names resolve to stand-ins that only record what the pickle
asks for, so no numpy object is built from pickled state: a dtype is made from its type string alone (plain
numbers, bools and text; the byte order and a text length are the only state taken), and arrays are made only
after the whole pickle is read, from bytes of exactly the length their shape and dtype need. The top level must
be the 0-d object array ``np.save`` writes, whose content arrives as a list of objects; it is unwrapped, never
built, and it is the only object array accepted: object arrays or scalars, structured or void dtypes anywhere
in the dict are refused, so a crafted file cannot make numpy read bytes as memory addresses. The pickle's
opcodes are checked first, so neither a huge memo index nor a declared length beyond the file makes the
unpickler allocate more than the file's size.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ..defaults import MOTION_FPS
from ..errors import InputError
from ..geometry.camera import mirror_index
from ..inert_pickle import opcode_problem
from .types import Motion

OFFICIAL_EXP_DIM = 64
OFFICIAL_ID_DIM = 80

#: The dtype type strings a coefficient file may use (numpy pickles a dtype as ``dtype(typestring, align,
#: copy)``): bools, integers, floats, complex numbers, byte and unicode strings, and the object type of the
#: dict's container. Everything else (void/structured, datetimes, ...) is refused.
_TYPESTRING = re.compile(r"b1|[iu][1248]|f(2|4|8|16)|c(8|16|32)|[SU][0-9]{1,9}|O[48]")
_MAX_DIMS = 32
_TEXT_ENCODINGS = ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii")


class _Refused(Exception):
    """A pickle that asks for something a coefficient file never holds (the reason, without the file name)."""


class _NdarrayName:
    """What ``numpy.ndarray`` resolves to: only the marker ``_reconstruct`` expects; it cannot be called."""

    __slots__ = ()


_NDARRAY = _NdarrayName()


class _PickledDtype:
    """``numpy.dtype(typestring, align, copy)`` as a pickle asks for it. Only the type string is used; the state
    that BUILD gives may only choose the byte order and a text type's length (its flags, fields and sub-array
    are never applied: fields or a sub-array are refused)."""

    __slots__ = ("typestring", "dtype", "_built")
    __hash__ = None

    def __init__(self, typestring=None, align=False, copy=True):
        if (not isinstance(typestring, str) or not _TYPESTRING.fullmatch(typestring)
                or not isinstance(align, bool) or not isinstance(copy, bool)):
            raise _Refused(f"the file's pickle asks for the numpy dtype {typestring!r}, which is not a plain number, "
                           "bool or text type")
        try:
            self.dtype = np.dtype(typestring)
        except TypeError:  # a size this platform does not have (f16 on ARM, ...)
            raise _Refused(f"the file's pickle asks for the numpy dtype {typestring!r}, which this platform does "
                           "not have") from None
        self.typestring = typestring
        self._built = False

    def __setstate__(self, state):
        if self._built:
            raise _Refused("the file's pickle sets a dtype's state twice, which numpy never writes")
        self._built = True
        if not (isinstance(state, tuple) and len(state) in (8, 9) and all(item is None for item in state[2:5])):
            raise _Refused(f"the file's pickle gives the dtype {self.typestring!r} fields or a sub-array (a "
                           "structured dtype) or a state numpy never writes")
        order = state[1]
        if not isinstance(order, str) or order not in ("<", ">", "|", "="):
            raise _Refused(f"the file's pickle gives the dtype {self.typestring!r} the byte order {order!r}")
        kind = self.dtype.kind
        if kind in "SU":  # numpy takes a text type's length from the state
            size = state[5]
            if type(size) is not int or size <= 0 or (kind == "U" and size % 4):
                raise _Refused(f"the file's pickle gives the text dtype {self.typestring!r} the size {size!r}")
            self.dtype = np.dtype(f"{kind}{size // 4 if kind == 'U' else size}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)

    def check(self) -> np.dtype:
        """The dtype for data read from bytes: any but the object type."""
        if self.dtype.hasobject:
            raise _Refused("the file's pickle builds an object array or scalar from raw bytes (numpy would read "
                           "them as memory addresses)")
        if self.dtype.itemsize == 0:
            raise _Refused(f"the file's pickle asks for the empty text dtype {self.typestring!r}")
        return self.dtype


def _checked_text(data: bytes, dtype: np.dtype) -> bytes:
    if dtype.kind == "U":  # numpy's unicode is UCS-4; a code point beyond U+10FFFF cannot become a str
        try:
            data.decode("utf-32-be" if dtype.byteorder == ">" else "utf-32-le", "surrogatepass")
        except UnicodeDecodeError:
            raise _Refused("the file holds unicode text with invalid code points") from None
    return data


class _PickledArray:
    """An array as ``_reconstruct`` + BUILD describe it; made into an ndarray only by :meth:`build`, after the
    whole pickle is read."""

    __slots__ = ("shape", "dtype", "fortran", "data", "_built")
    __hash__ = None

    def __init__(self):
        self._built = False

    def __setstate__(self, state):
        if self._built:
            raise _Refused("the file's pickle sets an array's state twice, which numpy never writes")
        self._built = True
        if isinstance(state, tuple) and len(state) == 5 and type(state[0]) is int and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise _Refused("the file's pickle gives an array a state numpy never writes")
        shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
                and all(type(size) is int and size >= 0 for size in shape)):
            raise _Refused(f"the file's pickle gives an array the shape {shape!r}")
        if not isinstance(dtype, _PickledDtype) or not isinstance(fortran, bool):
            raise _Refused("the file's pickle gives an array a dtype or memory order numpy never writes")
        if dtype.dtype.hasobject:
            if type(data) is not list or len(data) != math.prod(shape):
                raise _Refused("the file's pickle builds an object array from raw bytes (numpy would read them as "
                               "memory addresses)")
        elif type(data) not in (bytes, bytearray):
            raise _Refused("the file's pickle gives a numeric array data that are not bytes")
        self.shape, self.dtype, self.fortran, self.data = shape, dtype, fortran, data

    def build(self, limit: int) -> np.ndarray:
        """The ndarray, from bytes of exactly the length it needs; no dimension may exceed ``limit`` (the size
        of the file's pickle), so even an empty array cannot declare an absurd shape."""
        if not self._built:
            raise _Refused("the file's pickle leaves an array without its data")
        if self.dtype.dtype.hasobject:
            raise _Refused("the dict holds an object array; only numeric, bool and text arrays are read")
        dtype = self.dtype.check()
        if any(size > limit for size in self.shape):
            raise _Refused(f"an array's shape {self.shape} is larger than the whole file ({limit} bytes)")
        needed = math.prod(self.shape) * dtype.itemsize
        if len(self.data) != needed:
            raise _Refused(f"an array of shape {self.shape} and dtype {dtype} needs {needed} bytes, but the file "
                           f"gives {len(self.data)}")
        if needed == 0:
            return np.empty(self.shape, dtype)
        values = np.frombuffer(bytearray(_checked_text(bytes(self.data), dtype)), dtype=dtype)
        return values.reshape(self.shape, order="F" if self.fortran else "C")


def _reconstruct(cls, shape, typecode):
    """``numpy._core.multiarray._reconstruct``: numpy always calls it as ``(ndarray, (0,), b'b')``."""
    if cls is not _NDARRAY or type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
        raise _Refused("the file's pickle reconstructs an array in a way numpy never writes")
    return _PickledArray()


def _scalar(dtype, data=None):
    """``numpy._core.multiarray.scalar(dtype, bytes)``: a number, bool or text; an object or void scalar is
    refused."""
    if not isinstance(dtype, _PickledDtype):
        raise _Refused("the file's pickle makes a numpy scalar without a dtype")
    checked = dtype.check()
    if type(data) is not bytes or len(data) != checked.itemsize:
        raise _Refused(f"the file's pickle gives a numpy {checked} scalar data that are not {checked.itemsize} "
                       "bytes")
    return np.frombuffer(_checked_text(data, checked), dtype=checked)[0]


def _encode(text, encoding="utf-8"):
    """``_codecs.encode``: how protocol-2 pickles (Python 2 compatible) store bytes."""
    if type(text) is not str or encoding not in _TEXT_ENCODINGS:
        raise _Refused("the file's pickle decodes bytes in a way numpy never writes")
    return text.encode(encoding)


def _empty_bytes():
    """``bytes()``: how protocol-2 pickles store empty bytes (an empty array's data)."""
    return b""


# Both module names: numpy 1.x pickles name numpy.core, numpy 2 numpy._core.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDtype,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
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


def _check_opcodes(payload: bytes) -> None:
    if problem := opcode_problem(payload):
        raise _Refused(problem.removeprefix("its ").replace("pickle", "the file's pickle", 1))


def _materialize(value, limit: int, done: dict):
    """``value`` with the unpickler's stand-ins replaced by numpy arrays and dtypes (containers are rebuilt;
    ``done`` maps ids already handled, so shared and self-referencing containers stay so)."""
    key = id(value)
    if key in done:
        return done[key]
    kind = type(value)
    if kind is _PickledArray:
        result = done[key] = value.build(limit)
    elif kind is _PickledDtype:
        result = done[key] = value.check()
    elif kind is _NdarrayName:
        raise _Refused("the file's pickle uses numpy.ndarray as a value")
    elif kind is dict:
        result = done[key] = {}
        for item_key, item in value.items():
            result[_materialize(item_key, limit, done)] = _materialize(item, limit, done)
    elif kind is list:
        result = done[key] = []
        result.extend(_materialize(item, limit, done) for item in value)
    elif kind in (tuple, set, frozenset):
        result = done[key] = kind(_materialize(item, limit, done) for item in value)
    else:  # None, bools, numbers, str, bytes, bytearray, numpy scalars (already checked)
        result = value
    return result


def read_npy_dict(path: str | Path) -> dict:
    """The dict in an ``np.save``-d ``.npy`` file, read without running pickled code or building any numpy
    object from pickled state (see the module's docstring).

    Its values can only be numeric, bool or text numpy arrays and scalars and Python's plain data (numbers,
    strings, lists, ...).

    Raises:
        InputError: not a ``.npy`` file, a plain array instead of a dict, a pickle that names anything but
            numpy arrays, or arrays of object, structured or void dtype, or of a shape the file's bytes do not
            fill.
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
        if tuple(shape) != ():
            raise InputError(f"{label} holds a ndarray, not the official coefficient dict with 'exp' [T,64] (and "
                             "optionally 'euler', 'trans' [T,3]).")
        payload = fh.read()
    try:
        _check_opcodes(payload)
        loaded = _ArrayOnlyUnpickler(io.BytesIO(payload), label).load()
        if not (type(loaded) is _PickledArray and loaded._built and loaded.dtype.dtype.hasobject
                and loaded.shape == ()):
            raise _Refused("the file's pickle is not the 0-d object array that np.save writes for a dict")
        # the container's single object, unwrapped (an object array is never built)
        content = _materialize(loaded.data[0], len(payload), {})
    except InputError:
        raise
    except _Refused as exc:
        raise InputError(f"{label}: {exc}; it was not loaded. An official coefficient file is np.save of a dict "
                         "of numeric arrays ('exp' [T,64], optionally 'euler' and 'trans' [T,3]).") from None
    except Exception as exc:  # a damaged pickle raises many kinds of errors
        raise InputError(f"{label}: the coefficient dict cannot be read ({type(exc).__name__}); the file is "
                         "damaged or not an np.save of a dict.") from None
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
