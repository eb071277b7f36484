"""The non-neural face models a job reads, split by what needs them.

``FaceGeometry`` (the BFM 3DMM and the SECC mesh) is all the frame chain needs: SECC images and torso
keypoints. ``FaceKit`` adds the MediaPipe model files that preparing a portrait or fitting a driving video
needs (landmarker, and the selfie segmenter unless masks are given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the node pack imports this at start-up: no scipy until a model is loaded
    from ..geometry.bfm import FaceModel3DMM
    from ..geometry.secc import SECCMesh


@dataclass
class FaceGeometry:
    """The BFM 3DMM (an ``nn.Module`` of buffers) and the SECC mesh rendered from it (eye holes cut)."""

    bfm: FaceModel3DMM
    secc_mesh: SECCMesh


@dataclass
class FaceKit:
    """Face geometry plus the MediaPipe files: ``face_landmarker.task`` and, optionally, the selfie segmenter."""

    geometry: FaceGeometry
    landmarker_path: Path
    segmenter_path: Path | None = None

    @property
    def bfm(self) -> FaceModel3DMM:
        return self.geometry.bfm
