"""``r3dp doctor --selftest``: prove an installation renders, before any official file is downloaded.

Builds randomly initialised weights for the video model and saves them in a temporary folder, loads them
back through the same loader as real checkpoints, makes a synthetic face mesh and portrait, and renders a
short clip through the streaming pipeline into an mp4. The pictures are meaningless; the code path is the
real one.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import save_safetensors
from ..device import Precision
from ..geometry.bfm import FaceModel3DMM
from ..geometry.camera import static_pose
from ..geometry.secc import SECCMesh
from ..models.secc2plane_torso import Secc2PlaneTorso
from ..video_io import VideoWriter
from .face import FaceGeometry
from .frame_chain import talking_frames
from .loaders import load_video_model
from .stream import iterate_chunks
from .types import Avatar, Motion


@dataclass
class SelftestResult:
    path: Path
    frames: int
    size: int
    seconds: float
    device: str

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def synthetic_face_model(grid: int = 48, seed: int = 0) -> FaceModel3DMM:
    """A dome-shaped stand-in for the BFM: a grid mesh with random identity/expression bases."""
    generator = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij")
    depth = (1 - (u**2 + v**2).clamp(max=1)).sqrt()
    mean_shape = torch.stack([0.75 * v, -1.0 * u, 0.55 * depth], dim=-1).reshape(-1, 3)
    n = mean_shape.shape[0]
    ids = torch.arange(n).reshape(grid, grid)
    quads = torch.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], dim=-1).reshape(-1, 4)
    triangles = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return FaceModel3DMM(mean_shape=mean_shape - mean_shape.mean(0),
                         id_base=0.01 * torch.randn(3 * n, 80, generator=generator),
                         exp_base=0.01 * torch.randn(3 * n, 64, generator=generator),
                         triangles=triangles,
                         keypoints68=torch.randint(1, n, (68,), generator=generator),
                         mp468_index=torch.randint(0, n, (468,), generator=generator))


def synthetic_avatar(size: int = 512) -> Avatar:
    """A portrait-shaped test card: head ellipse, shoulders, gradient background."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    head = (x / 0.35) ** 2 + ((y + 0.2) / 0.45) ** 2 < 1
    body = (y > 0.45) & (x.abs() < 0.8)
    image = torch.stack([x, y, x * y], 0).unsqueeze(0) * 0.5
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[body] = 4
    labels[head] = 3
    segmap = torch.nn.functional.one_hot(labels, 6).permute(2, 0, 1).float()[None]
    zero3 = torch.zeros(1, 3)
    return Avatar(image=image, id=torch.zeros(1, 80), exp=torch.zeros(1, 64), euler=zero3, trans=zero3.clone(),
                  head_image=torch.where(head, image, -1.0), torso_image=torch.where(body, image, -1.0),
                  background=image.flip(-1), segmap=segmap)


def run_selftest(device: str = "auto", frames: int = 8, out: Path | None = None, seed: int = 0) -> SelftestResult:
    """Render ``frames`` frames of a synthetic talking head with randomly initialised weights."""
    precision = Precision.resolve(device, "fp32")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="r3dp-selftest-") as tmp:
        weights = Path(tmp) / "secc2plane_torso.safetensors"
        save_safetensors(Secc2PlaneTorso().state_dict(), weights, {"format": "pt", "r3dp_model": "secc2plane_torso"})
        model = load_video_model(weights, precision)
    bfm = synthetic_face_model().to(precision.device)
    face = FaceGeometry(bfm, SECCMesh(bfm.triangles, bfm.ncc_code()).to(precision.device))
    phase = torch.linspace(0, 2 * math.pi, frames)
    exp = torch.zeros(frames, 64)
    exp[:, 0] = 2 * torch.sin(phase)  # a moving "mouth" so consecutive frames differ
    motion = Motion(exp=exp)
    avatar = synthetic_avatar()
    out = out or Path(tempfile.gettempdir()) / "r3dp-selftest.mp4"
    with torch.inference_mode():
        source = talking_frames(model, face, avatar, motion, static_pose(avatar.euler, avatar.trans, frames),
                                seed=seed)
        start = time.perf_counter()  # per-frame throughput: the portrait's one-off work is done above
        with VideoWriter(out, fps=25) as writer:
            for _, _, chunk in iterate_chunks(source, chunk_size=4):
                writer.write(chunk.image)
    return SelftestResult(out, frames, 512, time.perf_counter() - start, str(precision.device))
