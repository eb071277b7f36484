"""The data that travels between stages (and along ComfyUI edges).

Plain dataclasses of tensors: no model references, so they can be cached, saved and shared. ``Motion``
and ``Avatar`` round-trip through safetensors files with JSON metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..audio.io import Sound, load_sound
from ..defaults import MOTION_FPS
from ..errors import InputError

_FORMAT_VERSION = "1"


def _save(path: str | Path, kind: str, tensors: dict[str, torch.Tensor | None], meta: dict) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items() if v is not None}
    metadata = {"r3dp_kind": kind, "r3dp_format": _FORMAT_VERSION, "r3dp_meta": json.dumps(meta, sort_keys=True)}
    partial = path.with_name(path.name + ".partial")
    save_file(stored, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def _load(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{kind.capitalize()} file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several error types for damaged files
        raise InputError(f"{path} is not a readable r3dp {kind} file ({type(exc).__name__}); save it again.") from None
    found = metadata.get("r3dp_kind")
    if found != kind:
        raise InputError(f"{path.name} holds {'an r3dp ' + found if found else 'no r3dp data'}, not an r3dp {kind}; "
                         f"load it with the matching loader.")
    return tensors, json.loads(metadata.get("r3dp_meta", "{}"))


@dataclass
class Motion:
    """A driving motion sampled at ``fps``.

    Attributes:
        exp: expression coefficients ``[T,64]`` of the BFM 3DMM.
        fps: frames per second (``MOTION_FPS`` for audio- and video-driven motion, as official).
        euler, trans: head pose ``[T,3]`` each (radians / 3DMM translation), or None for "keep the source pose".
        blink: per-frame eye-closing amplitude ``[T]`` in [0,1], applied by the PNCC stage; None = no blinks.
        blink_edited: ``[T]`` bool, the frames the blink editor touches (the official schedule also edits each
            blink's first frame, where the amplitude is 0); None = where ``blink > 0``.
        audio: the clip's sound, what gets muxed: a ``Sound`` (the clip at its own rate, also a ComfyUI ``AUDIO``
            mapping, with the 16 kHz view natural head motion reads); an ``AUDIO`` dict given here becomes one.
    """

    exp: torch.Tensor
    fps: float = MOTION_FPS
    euler: torch.Tensor | None = None
    trans: torch.Tensor | None = None
    blink: torch.Tensor | None = None
    blink_edited: torch.Tensor | None = None
    audio: Sound | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.audio is not None and not isinstance(self.audio, Sound):
            self.audio = load_sound(self.audio)
        if self.exp.ndim != 2 or self.exp.shape[1] != 64:
            raise InputError(f"Motion expression must be [T,64], got {tuple(self.exp.shape)}.")
        for name in ("euler", "trans"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (self.num_frames, 3):
                raise InputError(f"Motion {name} must be [{self.num_frames},3], got {tuple(value.shape)}.")
        for name in ("blink", "blink_edited"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (self.num_frames,):
                raise InputError(f"Motion {name} must be [{self.num_frames}], got {tuple(value.shape)}.")
        if self.blink_edited is not None:
            if self.blink is None:
                raise InputError("Motion blink_edited needs a blink schedule.")
            self.blink_edited = self.blink_edited.bool()

    @property
    def num_frames(self) -> int:
        return int(self.exp.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def save(self, path: str | Path) -> Path:
        tensors = {"exp": self.exp, "euler": self.euler, "trans": self.trans, "blink": self.blink,
                   "blink_edited": self.blink_edited}
        meta = {"fps": self.fps}
        if self.audio is not None:
            tensors["audio_waveform"] = self.audio["waveform"]
            meta["audio_sample_rate"] = int(self.audio["sample_rate"])
        return _save(path, "motion", tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> Motion:
        tensors, meta = _load(path, "motion")
        audio = None
        if "audio_waveform" in tensors:
            audio = {"waveform": tensors["audio_waveform"], "sample_rate": int(meta["audio_sample_rate"])}
        return cls(exp=tensors["exp"], fps=float(meta.get("fps", MOTION_FPS)), euler=tensors.get("euler"),
                   trans=tensors.get("trans"), blink=tensors.get("blink"), blink_edited=tensors.get("blink_edited"),
                   audio=audio)


@dataclass
class Avatar:
    """One source portrait, prepared once: its 3DMM fit, canonical tri-plane and reference images.

    Attributes:
        image: the cropped source ``[1,3,512,512]`` in [-1,1].
        id, exp: identity ``[1,80]`` and expression ``[1,64]`` coefficients of the fit.
        euler, trans: source head pose ``[1,3]`` each.
        planes: canonical tri-plane ``[1,3,32,256,256]`` (Image→Triplane output).
        head_image: the head-only source fed to Image→Triplane ``[1,3,512,512]`` in [-1,1].
        torso_image: inpainted torso reference ``[1,3,512,512]`` in [-1,1].
        background: background ``[1,3,512,512]`` in [-1,1].
        segmap: 6-class one-hot segmentation ``[1,6,512,512]``.
        photo: the photo as paste-back's canvas ``[H,W,3]`` uint8 (``framing.photo_canvas``: capped, even).
        photo_square: ``[3]`` int64 ``(left, top, side)``: where ``image`` lies on ``photo``, in its pixels.
        other_people: ``[1,1,512,512]`` float, 1 on the other people of the photo inside the square (the
            person classes of ``segmap`` hold only the chosen person; paste-back never changes these pixels), or
            None (one person, or an avatar from an older r3dp).
        face_index: ``[1]`` int64, which face of the photo this is (0, 1, ... from the left), or None (0).
    """

    image: torch.Tensor
    id: torch.Tensor
    exp: torch.Tensor
    euler: torch.Tensor
    trans: torch.Tensor
    planes: torch.Tensor | None = None
    head_image: torch.Tensor | None = None
    torso_image: torch.Tensor | None = None
    background: torch.Tensor | None = None
    segmap: torch.Tensor | None = None
    photo: torch.Tensor | None = None
    photo_square: torch.Tensor | None = None
    other_people: torch.Tensor | None = None
    face_index: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Avatar:
        return Avatar(**{f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
                         for f in fields(self) for v in [getattr(self, f.name)]})

    def save(self, path: str | Path) -> Path:
        return _save(path, "avatar", {f.name: getattr(self, f.name) for f in fields(self)}, {})

    @classmethod
    def load(cls, path: str | Path) -> Avatar:
        tensors, _ = _load(path, "avatar")
        missing = [n for n in ("image", "id", "exp", "euler", "trans") if n not in tensors]
        if missing:
            raise InputError(f"{Path(path).name} is an incomplete avatar file (missing {', '.join(missing)}).")
        return cls(**{f.name: tensors.get(f.name) for f in fields(cls)})


@dataclass
class PortraitMasks:
    """Head (and optionally body) masks of N portraits, in the coordinates of each portrait photo, used instead
    of a segmenter.

    Attributes:
        head: ``[N,H,W]`` (or ``[H,W]`` for one portrait) float in [0,1] or bool, any resolution: the head with
            hair.
        body: ``[N,H,W]`` or ``[H,W]`` of the same size, the rest of the person; None: no torso of its own.
        threshold: a pixel is in a mask when its value is > ``threshold``.
    """

    head: torch.Tensor
    body: torch.Tensor | None = None
    threshold: float = 0.5

    def __post_init__(self):
        self.head = self.head[None] if self.head.ndim == 2 else self.head
        if self.body is not None:
            self.body = self.body[None] if self.body.ndim == 2 else self.body
        for name, mask in (("head", self.head), ("body", self.body)):
            if mask is not None and mask.ndim != 3:
                raise InputError(f"The {name} mask must be [H,W] or [N,H,W], got {tuple(mask.shape)}.")
        if self.body is not None and self.body.shape[-2:] != self.head.shape[-2:]:
            raise InputError(f"The head mask is {self.head.shape[-1]}x{self.head.shape[-2]} but the body mask "
                             f"{self.body.shape[-1]}x{self.body.shape[-2]}; give masks of the same size.")

    def portrait(self, index: int) -> PortraitMasks:
        """The ``[1,H,W]`` masks of portrait ``index``; the last mask serves every later portrait."""
        body = None if self.body is None else self.body[min(index, self.body.shape[0] - 1)][None]
        return PortraitMasks(self.head[min(index, self.head.shape[0] - 1)][None], body, self.threshold)


@dataclass
class GenerateSummary:
    """What a finished ``generate`` job wrote: the mp4, its frames, the render's seconds, peak memory (MB)."""

    path: Path
    frames: int
    seconds: float
    peak_rss_mb: float
    peak_vram_mb: float | None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")
