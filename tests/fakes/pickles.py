"""Pickles that run code when loaded the ordinary way, for proving that r3dp's readers never run any of it.

* :class:`RunsCode` pickles as ``exec(code)``.
* :func:`persistence_pickle` writes a network as NVIDIA's *persistence* pickles do (EG3D's ``.pkl`` files): each
  module is ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with its Python source in
  ``meta['module_src']``, which the real loader compiles and runs. Here the source is any code the test chooses.
* :func:`importable_persistence` puts the stand-in persistence module on ``sys.modules`` (needed to pickle, and to
  show that an ordinary ``pickle.loads`` does run the source).
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from collections.abc import Iterator, Mapping

import torch

PERSISTENCE = "torch_utils.persistence"


class RunsCode:
    """Pickles as ``exec(code)``: an ordinary ``pickle.load`` runs ``code``."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def writes_marker(marker) -> str:
    """Python source that creates the file ``marker`` (so a test sees whether it ran)."""
    return f"open({str(marker)!r}, 'w').write('ran')\n"


class _Persistent:
    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def persistence_module() -> types.ModuleType:
    """NVIDIA's ``torch_utils.persistence`` as far as pickling needs it: loading compiles and runs each module's
    embedded source, as the real one does."""
    module = types.ModuleType(PERSISTENCE)

    def _reconstruct_persistent_obj(meta):
        exec(compile(meta["module_src"], "<persistent>", "exec"), {})  # noqa: S102 — what the real one does
        return meta

    _reconstruct_persistent_obj.__module__ = PERSISTENCE
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    return module


#: The one stand-in module: pickle finds ``_reconstruct_persistent_obj`` by name, so it must be this object.
PERSISTENCE_MODULE = persistence_module()


@contextlib.contextmanager
def importable_persistence(module: types.ModuleType = PERSISTENCE_MODULE) -> Iterator[types.ModuleType]:
    """``torch_utils.persistence`` importable for the duration (the previous modules restored afterwards)."""
    saved = {name: sys.modules.get(name) for name in ("torch_utils", PERSISTENCE)}
    sys.modules["torch_utils"], sys.modules[PERSISTENCE] = types.ModuleType("torch_utils"), module
    try:
        yield module
    finally:
        for name, previous in saved.items():
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous


def persistent_network(tensors: Mapping[str, torch.Tensor], buffers: set[str], source: str,
                       init_kwargs: dict | None = None, non_persistent: Mapping[str, torch.Tensor] | None = None,
                       name: str = "G"):
    """A module tree as a persistence pickle records it, from a flat state dict: keys in ``buffers`` are buffers,
    the others parameters; ``non_persistent`` adds buffers that ``state_dict()`` leaves out. Every module carries
    ``source``; the top one ``init_kwargs``."""
    reconstruct = PERSISTENCE_MODULE._reconstruct_persistent_obj
    tree: dict = {}
    for key in [*tensors, *(non_persistent or {})]:
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = key

    def build(node: dict, module_name: str, prefix: str):
        params, buffer_dict, modules, hidden = (collections.OrderedDict(), collections.OrderedDict(),
                                                collections.OrderedDict(), set())
        for part, child in node.items():
            if isinstance(child, dict):
                modules[part] = build(child, part, f"{prefix}{part}.")
            elif non_persistent and child in non_persistent:
                buffer_dict[part] = non_persistent[child]
                hidden.add(part)
            elif child in buffers:
                buffer_dict[part] = tensors[child]
            else:
                params[part] = torch.nn.Parameter(tensors[child], requires_grad=False)
        state = {"_parameters": params, "_buffers": buffer_dict, "_modules": modules,
                 "_non_persistent_buffers_set": hidden, "_init_args": (),
                 "_init_kwargs": (init_kwargs or {}) if not prefix else {}}
        return _Persistent(reconstruct, {"type": "class", "version": 6, "module_src": source,
                                         "class_name": module_name, "state": state})

    return build(tree, name, "")


def persistence_pickle(obj) -> bytes:
    """``pickle.dumps(obj)`` of an object holding :func:`persistent_network` records (as EG3D's ``.pkl`` files)."""
    with importable_persistence():
        return pickle.dumps(obj, protocol=4)
