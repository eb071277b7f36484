"""The official Talk3D files, read safely and checked against r3dp's networks.

* The trainer's checkpoint (``Trainer.save_model_weights``, ``torch.save``): five state dicts, ``null_vector`` and
  whole pickled ``optimizer`` / ``scheduler`` objects, which are skipped without running anything; a ``*_tune.pt``
  may also hold ``superresolution``: EG3D's own SR (used) or a GFPGAN (not built by r3dp: ignored, said so).
* EG3D generator pickles: the FFHQ ``ffhq-fixed-triplane512-128.pkl`` (its ``G_ema``) and VIVE3D's personalised
  ``G_tune.pkl``. Both are NVIDIA *persistence* pickles that embed their networks' source code and execute it on
  load; r3dp reads the tensors out without compiling or running any of it (:mod:`r3dp_core.inert_pickle`).
* ``inversion_w_person.pt`` (``w_ID [1,512]``) and ``inversion_0-0_angles.pt`` (per-frame yaw/pitch ``[N,2]``).

Every reader checks keys and shapes against the model r3dp builds (on the meta device, nothing allocated): a
tensor that inference needs and that is missing or misshapen is refused with its name; extras are listed.
"""

from __future__ import annotations

import functools
import types
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..inert_pickle import Inert, load_inert, module_state_dict, persistent_state
from .model import MODULES

#: The generator buffer VIVE3D registers after construction; no forward pass reads it.
UNUSED_GENERATOR_BUFFERS = ("dataset_label_std",)


@dataclass
class CheckedWeights:
    """A state dict with official keys that matched the model, plus what the file held beyond it."""

    state_dict: dict[str, torch.Tensor]
    extras: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def expected_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Size]:
    """Keys and shapes of ``build()``'s state dict, built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        module = build()
    return {key: value.shape for key, value in module.state_dict().items()}


def check_weights(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], what: str,
                  optional: Mapping[str, torch.Tensor] | None = None) -> CheckedWeights:
    """``given`` restricted to ``expected``'s keys, refused if one is missing or misshapen.

    ``optional`` keys may be absent: their default value is used and a note says so.
    """
    optional = dict(optional or {})
    missing = [k for k in expected if k not in given and k not in optional]
    wrong = [(k, tuple(given[k].shape), tuple(expected[k])) for k in expected
             if k in given and tuple(given[k].shape) != tuple(expected[k])]
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            problems.append(f"{len(wrong)} misshapen (e.g. " + ", ".join(
                f"{k} {got} instead of {want}" for k, got, want in wrong[:3]) + ")")
        raise ModelFileError(f"{what} does not hold the tensors r3dp needs: {'; '.join(problems)}. It is not the "
                             "official file, or it is damaged; download or export it again.")
    checked = CheckedWeights({k: given[k] if k in given else optional[k] for k in expected})
    checked.extras = sorted(k for k in given if k not in expected)
    checked.notes = [f"{k} was absent and set to its default (no inference step reads it)"
                     for k in optional if k not in given]
    return checked


@functools.cache
def talk3d_shapes() -> Mapping[str, torch.Size]:
    """Keys and shapes of :class:`Talk3DNetworks` at the official configuration (built once, read-only)."""
    from .model import Talk3DNetworks
    return types.MappingProxyType(expected_shapes(Talk3DNetworks))


@functools.cache
def generator_shapes() -> Mapping[str, torch.Size]:
    """Keys and shapes of the EG3D generator at the official configuration (built once, read-only)."""
    from .eg3d_generator import TriPlaneGenerator
    return types.MappingProxyType(expected_shapes(TriPlaneGenerator))


def superresolution_shapes() -> dict[str, torch.Size]:
    return {k[len("superresolution."):]: v for k, v in generator_shapes().items() if k.startswith("superresolution.")}


def is_talk3d_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a ``torch.save`` archive whose pickle names the Talk3D U-Net (read without unpickling)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return len(pickles) == 1 and b"deltaplane_predictor" in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass
class Talk3DCheckpoint:
    """The official checkpoint's networks (flat ``<module>.<key>`` keys) and, from a ``*_tune.pt``, EG3D's
    fine-tuned SR (``superresolution.*`` keys of the generator) when that is what it holds."""

    networks: CheckedWeights
    superresolution: dict[str, torch.Tensor] | None = None


def read_talk3d_checkpoint(path: str | Path) -> Talk3DCheckpoint:
    """Read an official Talk3D checkpoint without running its pickled optimizer or scheduler.

    Raises:
        ModelFileError: not a Talk3D checkpoint, or a module's tensors missing or misshapen.
    """
    path = Path(path)
    content = load_inert(path)
    if not isinstance(content, dict) or not all(name in content for name in MODULES):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ModelFileError(f"{path} is not a Talk3D checkpoint: it should hold {', '.join(MODULES)} and "
                             f"null_vector (found {found}).")
    flat: dict[str, torch.Tensor] = {}
    for name in MODULES:
        if not isinstance(content[name], dict):
            raise ModelFileError(f"{path}: '{name}' is a {type(content[name]).__name__}, not a state dict.")
        flat.update({f"{name}.{key}": value for key, value in content[name].items()})
    if isinstance(content.get("null_vector"), torch.Tensor):
        flat["null_vector"] = content["null_vector"]
    networks = check_weights(flat, talk3d_shapes(), f"Talk3D checkpoint {path}")
    skipped = [k for k in content if k not in (*MODULES, "null_vector", "superresolution")]
    if skipped:
        networks.notes.append(f"skipped training state {', '.join(map(str, skipped))} (never unpickled into "
                              "objects)")
    checkpoint = Talk3DCheckpoint(networks)
    sr = content.get("superresolution")
    if isinstance(sr, dict) and sr:
        tensors = {k.removeprefix("superresolution."): v for k, v in sr.items() if isinstance(v, torch.Tensor)}
        shapes = superresolution_shapes()
        if set(tensors) >= set(shapes) and all(tuple(tensors[k].shape) == tuple(s) for k, s in shapes.items()):
            checkpoint.superresolution = {f"superresolution.{k}": tensors[k] for k in shapes}
            networks.notes.append("used the fine-tuned EG3D super-resolution in 'superresolution'")
        else:
            networks.notes.append("ignored 'superresolution': it is not EG3D's SR (the official GFPGAN fine-tune, "
                                  "which r3dp does not build); the generator's own EG3D SR is used")
    return checkpoint


def read_eg3d_generator(path: str | Path) -> tuple[CheckedWeights, dict]:
    """The generator of an EG3D persistence pickle (``G_ema`` of the FFHQ pickle, or a pickled ``G_tune``) and
    its constructor kwargs, read without executing the pickle's embedded source.

    Raises:
        ModelFileError: no generator in the file, or tensors missing or misshapen.
    """
    path = Path(path)
    content = load_inert(path)
    notes = []
    if isinstance(content, dict):
        if "G_ema" not in content:
            raise ModelFileError(f"{path} holds {sorted(map(str, content))}, not an EG3D generator (G_ema).")
        notes.append(f"took G_ema; ignored {', '.join(str(k) for k in content if k != 'G_ema')}")
        content = content["G_ema"]
    if not isinstance(content, Inert):
        raise ModelFileError(f"{path} holds a {type(content).__name__}, not a pickled EG3D generator.")
    state_dict = module_state_dict(content)
    _, init_kwargs = persistent_state(content)
    defaults = {k: torch.ones(s) for k, s in generator_shapes().items() if k in UNUSED_GENERATOR_BUFFERS}
    checked = check_weights(state_dict, generator_shapes(), f"EG3D generator {path}", optional=defaults)
    checked.notes = notes + checked.notes
    return checked, init_kwargs


def read_tensor_file(path: str | Path, what: str, trailing_shape: tuple[int, ...]) -> torch.Tensor:
    """A ``torch.save``-d tensor such as ``inversion_w_person.pt`` (``[1,512]``) or ``inversion_0-0_angles.pt``
    (``[N,2]``): float32, its trailing dimensions checked.

    Raises:
        ModelFileError: not a tensor, or another shape.
    """
    value = load_inert(path)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        value = torch.stack([v.reshape(-1) for v in value])
    if not isinstance(value, torch.Tensor):
        raise ModelFileError(f"{path} should hold {what}, a tensor; it holds a {type(value).__name__}.")
    if value.ndim < len(trailing_shape) or tuple(value.shape[value.ndim - len(trailing_shape):]) != trailing_shape:
        raise ModelFileError(f"{path} should hold {what} [..., {', '.join(map(str, trailing_shape))}]; its shape "
                             f"is {list(value.shape)}.")
    return value.detach().float()


#: Files of an official person folder (``DATA_ROOT/ID``) that are data, not the trainer's checkpoint.
_DATA_FILES = {"angles.pt", "landmarks.pt", "inversion_w_person.pt", "inversion_0-0_angles.pt",
               "inversion_w_offsets.pt", "inversion_angles.pt", "ID_triplane.pt"}


def find_talk3d_checkpoint(folder: str | Path) -> Path:
    """The trainer's checkpoint in an official person folder (or its ``checkpoints/``): a ``*_tune.pt`` first,
    then the newest.

    Raises:
        ModelFileError: none found (pass ``--checkpoint``).
    """
    folder = Path(folder)
    candidates = [p for d in (folder, folder / "checkpoints") if d.is_dir() for p in d.iterdir()
                  if p.suffix in (".pt", ".pth") and p.name not in _DATA_FILES and is_talk3d_checkpoint(p)]
    if not candidates:
        raise ModelFileError(f"no Talk3D checkpoint (a .pt holding deltaplane_predictor) in {folder} or "
                             f"{folder / 'checkpoints'}; name it with --checkpoint.")
    return max(candidates, key=lambda p: (p.stem.endswith("_tune"), p.stat().st_mtime))


def read_au45(path: str | Path) -> torch.Tensor:
    """The ``AU45_r`` column of an OpenFace ``au.csv`` (blink intensity, one row per frame): ``[N]`` float32."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = [name.strip() for name in rows[0]] if rows else []
    if "AU45_r" not in header:
        raise ModelFileError(f"{path} has no AU45_r column; it should be OpenFace 2.0's per-frame AU table.")
    column = header.index("AU45_r")
    try:
        return torch.tensor([float(row[column]) for row in rows[1:] if row], dtype=torch.float32)
    except (ValueError, IndexError) as exc:
        raise ModelFileError(f"{path}: an AU45_r value cannot be read ({exc}).") from None


def _optional_tracks(folder: Path, frames: int, notes: list[str]) -> dict[str, torch.Tensor]:
    tracks = {}
    sources = {"head_angles": ("angles.pt", "head angles (pitch, yaw, roll)", (3,)),
               "landmarks": ("landmarks.pt", "six landmarks", (6, 2))}
    for name, (file, what, trailing) in sources.items():
        if (folder / file).is_file():
            tracks[name] = read_tensor_file(folder / file, what, trailing).reshape(-1, *trailing)
    if (folder / "au.csv").is_file():
        tracks["blink"] = read_au45(folder / "au.csv")
    for name in list(tracks):
        count = tracks[name].shape[0]
        if count > frames:
            notes.append(f"{name}: {count} rows for {frames} frames; the first {frames} kept")
            tracks[name] = tracks[name][:frames]
        elif count < frames:
            notes.append(f"{name}: only {count} rows for {frames} frames; left out (the per-frame tokens fall back "
                         "to their neutral values)")
            del tracks[name]
    return tracks


def convert_official_person(folder: str | Path, out: str | Path, checkpoint: str | Path | None = None,
                            name: str | None = None):
    """A person trained with the official code → an r3dp persona folder.

    Reads ``G_tune.pkl``, ``inversion_w_person.pt``, ``inversion_0-0_angles.pt`` and the trainer's checkpoint
    (found in the folder or ``checkpoint``), plus ``angles.pt``, ``landmarks.pt`` and ``au.csv`` when present,
    all without running pickled code. Returns ``(persona folder, notes)``.

    Raises:
        ModelFileError: a required file missing, unreadable, or not matching r3dp's networks.
    """
    from .persona import Persona, write_persona

    folder = Path(folder)
    for required in ("G_tune.pkl", "inversion_w_person.pt", "inversion_0-0_angles.pt"):
        if not (folder / required).is_file():
            raise ModelFileError(f"{folder} has no {required}: an official Talk3D person folder holds G_tune.pkl, "
                                 "inversion_w_person.pt and inversion_0-0_angles.pt (made by the official "
                                 "personalize_generator.py and invert_video.py).")
    checkpoint = Path(checkpoint) if checkpoint else find_talk3d_checkpoint(folder)
    talk3d = read_talk3d_checkpoint(checkpoint)
    generator, init_kwargs = read_eg3d_generator(folder / "G_tune.pkl")
    if talk3d.superresolution:
        generator.state_dict.update(talk3d.superresolution)
    w_person = read_tensor_file(folder / "inversion_w_person.pt", "w_person", (512,)).reshape(1, 512)
    yaw_pitch = read_tensor_file(folder / "inversion_0-0_angles.pt", "per-frame yaw and pitch", (2,)).reshape(-1, 2)
    notes = [*talk3d.networks.notes, *generator.notes]
    tracks = {"yaw_pitch": yaw_pitch, **_optional_tracks(folder, yaw_pitch.shape[0], notes)}
    extras = [f"checkpoint: {k}" for k in talk3d.networks.extras] + [f"G_tune.pkl: {k}" for k in generator.extras]
    if extras:
        notes.append(f"ignored {len(extras)} tensors r3dp does not use (e.g. {', '.join(extras[:3])})")
    info = {"name": name or folder.name, "made_by": "r3dp convert --talk3d",
            "source": {"official_folder": str(folder.resolve()), "checkpoint": str(checkpoint.resolve())},
            "source_video": None, "official_generator_kwargs": _jsonable(init_kwargs), "notes": notes}
    persona = Persona(generator.state_dict, talk3d.networks.state_dict, w_person, tracks, info)
    return write_persona(out, persona), notes


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)[:200]
