"""A portrait and its driving frames for the video model, made of synthetic stand-ins (no files but the shared
parity folder): the pipeline benchmark and the performance tests measure and compare the frame chain on them.

``kind`` is ``"full"`` (the official 512² architecture with the parity suite's deterministic weights and the
``case_full_forward`` images and camera) or ``"small"`` (a reduced configuration of the same code with seeded
random weights and random images, fast enough for CI).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import R3DPError
from ..models.secc2plane_torso import Secc2PlaneTorso, Secc2PlaneTorsoConfig, tiny_config
from ..pipeline.frame_chain import TorsoKeypoints
from ..pipeline.stream import SeccFrames
from ..pipeline.types import Avatar
from .case import ParityCase, segmap_to_onehot, synth_state_dict

#: A reduced configuration of the same architecture (64² output), fast enough for CI on two CPU cores.
SMALL_CONFIG = tiny_config()


@dataclass
class Clip:
    """One portrait and T driving frames, on one device; images ``[*,3,S,S]`` in [-1,1]."""

    head: torch.Tensor            # [1,3,S,S] I2P input
    cano_secc: torch.Tensor       # [1,3,S,S]
    src_secc: torch.Tensor        # [1,3,S,S]
    secc: torch.Tensor            # [T,3,S,S] driving SECC
    cameras: torch.Tensor         # [T,25]
    torso: torch.Tensor           # [1,3,S,S]
    background: torch.Tensor      # [1,3,S,S]
    segmap: torch.Tensor          # [1,6,S,S] one-hot
    kp_source: torch.Tensor       # [1,68,3]
    kp_driving: torch.Tensor      # [T,68,3]

    @property
    def num_frames(self) -> int:
        return int(self.secc.shape[0])

    def to(self, device: torch.device) -> Clip:
        return Clip(**{name: value.to(device) for name, value in self.__dict__.items()})

    def avatar(self, planes: torch.Tensor | None = None) -> Avatar:
        """The clip's portrait as the frame chain reads it. Its 3DMM fit is zero and unused: the clip brings its
        own SECC maps and keypoints."""
        zero = self.head.new_zeros(1, 3)
        return Avatar(image=self.head, id=self.head.new_zeros(1, 80), exp=self.head.new_zeros(1, 64), euler=zero,
                      trans=zero, planes=planes, head_image=self.head, torso_image=self.torso,
                      background=self.background, segmap=self.segmap)

    def secc_frames(self) -> SeccFrames:
        return SeccFrames(self.secc, self.cano_secc, self.src_secc)

    def keypoints(self) -> TorsoKeypoints:
        return TorsoKeypoints(self.kp_source, self.kp_driving)


def model_factory(kind: str, parity_dir: Path | None) -> Callable[[torch.device], Secc2PlaneTorso]:
    """A function building a fresh float32 eval model with the same synthetic weights on a device."""
    if kind == "small":
        torch.manual_seed(0)
        weights = Secc2PlaneTorso(SMALL_CONFIG).state_dict()
        config = SMALL_CONFIG
    else:
        if parity_dir is None:
            raise R3DPError("the full-size model needs the shared parity folder (its synthetic weights)")
        config = Secc2PlaneTorsoConfig.from_hparams(json.loads((parity_dir / "config_secc2plane_torso.json")
                                                               .read_text()))
        weights = synth_state_dict(parity_dir, "secc2plane_torso")

    def build(device: torch.device) -> Secc2PlaneTorso:
        model = Secc2PlaneTorso(config)
        model.load_state_dict(weights, strict=True)
        return model.to(device).eval()

    return build


def synthetic_clip(kind: str, frames: int, parity_dir: Path | None, seed: int = 0) -> Clip:
    """The parity case's portrait, SECC maps and camera (full), or random images (small); T varied frames."""
    gen = torch.Generator().manual_seed(seed)
    size = SMALL_CONFIG.superresolution.output_resolution if kind == "small" else 512
    camera = torch.tensor([1, 0, 0, 0, 0, -1, 0, 0.006, 0, 0, -1, 2.861, 0, 0, 0, 1,
                           4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1])
    if kind == "full" and parity_dir is not None:
        case = ParityCase.load(parity_dir / "case_full_forward.safetensors")
        head, cano, src, tgt = (case.image(n) for n in ("ref_head_u8", "secc_cano_u8", "secc_src_u8", "secc_tgt_u8"))
        torso, background = case.image("ref_torso_u8"), case.image("bg_u8")
        segmap = segmap_to_onehot(case.tensor("segmap_idx"))
        kp_source, kp_target = case.tensor("kp_s"), case.tensor("kp_d")
        camera = case.tensor("camera")[0]
    else:
        def image() -> torch.Tensor:
            return torch.rand(1, 3, size, size, generator=gen) * 2 - 1

        head, cano, src, tgt, torso, background = (image() for _ in range(6))
        labels = torch.randint(0, 6, (1, size, size), generator=gen)
        labels[:, size * 5 // 8:, size // 5: size * 4 // 5] = 4
        segmap = F.one_hot(labels, 6).permute(0, 3, 1, 2).float()
        kp_source = torch.cat([torch.rand(1, 68, 2, generator=gen) * 1.6 - 0.8, torch.zeros(1, 68, 1)], -1)
        kp_target = kp_source
    # Frames move between the source and driving SECC, the keypoints jitter and the camera slides sideways.
    mix = torch.linspace(0, 1, frames).view(-1, 1, 1, 1)
    secc = src + mix * (tgt - src)
    kp_driving = kp_target + 0.02 * torch.randn(frames, 68, 3, generator=gen) * torch.tensor([1.0, 1.0, 0.0])
    cameras = camera.repeat(frames, 1)
    cameras[:, 3] += torch.linspace(-0.05, 0.05, frames)
    return Clip(head, cano, src, secc, cameras, torso, background, segmap, kp_source, kp_driving)
