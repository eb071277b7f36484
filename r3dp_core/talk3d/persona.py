"""A persona: one person's personalised Talk3D model, as a folder.

::

    PERSONA/
      persona.json            format, version, name, how it was made, frame count, source video, notes
      generator.safetensors   the personalised EG3D generator (official TriPlaneGenerator state-dict keys)
      talk3d.safetensors      the five Talk3D networks + null_vector (flat official checkpoint keys)
      identity.safetensors    w_person [1,512]: the person's latent (P_ID = the generator's tri-plane at it)
      tracks.safetensors      per training-video frame (25 fps): yaw_pitch [N,2] (radians, offsets from frontal),
                              and where known head_angles [N,3] (pitch, yaw, roll in degrees, the official
                              head-rotation token input), landmarks [N,6,2] (in [-1,1]), blink [N] (AU45 scale),
                              similarity [N,2,3] (source-video pixels → aligned-crop pixels; paste-back inverts it)

Every tensor file is safetensors (nothing executable); ``persona.json`` is plain JSON. A persona converted from
the official code (``r3dp convert --talk3d``) has no source video, so it animates the aligned 512² crop only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelFileError

PERSONA_FORMAT = "r3dp-persona"
PERSONA_VERSION = 1
FILES = {"generator": "generator.safetensors", "talk3d": "talk3d.safetensors",
         "identity": "identity.safetensors", "tracks": "tracks.safetensors"}
TRACK_SHAPES = {"yaw_pitch": (2,), "head_angles": (3,), "landmarks": (6, 2), "blink": (), "similarity": (2, 3)}


@dataclass
class Persona:
    """A persona's tensors and description (see the module docstring for the folder layout)."""

    generator: dict[str, torch.Tensor]
    networks: dict[str, torch.Tensor]
    w_person: torch.Tensor                              # [1, 512]
    tracks: dict[str, torch.Tensor]                     # yaw_pitch [N,2] and optional per-frame tokens
    info: dict[str, Any] = field(default_factory=dict)  # persona.json

    @property
    def num_frames(self) -> int:
        return int(self.tracks["yaw_pitch"].shape[0])


def check_tracks(tracks: dict[str, torch.Tensor], where: str) -> None:
    """Every track is ``[N, ...]`` with the documented trailing shape and one common N.

    Raises:
        ModelFileError: naming the track and its shape.
    """
    if "yaw_pitch" not in tracks:
        raise ModelFileError(f"{where} has no yaw_pitch track (the training video's cameras).")
    frames = tracks["yaw_pitch"].shape[0]
    for name, value in tracks.items():
        if name not in TRACK_SHAPES:
            raise ModelFileError(f"{where}: unknown track '{name}' (known: {', '.join(TRACK_SHAPES)}).")
        if tuple(value.shape) != (frames, *TRACK_SHAPES[name]):
            raise ModelFileError(f"{where}: track '{name}' is {list(value.shape)}, expected "
                                 f"{[frames, *TRACK_SHAPES[name]]} (one row per training frame).")


def _contents(persona: Persona) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """``persona.json``'s text and each part's tensors (tracks checked first)."""
    check_tracks(persona.tracks, "the persona")
    info = {"format": PERSONA_FORMAT, "version": PERSONA_VERSION, **persona.info, "frames": persona.num_frames}
    tensors = {"generator": persona.generator, "talk3d": persona.networks,
               "identity": {"w_person": persona.w_person}, "tracks": persona.tracks}
    return json.dumps(info, indent=2, sort_keys=True) + "\n", tensors


def _save_part(path: Path, part: str, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
              metadata={"format": PERSONA_FORMAT, "part": part})


def write_persona(folder: str | Path, persona: Persona) -> Path:
    """Write ``persona`` into ``folder`` atomically: into a temporary folder beside it, then renamed into place
    (an existing persona there is replaced only once the new one is complete)."""
    description, tensors = _contents(persona)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    for part, name in FILES.items():
        _save_part(staging / name, part, tensors[part])
    (staging / "persona.json").write_text(description)
    if folder.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, retired / folder.name)
        os.replace(staging, folder)
        for item in (retired / folder.name).iterdir():
            item.unlink()
        (retired / folder.name).rmdir()
        retired.rmdir()
    else:
        os.replace(staging, folder)
    return folder


def write_persona_files(folder: str | Path, persona: Persona) -> Path:
    """Write ``persona``'s files into ``folder`` beside whatever else it holds (``r3dp personalise`` keeps its
    prepared data and checkpoints there). ``persona.json`` goes first and comes back last, and each file is written
    under a temporary name and renamed into place, so a reader sees a complete persona or none (never a mix)."""
    description, tensors = _contents(persona)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "persona.json").unlink(missing_ok=True)
    for part, name in FILES.items():
        temporary = folder / f".{name}.tmp"
        _save_part(temporary, part, tensors[part])
        os.replace(temporary, folder / name)
    temporary = folder / ".persona.json.tmp"
    temporary.write_text(description)
    os.replace(temporary, folder / "persona.json")
    return folder


def read_persona_info(folder: str | Path) -> dict[str, Any]:
    """A persona's ``persona.json``, checked to be an r3dp persona of this format version (nothing else is read).

    Raises:
        ModelFileError: no readable persona.json, not a persona description, or another format version.
    """
    folder = Path(folder)
    try:
        info = json.loads((folder / "persona.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{folder} is not a persona: persona.json cannot be read ({exc}). Make one with "
                             "`r3dp personalise` (a training run writes persona.json only when it is complete) or "
                             "`r3dp convert --talk3d`.") from None
    if not isinstance(info, dict) or info.get("format") != PERSONA_FORMAT:
        raise ModelFileError(f"{folder}/persona.json is not an r3dp persona description.")
    if info.get("version") != PERSONA_VERSION:
        raise ModelFileError(f"{folder} is a version {info.get('version')} persona; this r3dp reads version "
                             f"{PERSONA_VERSION}. Update r3dp, or make the persona again.")
    return info


def read_persona(folder: str | Path) -> Persona:
    """Read a persona folder (no pickles anywhere).

    Raises:
        ModelFileError: not a persona folder, another format version, or a missing or damaged file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    info = read_persona_info(folder)
    parts = {}
    for part, name in FILES.items():
        try:
            parts[part] = load_file(str(folder / name))
        except (OSError, SafetensorError) as exc:
            raise ModelFileError(f"persona {folder}: {name} cannot be read ({exc}).") from None
    if "w_person" not in parts["identity"]:
        raise ModelFileError(f"persona {folder}: identity.safetensors has no w_person.")
    check_tracks(parts["tracks"], f"persona {folder}")
    return Persona(parts["generator"], parts["talk3d"], parts["identity"]["w_person"], parts["tracks"], info)
