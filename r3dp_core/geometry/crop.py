"""The source square around the chosen face, resized to 512² (official ``crop_img_on_face_area_percent``, spec §3.1,
without its squash to a square: see ``framing`` for the rule)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..defaults import FRAME_SIZE, MIN_FACE_AREA
from ..errors import InputError
from ..images import as_uint8_frames
from .framing import CropSquare, DetectedFace, choose_face, crop_square, face_warnings, find_faces
from .landmarks import NO_FACE_ADVICE, FaceChoice, detect_faces


def resize_square(image: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """uint8 [H,W,3] → [size,size,3] with cv2 INTER_LINEAR, aspect ratio ignored (official resize)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


@dataclass
class SourceImage:
    """The portrait as the 512² pipeline sees it: the square around the chosen face (``framing.crop_square``).

    image: ``[S,S,3]`` uint8, the square at the photo's own resolution (the whole photo when it is square and the
        face is big enough, as the official path keeps the file); the landmarks and the 3DMM fit use it.
    image_512: the square resized to 512² (INTER_LINEAR), which segmentation and rendering use.
    points: ``[478,2]`` float32 landmarks of the chosen face in ``image``'s pixels.
    square: where ``image`` lies in the photo (it may reach past the photo's edges, which are padded).
    photo_size: the photo's ``(height, width)``.
    faces: how many faces the photo shows.
    face_index: the chosen face's number among them (left to right, as ``face`` counts).
    other_faces: the other faces' ``[478,2]`` landmarks in ``image``'s pixels (they may lie outside the square).
    """

    image: torch.Tensor
    image_512: torch.Tensor
    points: torch.Tensor
    square: CropSquare
    photo_size: tuple[int, int]
    faces: int = 1
    face_index: int = 0
    other_faces: tuple[np.ndarray, ...] = ()

    @property
    def cropped(self) -> bool:
        """Whether the square is anything but the whole photo."""
        return not self.square.covers(*self.photo_size)

    def map_plane(self, plane: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A per-pixel map of the original photo (e.g. a mask ``[H,W]``, at the photo's size or any other) →
        ``[512,512]`` float32 in the source frame, by the same square and padding as the photo (bilinear)."""
        array = np.asarray(plane.detach().float().cpu() if isinstance(plane, torch.Tensor) else plane, np.float32)
        if array.ndim != 2:
            raise ValueError(f"expected a [H,W] map, got shape {array.shape}")
        height, width = self.photo_size
        if array.shape != (height, width):
            array = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(resize_square(np.ascontiguousarray(self.square.cut(array)))))


def _nearest_face(faces: list[DetectedFace], centre: tuple[float, float]) -> DetectedFace | None:
    if not faces:
        return None
    return min(faces, key=lambda face: math.dist(face.centre, centre))


def prepare_source_image(image: torch.Tensor | np.ndarray, landmarker_path: str | Path,
                         min_face_area_percent: float = MIN_FACE_AREA,
                         face: FaceChoice = "largest") -> SourceImage:
    """Find the faces on the photo as it is, choose one, cut the square around it (``framing``), find its landmarks.

    Args:
        image: ``[H,W,3]`` RGB uint8 or float in [0,1], any resolution and aspect ratio.
        landmarker_path: ``face_landmarker.task``.
        min_face_area_percent: fraction of the square the face's 478-landmark box must cover (official 0.2,
            Gradio slider 0.15-0.5).
        face: ``'largest'`` or an index into the faces ordered left to right.

    Raises:
        InputError: no face in the photo, or the face index is past the faces found.
    """
    original = as_uint8_frames(image)[0]
    height, width = original.shape[:2]
    faces = find_faces(original, landmarker_path)
    chosen = choose_face(faces, face, photo_size=(height, width))
    for warning in face_warnings(faces, face, (height, width)):
        warnings.warn(warning, stacklevel=2)
    square = crop_square(chosen, height, width, min_face_area_percent)
    crop = np.ascontiguousarray(square.cut(original))
    # The landmarks are found again on the square itself, as the official code does on its crop; of the faces
    # there, the one nearest to where the chosen face lies.
    centre = (chosen.centre[0] - square.left, chosen.centre[1] - square.top)
    in_crop = _nearest_face([DetectedFace(points) for points in detect_faces(crop, landmarker_path)], centre)
    if in_crop is None:
        raise InputError(f"No face found in the square cut around the chosen face. {NO_FACE_ADVICE}")
    device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    index = next(i for i, found in enumerate(faces) if found is chosen)
    others = tuple(found.points - (square.left, square.top) for found in faces if found is not chosen)
    return SourceImage(torch.from_numpy(crop).to(device), torch.from_numpy(resize_square(crop)).to(device),
                       torch.from_numpy(in_crop.points.astype(np.float32)).to(device), square, (height, width),
                       len(faces), index, others)
