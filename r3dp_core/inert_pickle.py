"""Reading tensors out of pickles that were written to run code, without running any of it.

Two official Talk3D files cannot be read by ``torch.load(weights_only=True)``:

* the trainer's checkpoint (``torch.save``) also pickles whole ``optimizer`` and ``scheduler`` objects;
* NVIDIA's *persistence* pickles (EG3D's ``ffhq-fixed-triplane512-128.pkl``, VIVE3D's ``G_tune.pkl``) embed each
  network's Python source and execute it on load (``torch_utils.persistence._reconstruct_persistent_obj``).

:func:`load_inert` unpickles such a file with an unpickler in which **no name the pickle mentions is ever looked
up**: tensors are rebuilt by this module's own code from the stored bytes (the zip entries of ``torch.save``, or
the ``torch.load(weights_only=True)``-readable storage blobs of a plain pickle), a few plain containers are real
(``OrderedDict``, ``set``, ``slice``), and every other global — a class, ``_reconstruct_persistent_obj``,
``os.system`` — becomes an :class:`Inert` record of the call that was asked for (its name, arguments and state),
never called. Callers then walk the records (:func:`module_state_dict`).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFileError

#: Bytes of a pickle we read at most (an official EG3D pickle with its discriminator is about 0.5 GB).
MAX_PICKLE_BYTES = 4 << 30

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "float", "half",
    "double", "long", "int", "short")}


_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def opcode_problem(payload: bytes) -> str | None:
    """Why a pickle would make the unpickler allocate for nothing, or ``None``: its opcodes are walked without
    running them; every declared length must be present and memo slots numbered as picklers number them, in
    order (``LONG_BINPUT 4294967280`` alone would make CPython allocate a memo table of 64 GiB)."""
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(payload)):
            if opcode.name in _MEMO_PUTS and arg > count:
                return f"its pickle stores to memo slot {arg} after {count} opcodes, which no pickler writes"
    except ValueError as exc:
        return f"its pickle is malformed ({exc})"
    return None


class Inert:
    """A call or object a pickle asked for, recorded and never run: ``name`` (``module.qualname``), ``args``,
    ``state`` (from BUILD), and ``items`` / ``listitems`` (from SETITEMS / APPENDS)."""

    name: str = "?"

    def __new__(cls, *args, **kwargs):
        record = object.__new__(cls)
        object.__setattr__(record, "args", args)
        object.__setattr__(record, "kwargs", kwargs)
        object.__setattr__(record, "state", None)
        object.__setattr__(record, "items", {})
        object.__setattr__(record, "listitems", [])
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "state", state)

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.listitems.append(value)

    def extend(self, values):
        self.listitems.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.name}>"


@dataclass(frozen=True)
class _StorageRef:
    storage: torch.UntypedStorage
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return self.storage.nbytes() // torch.empty(0, dtype=self.dtype).element_size()


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. in persistent ids: only its dtype is used."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> torch.Tensor:
    if isinstance(storage, torch.storage.TypedStorage):
        storage = _StorageRef(storage._untyped_storage, storage.dtype)
    if not isinstance(storage, _StorageRef):
        raise ModelFileError(f"a tensor in the file is built from a {type(storage).__name__}, not stored bytes")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in size + stride) or int(offset) < 0:
        raise ModelFileError("a tensor in the file has a negative size, stride or offset")
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else int(offset) - 1
    if last >= storage.numel:
        raise ModelFileError(f"a tensor in the file reaches element {last} of a storage of {storage.numel}")
    tensor = torch.empty(0, dtype=storage.dtype)
    return tensor.set_(storage.storage, int(offset), size, stride)


def _rebuild_parameter(data, *_ignored) -> torch.Tensor:
    return data


def _rebuild_from_type(func, _new_type, args, _state):
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise ModelFileError(f"a tensor in the file is rebuilt by {getattr(func, 'name', func)!r}, which r3dp "
                             "does not run")
    return func(*args)


def _load_storage_blob(blob: bytes) -> _StorageRef:
    """A storage pickled with ``pickle`` (``torch.storage._load_from_bytes``): a legacy ``torch.save`` of the
    storage alone, which ``weights_only`` loading reads safely."""
    storage = torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ModelFileError(f"a storage blob in the file holds a {type(storage).__name__}")
    return _StorageRef(storage._untyped_storage, storage.dtype)


def _encode(text, encoding="latin1"):
    return str(text).encode(encoding)


_REAL = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage_blob,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _encode,
}


class _InertUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, bytes] | None = None):
        super().__init__(file)
        self._storages = storages or {}
        self._built: dict[str, _StorageRef] = {}
        self._inert_types: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        # Python 2 names (protocol 0-2 pickles), mapped as pickle's own find_class maps them
        if (module, name) in _compat_pickle.NAME_MAPPING or module in _compat_pickle.IMPORT_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _REAL:
            return _REAL[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        qualified = f"{module}.{name}"
        if qualified not in self._inert_types:
            self._inert_types[qualified] = type("Inert", (Inert,), {"name": qualified})
        return self._inert_types[qualified]

    def persistent_load(self, pid):
        # torch.save's zip format: ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelFileError(f"the file refers to an outside object {pid!r:.80}")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _StorageType):
            raise ModelFileError(f"storage {key} of the file has an unknown type")
        if key not in self._built:
            if key not in self._storages:
                raise ModelFileError(f"the file names storage {key}, which it does not contain")
            raw = bytearray(self._storages[key])
            self._built[key] = _StorageRef(torch.frombuffer(raw, dtype=torch.uint8).untyped_storage()
                                           if raw else torch.UntypedStorage(0), kind.dtype)
        return self._built[key]


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ModelFileError(f"{path} is a zip file but not a torch.save archive (no single data.pkl).")
        prefix = pickles[0][:-len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() not in (b"little", b""):
            raise ModelFileError(f"{path} was saved on a big-endian machine; r3dp reads little-endian files only.")
        total = sum(info.file_size for info in archive.infolist())
        if total > MAX_PICKLE_BYTES:
            raise ModelFileError(f"{path} unpacks to {total / 1e9:.1f} GB, more than any official file; refused.")
        storages = {n[len(prefix) + len("data/"):]: archive.read(n) for n in names
                    if n.startswith(prefix + "data/") and not n.endswith("/")}
        data = archive.read(pickles[0])
    return _unpickle(path, data, storages)


def _unpickle(path: Path, data: bytes, storages: dict[str, bytes] | None = None) -> Any:
    if problem := opcode_problem(data):
        raise ModelFileError(f"{path} was refused: {problem}.")
    return _InertUnpickler(io.BytesIO(data), storages).load()


def load_inert(path: str | Path) -> Any:
    """Unpickle a ``torch.save`` archive or a plain pickle without running anything it names.

    Tensors come back as CPU tensors (parameters as plain tensors); plain data as itself; every other object
    or call as an :class:`Inert` record.

    Raises:
        ModelFileError: not a pickle, damaged, or a tensor that does not fit its stored bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist.")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        if path.stat().st_size > MAX_PICKLE_BYTES:
            raise ModelFileError(f"{path} is larger than any official file; refused.")
        return _unpickle(path, path.read_bytes())
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged pickle raises many kinds of errors
        raise ModelFileError(f"{path} cannot be read as a pickle ({type(exc).__name__}: {exc}); the file is "
                             "damaged or not one of the official files.") from None


def persistent_state(record: Any) -> tuple[dict, dict]:
    """``(state, init_kwargs)`` of a module as a persistence pickle (or plain pickling) records it.

    A persistence pickle stores ``_reconstruct_persistent_obj(meta)`` with ``meta = {'module_src', 'class_name',
    'state', ...}``; the source is never compiled here, only ``meta['state']`` (the module's ``__dict__``) is read.
    """
    if isinstance(record, Inert) and record.name.endswith("._reconstruct_persistent_obj") and record.args:
        meta = as_plain(record.args[0])
        if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
            raise ModelFileError("a persistent object in the file has no state dict")
        state = meta["state"]
    elif isinstance(record, Inert) and isinstance(record.state, dict):
        state = record.state
    else:
        raise ModelFileError(f"expected a pickled network, found {record!r:.80}")
    kwargs = as_plain(state.get("_init_kwargs", state.get("init_kwargs", {})))   # persistence keeps _init_kwargs
    return state, kwargs if isinstance(kwargs, dict) else {}


def module_state_dict(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of a pickled ``torch.nn.Module`` record: parameters and persistent buffers of it and
    of every submodule, keyed as ``state_dict()`` keys them."""
    state, _ = persistent_state(record)
    out: dict[str, torch.Tensor] = {}
    non_persistent = as_plain(state.get("_non_persistent_buffers_set", set())) or set()
    for group in ("_parameters", "_buffers"):
        for name, value in as_plain(state.get(group, {})).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise ModelFileError(f"{prefix}{name} in the file is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value
    for name, child in as_plain(state.get("_modules", {})).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def as_plain(value: Any) -> Any:
    """Records of dict-like objects (``EasyDict``, ``OrderedDict`` subclasses) as plain dicts, recursively;
    everything else as it is."""
    if isinstance(value, Inert):
        if value.items:
            return {k: as_plain(v) for k, v in value.items.items()}
        if isinstance(value.state, dict) and not value.args and "_modules" not in value.state:
            return {k: as_plain(v) for k, v in value.state.items()}
        return value
    if isinstance(value, dict):
        return type(value)((k, as_plain(v)) for k, v in value.items()) if isinstance(value, collections.OrderedDict) \
            else {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(as_plain(v) for v in value)
    return value
