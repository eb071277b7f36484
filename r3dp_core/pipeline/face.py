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

    def segment(self, images):
        """``geometry.segmentation.segment_selfie_multiclass`` with ``segmenter_path``; a missing or wrong file's
        error says where to get the segmenter (the models folder's slot and its address)."""
        from .. import model_files
        from ..geometry.segmentation import SegmenterFileError, segment_selfie_multiclass

        try:
            return segment_selfie_multiclass(images, self.segmenter_path)
        except SegmenterFileError as exc:
            spec = model_files.BY_KEY["segmenter"]
            raise exc.with_source(f"download {spec.relpath} from {spec.url}") from exc.__cause__
