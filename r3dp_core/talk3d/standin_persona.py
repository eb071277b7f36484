"""A stand-in persona for tests, benchmarks and the ComfyUI e2e suite: the tiny architecture with seeded random
weights, tracks of a synthetic source video written beside it, in seconds and without MediaPipe or training.

Its frames are meaningless (random networks); everything else is what a real tiny persona has: ``persona.json``
with ``architecture: tiny`` and a ``source_video`` {path, sha256, start, end} whose 25 fps frames match the tracks
one to one, ``yaw_pitch``/``head_angles``/``landmarks``/``blink``/``similarity`` tracks, and the safetensors files
of :func:`~r3dp_core.talk3d.persona.write_persona_files`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

#: The synthetic source video's frame size (width, height) and the crop side of the tiny architecture.
VIDEO_SIZE = (128, 96)
TINY_SIDE = 64
#: Gains on the random U-Net's cross-attention and last layers, so that the stand-in's frames follow its tokens.
STANDIN_TOKEN_GAIN, STANDIN_DELTA_GAIN = 10.0, 20.0


def standin_sound(seconds: float, rate: int = 16000) -> np.ndarray:
    """``[round(seconds·rate)]`` float32: a 140–220 Hz chirp with a syllable-like 4 Hz envelope (speech's stand-in)."""
    t = np.arange(int(round(seconds * rate))) / rate
    pitch = 2 * np.pi * (140 * t + 40 * (1 - np.cos(2 * np.pi * 0.5 * t)) / (2 * np.pi * 0.5))
    return (0.25 * np.sin(pitch) * np.abs(np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def write_source_video(path: str | Path, seconds: float, *, size: tuple[int, int] = VIDEO_SIZE, seed: int = 0
                       ) -> Path:
    """A synthetic 25 fps talking-video stand-in with sound (AAC): a textured background and a moving bright disc
    (the "face"), ``round(25 × seconds)`` frames, written with :class:`~r3dp_core.video_io.VideoWriter`."""
    from ..video_io import VideoWriter

    width, height = size
    count = int(round(25 * seconds))
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 120, size=(height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    speech = standin_sound(seconds)
    audio = {"waveform": torch.from_numpy(speech)[None, None], "sample_rate": 16000}
    with VideoWriter(path, fps=25, audio=audio) as writer:
        for start in range(0, count, 25):
            block = []
            for k in range(start, min(start + 25, count)):
                cx = width / 2 + 6 * math.sin(k / 9)
                cy = height / 2 + 3 * math.cos(k / 13)
                frame = background.copy()
                inside = (x - cx) ** 2 + (y - cy) ** 2 < (0.3 * height) ** 2
                frame[inside] = (200, 160 + (k % 40), 140)
                block.append(frame)
            writer.write(np.stack(block))
    return Path(path)


def standin_tracks(count: int, *, size: tuple[int, int] = VIDEO_SIZE, side: int = TINY_SIDE, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """Plausible per-frame tracks of ``count`` frames: small yaw/pitch swings (radians), head angles (degrees),
    landmarks in [-1, 1], a blink every 2 s, and similarity transforms taking the video's centre square (side 0.8 ×
    height) onto the ``side``² crop."""
    rng = torch.Generator().manual_seed(seed)
    t = torch.arange(count, dtype=torch.float32)
    yaw_pitch = torch.stack([0.15 * torch.sin(t / 17), 0.05 * torch.cos(t / 23)], dim=-1)
    head_angles = torch.stack([2 * torch.cos(t / 23), 8 * torch.sin(t / 17), torch.zeros(count)], dim=-1)
    landmarks = (torch.rand(1, 6, 2, generator=rng) - 0.5) + 0.01 * torch.randn(count, 6, 2, generator=rng)
    blink = torch.zeros(count)
    for start in range(10, count, 50):
        for k in range(min(6, count - start)):
            blink[start + k] = 2.0 * math.sin(math.pi * (k + 0.5) / 6)
    width, height = size
    scale = side / (0.8 * height)
    similarity = torch.zeros(count, 2, 3)
    wobble = 2 * torch.sin(t / 9)
    similarity[:, 0, 0] = scale
    similarity[:, 1, 1] = scale
    similarity[:, 0, 2] = side / 2 - scale * (width / 2 + wobble)
    similarity[:, 1, 2] = side / 2 - scale * height / 2
    return {"yaw_pitch": yaw_pitch, "head_angles": head_angles, "landmarks": landmarks, "blink": blink,
            "similarity": similarity}


def write_standin_persona(folder: str | Path, *, seconds: float = 4.0, video: str | Path | None = None,
                          seed: int = 0, name: str | None = None) -> Path:
    """Write a tiny stand-in persona into ``folder`` and its source video (``video``; default
    ``folder/../<name>_source.mp4``), both seeded by ``seed``. Returns the persona folder."""
    from .eg3d_generator import TriPlaneGenerator
    from .model import Talk3DNetworks
    from .persona import Persona, write_persona_files
    from .personalise.presets import get_preset
    from .personalise.video_frames import video_sha256

    folder = Path(folder)
    name = name or folder.name
    video = Path(video) if video is not None else folder.parent / f"{name}_source.mp4"
    write_source_video(video, seconds, seed=seed)
    count = int(round(25 * seconds))
    preset = get_preset("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = TriPlaneGenerator(preset.generator)
        networks = Talk3DNetworks(preset.networks)
        with torch.no_grad():   # a random U-Net barely reacts to its tokens: make ΔP and its token part visible
            for key, parameter in networks.named_parameters():
                if ".attn2.to_v." in key or ".attn2.to_out." in key:
                    parameter.mul_(STANDIN_TOKEN_GAIN)
                elif ".Upnet.Upnet3_" in key and ".bn1." in key:
                    parameter.mul_(STANDIN_DELTA_GAIN)
        w_person = torch.randn(1, preset.generator.w_dim)
    info = {"name": name, "made_by": "r3dp stand-in persona (random tiny networks)", "preset": "tiny",
            "architecture": "tiny",
            "source_video": {"path": str(video.resolve()), "sha256": video_sha256(video), "start": None, "end": None}}
    persona = Persona(generator.state_dict(), networks.state_dict(), w_person, standin_tracks(count, seed=seed), info)
    return write_persona_files(folder, persona)
