"""Animating a persona with new speech: the persona's model, the per-frame drive, cameras, frames, paste-back.

A persona (:mod:`r3dp_core.talk3d.persona`, trained by ``r3dp personalise``) is rendered as in training
(:func:`~r3dp_core.talk3d.personalise.training.render_frames`): per output frame, conditioning tokens (the new
speech's wav2vec2 windows, a blink value, head-rotation angles and three landmarks) → ΔP = U-Net(P_ID, tokens) →
``generator.render(P_ID, ws, camera(yaw, pitch), delta_planes=ΔP)`` and EG3D's (fine-tuned) super-resolution.

The steps, each usable on its own (the ComfyUI nodes call them one per node, ``r3dp generate --persona`` in a row):

* :func:`load_persona_model` — the folder → :class:`PersonaModel` (networks built for its architecture, strictly
  loaded, on a device);
* :func:`drive_from_speech` — a sound → :class:`PersonaDrive`: ``N = round(25 × seconds)`` frames of audio windows,
  blink, head tokens and the training frame each output frame replays (``source_frames``, forward then backward);
* :func:`persona_cameras` — the drive's cameras ``[N, 2]`` (yaw, pitch): the training video's (``replay``) or a
  head pose of the one-shot path mapped to the persona's LookAt camera;
* :func:`persona_frames` — the frames, chunk by chunk (ΔP of one chunk at a time: memory flat in clip length;
  each frame's renderer noise seeded by its own index, so the chunk size never changes a frame);
* :func:`paste_into_source` — the frames pasted back into the training video's frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ModelFileError
from ..host import HERE, Host
from .eg3d_generator import TriPlaneGenerator
from .model import Talk3DNetworks

#: Frames per second of every persona clip (Talk3D reads and writes 25 fps).
FPS = 25
BLINK_MODES = ("schedule", "replay", "none")
HEAD_TOKEN_MODES = ("neutral", "replay")
#: The AU45 value of fully shut eyes (the blink token's range is [0, 2]; open eyes read about 0).
AU45_SHUT = 2.0
#: Paste-back: the face ellipse's half axes (fractions of the crop side) and its feathered rim (fraction of the
#: ellipse radius over which the mask falls from 1 to 0).
PASTE_ELLIPSE = (0.44, 0.48)
PASTE_FEATHER = 0.18
#: Paste-back: source frames decoded together when a run of them plays backward (bounded memory).
BACKWARD_BLOCK = 16


# --- the model ------------------------------------------------------------------------------------------------------

@dataclass
class PersonaModel:
    """A loaded persona: everything a render needs (the ``R3DP_PERSONA`` value of the ComfyUI nodes).

    Attributes:
        folder: the persona folder.
        info: ``persona.json`` (``architecture`` ``tiny``/``full``, ``source_video`` {path, sha256, start, end}, ...).
        generator: the personalised EG3D generator, eval mode, no gradients, its fine-tuned SR loaded.
        networks: the Talk3D token encoders + Deltaplane U-Net, eval mode, no gradients.
        w_person: ``[1, w_dim]`` the person's latent.
        tracks: the training video's per-frame tracks (CPU float32): ``yaw_pitch`` ``[M, 2]`` radians, and where
            known ``head_angles`` ``[M, 3]`` degrees, ``landmarks`` ``[M, 6, 2]`` in about [-1, 1], ``blink`` ``[M]``
            AU45 in [0, 2], ``similarity`` ``[M, 2, 3]`` source-video pixels → crop pixels.
        image_size: side S of the rendered frames (512; the tiny architecture 64).
    """

    folder: Path
    info: dict[str, Any]
    generator: TriPlaneGenerator
    networks: Talk3DNetworks
    w_person: torch.Tensor
    tracks: dict[str, torch.Tensor]
    image_size: int
    _identity: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _video: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        """M: frames of the training video (25 fps)."""
        return int(self.tracks["yaw_pitch"].shape[0])

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.folder.name)

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def identity(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P_ID [1, 96, R, R], ws [1, num_ws, w_dim])`` on the generator's current device (R = 256; tiny 16),
        computed once per device (backbone noise ``'const'``)."""
        from .personalise.training import identity_planes

        device = self.generator.device
        if device not in self._identity:
            self._identity.clear()
            self._identity[device] = identity_planes(self.generator, self.w_person)
        return self._identity[device]

    def source_video(self, given: str | Path | None = None) -> Path:
        """The training video, checked against the SHA-256 the persona stores (:func:`find_source_video`); the
        hash of a file is computed once per loaded persona."""
        key = str(given)
        if key not in self._video:
            self._video[key] = find_source_video(self.info, given, name=self.name)
        return self._video[key]

    def to(self, device: str | torch.device) -> PersonaModel:
        """Move the generator and the networks to ``device`` (in place); returns self."""
        self.generator.to(device)
        self.networks.to(device)
        return self


def find_source_video(info: dict[str, Any], given: str | Path | None = None, *, name: str = "") -> Path:
    """A persona's training video: ``given`` when not None, else the path persona.json stores
    (``info["source_video"]["path"]``), accepted only when its SHA-256 is the stored one.

    Raises:
        InputError: the persona has no source video (converted from the official code), the file is missing,
            or its bytes are not the training video's (with what to pass instead).
    """
    from .personalise.video_frames import video_sha256

    name = name or str(info.get("name") or "")
    source = info.get("source_video") or {}
    expected = source.get("sha256")
    if not expected:
        raise InputError(f"persona {name} has no source video (it was converted from the official code, which does "
                         "not record one): it can only be animated as the aligned face crop; use --output crop.")
    if given is None:
        stored = source.get("path")
        path = Path(stored) if stored else None
        if path is None or not path.is_file():
            raise InputError(f"persona {name} was trained from {stored}, which is not there any more (moved or "
                             "deleted). Pass the training video with --video (the Paste Back node's video input): it "
                             "is checked by its SHA-256, so any copy of the same file works.")
    else:
        path = Path(given)
        if not path.is_file():
            raise InputError(f"{path}: the source video does not exist. Give the video persona {name} was trained "
                             "from.")
    if video_sha256(path) != expected:
        raise InputError(f"{path} is not the video persona {name} was trained from (its SHA-256 differs from the "
                         f"recorded {expected[:12]}…). Paste-back needs that exact file: pass it with --video, or use "
                         "--output crop.")
    return path


def _architecture(info: dict[str, Any], folder: Path):
    """The (generator config, networks config) of persona.json's ``architecture``."""
    from .config import Talk3DConfig
    from .eg3d_generator import EG3DGeneratorConfig
    from .personalise.presets import get_preset

    kind = info.get("architecture", "full")
    if kind == "tiny":
        preset = get_preset("tiny")
        return preset.generator, preset.networks
    if kind == "full":
        return EG3DGeneratorConfig(), Talk3DConfig()
    raise ModelFileError(f"persona {folder}: unknown architecture {kind!r} in persona.json (this r3dp knows 'tiny' "
                         "and 'full'). Update r3dp, or make the persona again.")


def load_persona_model(folder: str | Path, device: str | torch.device = "auto") -> PersonaModel:
    """Read a persona folder and build its networks for inference.

    The architecture is persona.json's ``architecture`` (``tiny``: the tiny preset's configs; otherwise the
    official sizes); every weight is loaded strictly (the generator file holds the fine-tuned super-resolution).

    Args:
        folder: the persona folder (``persona.json`` + safetensors).
        device: ``auto`` (cuda, mps or cpu), or any torch device.

    Raises:
        ModelFileError: not a persona, another format version, a damaged file, or weights of another shape.
    """
    from ..checkpoint import load_into
    from ..device import resolve_device
    from .persona import read_persona

    folder = Path(folder)
    persona = read_persona(folder)
    generator_config, networks_config = _architecture(persona.info, folder)
    generator = TriPlaneGenerator(generator_config)
    load_into(generator, persona.generator, source=f"persona {folder} generator.safetensors")
    networks = Talk3DNetworks(networks_config)
    load_into(networks, persona.networks, source=f"persona {folder} talk3d.safetensors")
    target = resolve_device(device)
    generator = generator.to(target).eval().requires_grad_(False)
    networks = networks.to(target).eval().requires_grad_(False)
    tracks = {name: value.float().cpu() for name, value in persona.tracks.items()}
    return PersonaModel(folder, dict(persona.info), generator, networks, persona.w_person.float().cpu(), tracks,
                        int(generator_config.superresolution.img_resolution))


# --- the drive ------------------------------------------------------------------------------------------------------

@dataclass
class PersonaDrive:
    """What drives N output frames (N = round(25 × the speech's seconds)); CPU tensors.

    Attributes:
        audio_features: ``[N, 16, 44]`` float32 wav2vec2 windows of the new speech (the official ``aud_eo``; the
            speech gives N + 1 windows, the last is dropped).
        eye: ``[N]`` float32 blink token input, AU45 scale in [0, 2] (0 open, 2 shut).
        head_angles: ``[N, 3]`` float32 head pitch, yaw, roll (degrees) of the head-rotation token.
        landmarks: ``[N, 6, 2]`` float32 the six landmarks in about [-1, 1] (the token reads three of them).
        source_frames: ``[N]`` int64: the training frame each output frame replays — ``0, 1, …, M−1, M−2, …, 0,
            1, …`` (forward, then backward, and so on, when the speech is longer than the training video).
        sound: the speech (:class:`~r3dp_core.audio.io.Sound`), what the mp4 carries.
        blink: the blink mode used; head_tokens: the head-token mode used; seed: the blink schedule's seed.
    """

    audio_features: torch.Tensor
    eye: torch.Tensor
    head_angles: torch.Tensor
    landmarks: torch.Tensor
    source_frames: torch.Tensor
    sound: Any
    blink: str = "schedule"
    head_tokens: str = "neutral"
    seed: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.source_frames.shape[0])

    @property
    def fps(self) -> int:
        return FPS

    @property
    def tracks(self) -> dict[str, torch.Tensor]:
        """The per-frame token inputs under the prepared video's track names (``blink``, ``head_angles``,
        ``landmarks``), so that :func:`~r3dp_core.talk3d.personalise.training.frame_tokens` reads a drive as it
        reads a prepared video."""
        return {"blink": self.eye, "head_angles": self.head_angles, "landmarks": self.landmarks}


def frame_count(seconds: float) -> int:
    """Output frames of ``seconds`` of speech: ``round(25 × seconds)`` (at least 1)."""
    return max(1, int(round(FPS * float(seconds))))


def ping_pong(num_frames: int, period: int) -> torch.Tensor:
    """``[num_frames]`` int64 indices into ``period`` frames played forward then backward without repeating the
    turning frames: ``0, 1, …, P−1, P−2, …, 1, 0, 1, …`` (all 0 when ``period`` is 1)."""
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")
    index = torch.arange(num_frames)
    if period == 1:
        return torch.zeros(num_frames, dtype=torch.long)
    cycle = 2 * (period - 1)
    r = index % cycle
    return torch.where(r < period, r, cycle - r).long()


def speech_windows(sound, wav2vec2_model, num_frames: int, *, stream_config=None) -> torch.Tensor:
    """The speech's wav2vec2 windows ``[num_frames, 16, 44]`` float32 (CPU): streamed logits
    (:func:`~r3dp_core.talk3d.audio_features.stream_logits`) cut into the official ``aud_eo`` windows, the extra
    window(s) dropped, zero-padded if the speech gives fewer."""
    from .audio_features import StreamConfig, stream_logits, unfold_windows

    wave = sound.at_16k().hubert_channel() if hasattr(sound, "at_16k") else np.asarray(sound, np.float32)
    logits = stream_logits(wav2vec2_model, wave, stream_config or StreamConfig())
    windows = unfold_windows(logits).float()[:num_frames]
    if windows.shape[0] < num_frames:
        windows = torch.cat([windows, windows.new_zeros(num_frames - windows.shape[0], *windows.shape[1:])])
    return windows.contiguous()


def blink_track(persona: PersonaModel, mode: str, num_frames: int, source_frames: torch.Tensor, seed: int
                ) -> torch.Tensor:
    """``[N]`` blink token input (AU45, [0, 2]) for ``mode``: ``schedule`` r3dp's blink schedule
    (:func:`~r3dp_core.geometry.blink.blink_schedule`, seeded; closure 0–1 → AU45 0–2), ``replay`` the training
    video's blink track at ``source_frames`` (zeros when the persona has none), ``none`` zeros (eyes open)."""
    if mode == "schedule":
        from ..geometry.blink import blink_schedule

        return (blink_schedule(num_frames, seed=int(seed)).closure * AU45_SHUT).float()
    if mode == "replay":
        blink = persona.tracks.get("blink")
        return blink[source_frames].float().clone() if blink is not None else torch.zeros(num_frames)
    if mode == "none":
        return torch.zeros(num_frames)
    raise InputError(f"Unknown blink mode {mode!r}: use one of {', '.join(BLINK_MODES)}.")


def head_token_tracks(persona: PersonaModel, mode: str, source_frames: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(head_angles [N, 3], landmarks [N, 6, 2])`` for ``mode``: ``neutral`` the training video's mean (every
    frame the same), ``replay`` the tracks at ``source_frames``. A persona without these tracks (converted) gets
    zeros."""
    if mode not in HEAD_TOKEN_MODES:
        raise InputError(f"Unknown head-token mode {mode!r}: use one of {', '.join(HEAD_TOKEN_MODES)}.")
    count = int(source_frames.shape[0])
    out = []
    for name, shape in (("head_angles", (3,)), ("landmarks", (6, 2))):
        track = persona.tracks.get(name)
        if track is None:
            out.append(torch.zeros(count, *shape))
        elif mode == "replay":
            out.append(track[source_frames].float().clone())
        else:
            out.append(track.float().mean(0, keepdim=True).expand(count, *shape).clone())
    return out[0], out[1]


def drive_from_speech(persona: PersonaModel, sound, wav2vec2_model, *, blink: str = "schedule",
                      head_tokens: str = "neutral", seed: int = 0, stream_config=None) -> PersonaDrive:
    """The drive of a persona by new speech.

    Args:
        persona: the loaded persona.
        sound: the speech: a :class:`~r3dp_core.audio.io.Sound` (or anything :func:`~r3dp_core.audio.io.load_sound`
            reads: a path, a ComfyUI ``AUDIO`` dict).
        wav2vec2_model: Talk3D's wav2vec2 CTC model (``audio_features.load_wav2vec2_folder``), on any device.
        blink: ``schedule`` (r3dp's periodic blink, seeded), ``replay`` (the training video's blinks at
            ``source_frames``) or ``none``.
        head_tokens: ``neutral`` (the training video's mean head angles and landmarks) or ``replay`` (those of
            ``source_frames``; paste-back needs them).
        seed: the blink schedule's seed.
        stream_config: wav2vec2's streaming contexts (``audio_features.stream_config_for(folder)``; official when
            None).

    Returns:
        :class:`PersonaDrive` of N = round(25 × seconds) frames.

    Raises:
        InputError: an unknown mode, or a speech shorter than one frame.
    """
    from ..audio.io import load_sound

    if blink not in BLINK_MODES:
        raise InputError(f"Unknown blink mode {blink!r}: use one of {', '.join(BLINK_MODES)}.")
    sound = load_sound(sound) if not hasattr(sound, "at_16k") else sound
    seconds = sound.at_16k().duration_s
    if seconds * FPS < 0.5:
        raise InputError(f"the speech is {seconds:.3f} s long: less than one 25 fps frame; give at least 0.2 s.")
    count = frame_count(seconds)
    source_frames = ping_pong(count, persona.num_frames)
    windows = speech_windows(sound, wav2vec2_model, count, stream_config=stream_config)
    eye = blink_track(persona, blink, count, source_frames, seed)
    angles, landmarks = head_token_tracks(persona, head_tokens, source_frames)
    return PersonaDrive(windows, eye, angles, landmarks, source_frames, sound, blink, head_tokens, int(seed))


# --- cameras --------------------------------------------------------------------------------------------------------

def euler_to_yaw_pitch(euler: torch.Tensor) -> torch.Tensor:
    """One-shot head poses → persona cameras: ``euler [N, 3]`` (pitch, yaw, roll radians, the one-shot path's
    :mod:`~r3dp_core.geometry.camera` convention) → ``[N, 2]`` (yaw, pitch) of the EG3D LookAt camera that looks at
    the official pivot from the same direction (float32, CPU).

    The one-shot camera sits along ``R(pitch, yaw, 0)·ẑ`` (roll dropped; translation is not used) and the LookAt
    camera along ``(sin φ sin yaw, cos φ, sin φ cos yaw)`` with ``cos φ = −2·pitch/π``; equal directions give equal
    views, so a +15° yaw turns the rendered head the same way in both families.
    """
    from ..geometry.bfm import compute_rotation

    angles = euler.detach().to("cpu", torch.float64).reshape(-1, 3).clone()
    angles[:, 2] = 0.0
    direction = compute_rotation(angles)[:, :, 2]
    direction = direction / direction.norm(dim=-1, keepdim=True)
    yaw = torch.atan2(direction[:, 0], direction[:, 2])
    pitch = -(math.pi / 2) * direction[:, 1].clamp(-1.0, 1.0)
    return torch.stack([yaw, pitch], dim=-1).float()


def yaw_pitch_to_euler(yaw_pitch: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`euler_to_yaw_pitch`: ``[N, 2]`` LookAt (yaw, pitch) → ``[N, 3]`` (pitch, yaw, 0) of
    the one-shot convention (float32, CPU)."""
    values = yaw_pitch.detach().to("cpu", torch.float64).reshape(-1, 2)
    yaw, pitch = values[:, 0], values[:, 1]
    cos_phi = (-2 * pitch / math.pi).clamp(-1.0, 1.0)
    sin_phi = (1 - cos_phi ** 2).clamp_min(0).sqrt()
    wanted = torch.stack([sin_phi * torch.sin(yaw), cos_phi, sin_phi * torch.cos(yaw)], dim=-1)
    # the one-shot rotation (roll 0) puts the camera along R·ẑ = (−sin yaw, sin pitch·cos yaw, cos pitch·cos yaw)
    euler_yaw = -torch.asin(wanted[:, 0].clamp(-1.0, 1.0))
    euler_pitch = torch.atan2(wanted[:, 1], wanted[:, 2])
    return torch.stack([euler_pitch, euler_yaw, torch.zeros_like(yaw)], dim=-1).float()


def neutral_yaw_pitch(persona: PersonaModel) -> torch.Tensor:
    """``[1, 2]`` the persona's resting camera: the mean of the training video's (yaw, pitch)."""
    return persona.tracks["yaw_pitch"].float().mean(0, keepdim=True)


def persona_cameras(persona: PersonaModel, drive: PersonaDrive, pose: Any = "replay") -> torch.Tensor:
    """The drive's cameras ``[N, 2]`` (yaw, pitch) radians (float32, CPU), for ``generator.cameras``.

    Args:
        pose: ``"replay"`` — the training video's cameras at ``drive.source_frames``; ``"neutral"`` — the mean
            training camera held; a :class:`~r3dp_core.geometry.camera.HeadPose` or an ``euler`` tensor ``[N, 3]``
            (pitch, yaw, roll radians) of the one-shot path — each frame's camera direction
            (:func:`euler_to_yaw_pitch`; a HeadPose's cameras are smoothed first as its ``smooth_kernel`` says,
            then read back with :func:`~r3dp_core.geometry.camera.camera_to_pose`); roll and translation are
            dropped. ``r3dp_core.pipeline.persona.persona_head_pose`` resolves a Head Pose recipe (orbit,
            keyframes, natural, static) for a persona into such a HeadPose.

    Raises:
        InputError: an unknown mode, or a pose of another length than the drive.
    """
    count = drive.num_frames
    if isinstance(pose, str):
        if pose == "replay":
            return persona.tracks["yaw_pitch"][drive.source_frames].float().clone()
        if pose == "neutral":
            return neutral_yaw_pitch(persona).expand(count, 2).clone()
        raise InputError(f"Unknown persona camera {pose!r}: use 'replay', 'neutral' or a head pose.")
    if hasattr(pose, "cameras") and hasattr(pose, "euler"):
        from ..geometry.camera import camera_to_pose

        euler = pose.euler if getattr(pose, "smooth_kernel", None) is None else camera_to_pose(pose.cameras())[0]
    else:
        euler = torch.as_tensor(pose)
    if euler.ndim != 2 or euler.shape[1] != 3 or euler.shape[0] != count:
        raise InputError(f"the head pose has {euler.shape[0] if euler.ndim else 0} frames (shape "
                         f"{list(euler.shape)}), the speech {count}: give a pose of the clip's length.")
    return euler_to_yaw_pitch(euler)


# --- frames ---------------------------------------------------------------------------------------------------------

def persona_frames(persona: PersonaModel, drive: PersonaDrive, yaw_pitch: torch.Tensor, *, seed: int = 0,
                   chunk: int = 8, host: Host = HERE, frames: Iterable[int] | None = None) -> Iterator[torch.Tensor]:
    """Render the drive's frames, ``chunk`` at a time.

    ΔP is computed for one chunk at a time (never the whole clip's tri-planes), so memory is flat in clip length.
    Output frame ``i`` draws its renderer noise from ``torch.Generator().manual_seed(seed + i)`` (as the held-out
    evaluation does), so a frame does not depend on the chunk size (up to float rounding of batched convolutions).

    Args:
        yaw_pitch: ``[N, 2]`` cameras (:func:`persona_cameras`).
        seed: the renderer noise's seed.
        chunk: frames rendered together (memory vs speed).
        host: ``host.place`` puts the generator and the networks on the compute device for the whole run;
            ``host.check()`` before each chunk, ``host.report(done, N, last frame)`` after it.
        frames: only these output frames (ascending; default all N), e.g. to preview a few.

    Yields:
        ``[B, 3, S, S]`` float32 in [-1, 1] (clamped) on the compute device, B ≤ ``chunk``, in frame order.

    Raises:
        InputError: cameras of another length than the drive, or a chunk below 1.
    """
    from .personalise.training import render_chunk

    count = drive.num_frames
    if tuple(yaw_pitch.shape) != (count, 2):
        raise InputError(f"the cameras are {list(yaw_pitch.shape)}, the drive has {count} frames: give [N, 2] "
                         "(yaw, pitch) cameras of the drive (persona_cameras).")
    if int(chunk) < 1:
        raise InputError(f"the chunk size must be at least 1 frame, got {chunk}.")
    wanted = list(range(count)) if frames is None else [int(f) for f in frames]
    generator, networks = persona.generator, persona.networks
    with host.place(generator, networks), torch.no_grad():
        planes, ws = persona.identity()
        angles = yaw_pitch.float().cpu()
        for start in range(0, len(wanted), int(chunk)):
            host.check()
            index = wanted[start:start + int(chunk)]
            images = render_chunk(generator, networks, planes, ws, drive, index, angles, seed).clamp(-1, 1)
            host.report(start + len(index), len(wanted), images[-1])
            yield images


# --- paste-back -----------------------------------------------------------------------------------------------------

def face_mask(size: int, ellipse: tuple[float, float] = PASTE_ELLIPSE, feather: float = PASTE_FEATHER) -> np.ndarray:
    """The paste-back mask of an aligned crop: ``[S, S]`` float32 in [0, 1], a centred ellipse (half axes
    ``ellipse`` × S) that is 1 inside ``1 − feather`` of its radius and falls smoothly to exactly 0 at its rim; 0 at
    the crop's border."""
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    radius = np.sqrt(((x - centre) / (ellipse[0] * size)) ** 2 + ((y - centre) / (ellipse[1] * size)) ** 2)
    t = np.clip((1.0 - radius) / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def source_frames_stream(video: str | Path, info: dict[str, Any], source_frames: torch.Tensor | Iterable[int],
                         *, block: int = BACKWARD_BLOCK) -> Iterator[np.ndarray]:
    """The training video's 25 fps frames at ``source_frames``, one ``[H, W, 3]`` uint8 frame at a time, decoded
    as they are needed: a forward run of consecutive indices streams from its first frame (one seek), a backward
    run is decoded ``block`` frames at a time from its top and played in reverse. Memory holds at most ``block``
    frames (or one decode chunk), whatever the length.

    ``info``: persona.json's ``source_video`` (its ``start``/``end`` seconds give the span the persona was trained
    on; frame k is the span's frame k).

    Raises:
        InputError: the video ends before a wanted frame.
    """
    from .personalise.video_frames import frames_25fps

    start = float(info.get("start") or 0.0)
    end = info.get("end")
    indices = [int(i) for i in (source_frames.tolist() if isinstance(source_frames, torch.Tensor) else source_frames)]

    def decode(first: int, count: int) -> Iterator[np.ndarray]:
        got = 0
        for piece in frames_25fps(video, start, end, chunk=min(max(count, 1), 32), first=first):
            for frame in piece[:count - got]:
                yield frame
                got += 1
            if got >= count:
                return
        if got < count:
            raise InputError(f"{video}: the video ends before frame {first + got} (25 fps from {start:g} s); it is "
                             "not the complete training video. Pass the video the persona was trained from.")

    position = 0
    while position < len(indices):
        step = 1
        if position + 1 < len(indices) and indices[position + 1] == indices[position] - 1:
            step = -1
        stop = position + 1
        while stop < len(indices) and indices[stop] == indices[stop - 1] + step:
            stop += 1
        run = indices[position:stop]
        if step == 1:
            yield from decode(run[0], len(run))
        else:
            top = run[0]
            low = run[-1]
            while top >= low:
                bottom = max(low, top - block + 1)
                frames = list(decode(bottom, top - bottom + 1))
                yield from reversed(frames)
                top = bottom - 1
        position = stop


def paste_face(frame: np.ndarray, face: np.ndarray, similarity: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One frame: the aligned face ``[S, S, 3]`` uint8 warped into ``frame`` ``[H, W, 3]`` uint8 by the inverse of
    ``similarity`` (``[2, 3]`` frame pixels → crop pixels) and blended through ``mask`` (``[S, S]`` in [0, 1],
    warped alike). Pixels where the warped mask is 0 are the frame's, exactly."""
    import cv2

    height, width = frame.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(similarity, np.float64))
    alpha = cv2.warpAffine(mask, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    rows, cols = np.nonzero(alpha > 0)
    out = frame.copy()
    if rows.size == 0:
        return out
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    local = shift @ np.vstack([inverse, [0.0, 0.0, 1.0]])
    warped = cv2.warpAffine(face, local, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    a = alpha[y0:y1, x0:x1, None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = region + a * (warped.astype(np.float32) - region)
    out[y0:y1, x0:x1] = np.where(a > 0, np.clip(np.rint(blended), 0, 255), region).astype(np.uint8)
    return out


def paste_into_source(persona: PersonaModel, drive: PersonaDrive, frames: Iterable[torch.Tensor],
                      video: str | Path | None = None, *, mask: np.ndarray | None = None, host: Host = HERE
                      ) -> Iterator[np.ndarray]:
    """The rendered faces pasted back into the training video's frames.

    Output frame ``i`` is the source video's frame ``drive.source_frames[i]`` (decoded streaming, forward and
    backward: :func:`source_frames_stream`) with the face warped in by the inverse of that frame's
    ``tracks["similarity"]`` through a feathered ellipse (:func:`face_mask`); outside the warped mask the frame is
    the source's, exactly. Render the faces with the cameras and head tokens of those frames (``replay``), or the
    face will not line up with the recorded neck and hair.

    Args:
        frames: ``[B, 3, S, S]`` chunks in [-1, 1] (:func:`persona_frames`), in frame order.
        video: the training video (checked by hash); the persona's stored path when None.
        mask: ``[S, S]`` float32 mask in [0, 1] instead of :func:`face_mask`.
        host: ``host.check()`` per chunk.

    Yields:
        uint8 ``[B, H, W, 3]`` RGB frames of the source video's size, one block per input chunk.

    Raises:
        InputError: no source video, a wrong one (hash), a persona without similarity tracks, or more frames than
            the drive.
    """
    path = persona.source_video(video)
    similarity = persona.tracks.get("similarity")
    if similarity is None:
        raise InputError(f"persona {persona.name} has no similarity track (where the face sits in each video frame), "
                         "so it cannot be pasted back; use --output crop.")
    mask = face_mask(persona.image_size) if mask is None else np.asarray(mask, np.float32)
    sources = source_frames_stream(path, persona.info.get("source_video") or {}, drive.source_frames)
    done = 0
    for chunk in frames:
        host.check()
        faces = ((chunk.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        faces = faces.permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for face in faces:
            if done >= drive.num_frames:
                raise InputError(f"more frames than the drive's {drive.num_frames} were given to paste back.")
            frame = next(sources)
            out.append(paste_face(frame, face, similarity[int(drive.source_frames[done])].numpy(), mask))
            done += 1
        yield np.stack(out)
