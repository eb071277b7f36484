"""Reading a parity case: a ``case_<stage>.safetensors`` file and its JSON sidecar.

The format is described in ``shared/parity/README.md``. Inputs are resolved the way the sidecar says:
stored tensors, tensors borrowed from a sibling case (``source: case_x.safetensors:key``), or tensors
regenerated with the deterministic generators of ``synth_weights.py`` that sits beside the cases.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import InputError
from ..images import u8_image_to_tensor

_SIBLING_SOURCE = re.compile(r"^(case_[\w.-]+\.safetensors):(\w+)")
_GENERATOR_SOURCE = re.compile(
    r"(?:(?P<scale>[-\d.]+)\s*\*\s*)?synth_weights\.(?P<fn>smooth_uniform|uniform01|unit_uniform)"
    r"\(\s*\"(?P<key>[^\"]+)\"\s*,\s*\((?P<shape>[\d,\s]+)\)\s*(?:,\s*(?P<cells>\d+))?\s*\)")
_CONVERTED_SOURCE = re.compile(r"^(\w+) \+ convert")


def segmap_to_onehot(idx_hw: torch.Tensor, num_classes: int = 6) -> torch.Tensor:
    """uint8 class map ``[H,W]`` → one-hot float ``[1,C,H,W]`` (classes: bg, hair, body, face, clothes, other)."""
    return torch.nn.functional.one_hot(idx_hw.long(), num_classes).permute(2, 0, 1).float().unsqueeze(0)


@functools.lru_cache(maxsize=4)
def _load_module(path: str) -> ModuleType:
    name = f"_r3dp_parity_{Path(path).stem}_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=4)
def _synth_state_dict(manifest_path: str) -> dict[str, torch.Tensor]:
    generator = synth_weights_module(Path(manifest_path).parent)
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    return generator.synth_state_dict(manifest)


def synth_weights_module(parity_dir: Path) -> ModuleType:
    """Import the ``synth_weights.py`` that ships beside the parity cases."""
    path = Path(parity_dir) / "synth_weights.py"
    if not path.is_file():
        raise InputError(f"{path} not found: the parity cases need synth_weights.py in the same folder.")
    return _load_module(str(path.resolve()))


def synth_state_dict(parity_dir: Path, model: str) -> dict[str, torch.Tensor]:
    """Deterministic synthetic weights for ``model`` (``secc2plane_torso`` or ``audio2secc_vae``).

    Cached per process; callers must not modify the returned tensors in place.
    """
    path = Path(parity_dir) / f"manifest_{model}.json"
    if not path.is_file():
        raise InputError(f"{path} not found: synthetic weights for {model!r} are built from that manifest.")
    return _synth_state_dict(str(path.resolve()))


@dataclass
class ParityCase:
    """One parity case. ``stage`` names the r3dp stage that must reproduce it."""

    path: Path
    meta: dict[str, Any]
    stored: dict[str, torch.Tensor]
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> ParityCase:
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        sidecar = path.with_suffix(".json")
        if not path.is_file():
            raise InputError(f"Parity case {path} not found.")
        if not sidecar.is_file():
            raise InputError(f"Parity case {path} has no JSON sidecar {sidecar.name} beside it.")
        with open(sidecar) as fh:
            meta = json.load(fh)
        if "case" not in meta or "tensors" not in meta:
            raise InputError(f"{sidecar} is not a parity-case sidecar (no 'case'/'tensors' entries).")
        return cls(path=path, meta=meta, stored=load_file(str(path)))

    @property
    def stage(self) -> str:
        return self.meta["case"]

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def call(self) -> dict[str, Any]:
        return self.meta.get("call", {})

    @property
    def tensors_meta(self) -> dict[str, dict[str, Any]]:
        return self.meta["tensors"]

    def names(self, *roles: str) -> list[str]:
        """Logical tensor names with the given roles (input/output/intermediate)."""
        return [n for n, t in self.tensors_meta.items() if not roles or t.get("role") in roles]

    def tensor(self, name: str) -> torch.Tensor:
        """An input (or any stored tensor) by its logical name, resolved as the sidecar describes."""
        if name not in self._cache:
            self._cache[name] = self._resolve(name)
        return self._cache[name]

    def quirk_pixels(self, name: str) -> list[list[int]]:
        """``[b, row, col]`` pixels where the reference shows an official quirk and must be matched exactly.

        The SECC case lists them (the face-0 mask quirk) on each call's ``secc_*`` tensor; the same pixels hold
        for that call's ``mask_*``.
        """
        info = self.tensors_meta.get(name, {})
        if "quirk_pixels" in info:
            return info["quirk_pixels"]
        if name.startswith("mask_"):
            return self.tensors_meta.get("secc_" + name[len("mask_"):], {}).get("quirk_pixels", [])
        return []

    def image(self, name: str) -> torch.Tensor:
        """A uint8 HWC image input as float ``[1,3,H,W]`` in [-1,1] (the official conversion)."""
        return u8_image_to_tensor(self.tensor(name))

    def state_dict(self, model: str = "secc2plane_torso") -> dict[str, torch.Tensor]:
        return synth_state_dict(self.dir, model)

    def config(self, model: str = "secc2plane_torso") -> dict[str, Any]:
        with open(self.dir / f"config_{model}.json") as fh:
            return json.load(fh)

    def synth_weights(self) -> ModuleType:
        return synth_weights_module(self.dir)

    def _resolve(self, name: str) -> torch.Tensor:
        if name not in self.tensors_meta:
            if name in self.stored:
                return self.stored[name]
            raise KeyError(f"{self.path.name} has no tensor named {name!r}")
        info = self.tensors_meta[name]
        stored = info.get("stored", {})
        if stored.get("mode") == "full":
            return self.stored[stored.get("keys", [name])[0]]
        if stored.get("mode") == "full_float16_exact":  # float16-exact values kept as float16: widening is lossless
            return self.stored[stored.get("keys", [name])[0]].to(getattr(torch, info.get("dtype", "float32")))
        source = info.get("source", "")
        if m := _SIBLING_SOURCE.match(source):
            sibling = self.dir / m.group(1)
            if not sibling.is_file():
                raise InputError(f"{name} of {self.path.name} comes from {sibling.name}, which is not beside it.")
            return load_file(str(sibling))[m.group(2)]
        if m := _GENERATOR_SOURCE.search(source):
            return self._regenerate(m, info)
        if m := _CONVERTED_SOURCE.match(source):
            return u8_image_to_tensor(self.tensor(m.group(1)))
        raise KeyError(f"cannot resolve input {name!r} of {self.path.name}: source {source!r}")

    def _regenerate(self, m: re.Match, info: dict[str, Any]) -> torch.Tensor:
        generator = getattr(self.synth_weights(), m.group("fn"))
        shape = tuple(int(s) for s in m.group("shape").split(",") if s.strip())
        args = (m.group("key"), shape) + ((int(m.group("cells")),) if m.group("cells") else ())
        values = generator(*args)
        scale = float(m.group("scale")) if m.group("scale") else 1.0
        out = torch.from_numpy(scale * values if scale != 1.0 else values)
        return out.to(getattr(torch, info.get("dtype", "float32")))
