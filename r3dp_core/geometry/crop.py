"""Source-image crop so the face covers enough of the frame (official ``crop_img_on_face_area_percent``, spec §3.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..defaults import MIN_FACE_AREA
from ..images import as_uint8_frames
from .landmarks import FaceChoice, detect_image_points, raise_if_missing

SOURCE_SIZE = 512


def resize_square(image: np.ndarray, size: int = SOURCE_SIZE) -> np.ndarray:
    """uint8 [H,W,3] → [size,size,3] with cv2 INTER_LINEAR, aspect ratio ignored (official squash)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def face_area_fraction(landmarks: torch.Tensor | np.ndarray, size: int = SOURCE_SIZE) -> float:
    """Area of the landmarks' bounding box [N,2] (pixels of a size² image) as a fraction of the image."""
    points = np.asarray(landmarks, dtype=np.float64)
    extent = points.max(0) - points.min(0)
    return float(extent[0] * extent[1]) / size ** 2


def face_crop_box(landmarks: torch.Tensor | np.ndarray, min_face_area_percent: float = MIN_FACE_AREA,
                  size: int = SOURCE_SIZE) -> tuple[int, int, int, int]:
    """Square crop (row0, row1, col0, col1) of a size² image in which the face box covers ``min_face_area_percent``.

    The square is centred on the landmarks' (integer-truncated) bounding box and shrunk by twice its largest
    overflow when it would leave the image, exactly as the official code computes it.
    """
    points = np.asarray(landmarks, dtype=np.float64).astype(np.int64)
    (min_x, min_y), (max_x, max_y) = points.min(0), points.max(0)
    target = int(math.sqrt((max_x - min_x) * (max_y - min_y) / min_face_area_percent))
    cx, cy = (min_x + max_x) / 2, (min_y + max_y) / 2
    overflow = max(target / 2 - cx, cx + target / 2 - size, target / 2 - cy, cy + target / 2 - size)
    side = math.floor(target - max(0.0, 2 * overflow))
    return int(cy - side / 2), int(cy + side / 2), int(cx - side / 2), int(cx + side / 2)


@dataclass
class SourceImage:
    """image: [H,W,3] uint8, the file's own pixels when the face was big enough, else the 512² crop.
    image_512: the 512² squashed image segmentation and rendering use.
    box: the crop (row0, row1, col0, col1) in the squashed 512² photo, or None when no crop was needed."""

    image: torch.Tensor
    image_512: torch.Tensor
    box: tuple[int, int, int, int] | None = None

    @property
    def cropped(self) -> bool:
        return self.box is not None

    def map_plane(self, plane: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A per-pixel map of the original photo (e.g. a mask ``[H,W]`` at any resolution) → ``[512,512]`` float32
        in the source frame, by the same squash and crop as the photo (bilinear)."""
        array = np.asarray(plane.detach().float().cpu() if isinstance(plane, torch.Tensor) else plane, np.float32)
        if array.ndim != 2:
            raise ValueError(f"expected a [H,W] map, got shape {array.shape}")
        array = resize_square(array)
        if self.box is not None:
            row0, row1, col0, col1 = self.box
            array = resize_square(np.ascontiguousarray(array[row0:row1, col0:col1]))
        return torch.from_numpy(array)


def prepare_source_image(image: torch.Tensor | np.ndarray, landmarker_path: str | Path,
                         min_face_area_percent: float = MIN_FACE_AREA,
                         face: FaceChoice = "largest") -> SourceImage:
    """Official source preprocessing: squash to 512², measure the face, crop and resize when it is too small.

    Args:
        image: [H,W,3] RGB uint8 or float in [0,1], any resolution.
        landmarker_path: ``face_landmarker.task``.
        min_face_area_percent: fraction of the 512² image the 478-landmark box must cover (official 0.2,
            Gradio slider 0.15-0.5).

    Raises:
        InputError: no face in the image.
    """
    original = as_uint8_frames(image)[0]
    squashed = resize_square(original)
    points, found = detect_image_points(squashed[None], landmarker_path, face=face)
    raise_if_missing(found, face)
    points = points[0]
    device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    if face_area_fraction(points) >= min_face_area_percent:
        return SourceImage(torch.from_numpy(original).to(device), torch.from_numpy(squashed).to(device))
    box = face_crop_box(points, min_face_area_percent)
    row0, row1, col0, col1 = box
    crop = resize_square(np.ascontiguousarray(squashed[row0:row1, col0:col1]))
    crop_tensor = torch.from_numpy(crop).to(device)
    return SourceImage(crop_tensor, crop_tensor, box)
