"""Faces found on the photo as it is, and the square around the chosen face the 512² pipeline animates.

The official preprocessing squashes the photo to 512² before it looks for a face, so a wide photo of two
people finds none. Here MediaPipe looks at the photo at its own aspect ratio: its face detector letterboxes
its input to a small square, so a wide photo is searched in overlapping square windows (the short side,
then half of it), each downscaled to :data:`DETECTION_SIDE` for speed only; detections of the same face in
several windows are merged. Faces are reported in a documented order: **left to right** (box centres).

The crop square follows the official ``min_face_area_percent`` rule in the photo's own pixels: the face's
landmark box must cover at least that fraction of the square.

* When the face already covers enough of the largest square that fits the photo (side = the short side),
  that square is used, slid along the long side as close to face-centred as the photo allows. A square
  photo is therefore used whole, exactly as the official path does when the face is big enough.
* Otherwise the square is zoomed in to ``sqrt(face area / min_face_area)`` and **centred on the face**; where
  it leaves the photo it is **padded by replicating the edge pixels** (not shifted, which would move the
  face off-centre, and not shrunk as the official code does, which would change the face's size). Replicated
  edges were chosen over reflection because a mirrored copy of a face or shoulder would be found again by the
  landmarker and the segmenter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..defaults import MIN_FACE_AREA
from ..errors import InputError
from .landmarks import NO_FACE_ADVICE, create_landmarker, faces_in_result, standin_layout, to_mediapipe_image

#: Windows are downscaled to at most this many pixels per side before MediaPipe sees them (speed only:
#: its detector works at 128² and its landmark model on a 256² face crop).
DETECTION_SIDE = 512
#: Half-size windows are searched only when they are at least this large (smaller faces are not looked for).
MIN_WINDOW_SIDE = 256
#: Faces MediaPipe looks for in each window.
MAX_FACES_PER_WINDOW = 4
#: Two detections whose boxes overlap more than this (intersection over union) are the same face.
SAME_FACE_IOU = 0.3


@dataclass(frozen=True)
class DetectedFace:
    """One face of the photo: ``points [478,2]`` float64 in photo pixels (x right, y down) and its box."""

    points: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` of the 478 landmarks, in photo pixels."""
        (left, top), (right, bottom) = self.points.min(0), self.points.max(0)
        return float(left), float(top), float(right), float(bottom)

    @property
    def area(self) -> float:
        left, top, right, bottom = self.box
        return (right - left) * (bottom - top)

    @property
    def centre(self) -> tuple[float, float]:
        left, top, right, bottom = self.box
        return (left + right) / 2, (top + bottom) / 2


def _starts(length: int, side: int) -> list[int]:
    """Window offsets along one axis: every half side, plus one flush with the far edge."""
    return sorted({*range(0, max(1, length - side + 1), max(1, side // 2)), max(0, length - side)})


def _windows(height: int, width: int) -> list[tuple[int, int, int]]:
    """Square search windows ``(left, top, side)``: the short side, then half of it, each sliding by half its side
    (the last one flush with the far edge), so every face up to half a window wide lies wholly inside one."""
    short = min(height, width)
    windows = []
    for side in (short, short // 2):
        if side < MIN_WINDOW_SIDE and side != short:
            continue
        windows += [(left, top, side) for top in _starts(height, side) for left in _starts(width, side)]
    return windows


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def find_faces(image: np.ndarray, landmarker_path: str | Path) -> list[DetectedFace]:
    """Every face in a photo at its own aspect ratio, in photo pixels, ordered left to right.

    Args:
        image: ``[H,W,3]`` RGB uint8, any size.
        landmarker_path: ``face_landmarker.task``.

    Returns:
        The faces sorted by the x of their box centre (then y); empty when none is found.
    """
    height, width = image.shape[:2]
    if (layout := standin_layout(landmarker_path)) is not None:  # the self-test's stand-in: its one face
        return [DetectedFace(layout * (width, height))]
    found: list[tuple[float, DetectedFace]] = []  # (how far inside its window, relative to its size), face
    with create_landmarker(landmarker_path, video=False, num_faces=MAX_FACES_PER_WINDOW) as landmarker:
        for left, top, side in _windows(height, width):
            window = image[top:top + side, left:left + side]
            scale = min(1.0, DETECTION_SIDE / side)
            if scale < 1.0:
                window = cv2.resize(window, (round(side * scale),) * 2, interpolation=cv2.INTER_AREA)
            shown = window.shape[0]
            result = landmarker.detect(to_mediapipe_image(np.ascontiguousarray(window)))
            for points in faces_in_result(result, shown, shown):
                face = DetectedFace(points * (side / shown) + (left, top))
                x0, y0, x1, y1 = face.box
                margin = min(x0 - left, y0 - top, left + side - x1, top + side - y1)
                found.append((margin / max(x1 - x0, y1 - y0, 1.0), face))
    merged: list[DetectedFace] = []
    for _, face in sorted(found, key=lambda item: -item[0]):  # most inside its window first: its landmarks win
        if all(_iou(face.box, kept.box) <= SAME_FACE_IOU for kept in merged):
            merged.append(face)
    return sorted(merged, key=lambda face: face.centre)


def choose_face(faces: list[DetectedFace], face: str | int, what: str = "the photo") -> DetectedFace:
    """``'largest'`` (landmark box area) or an index into ``faces`` (left to right).

    Raises:
        InputError: no face, or the index is past the faces found.
    """
    if not faces:
        raise InputError(f"No face found in {what}. {NO_FACE_ADVICE}")
    if face == "largest":
        return max(faces, key=lambda f: f.area)
    if not isinstance(face, int) or face < 0:
        raise InputError(f"The face must be 'largest' or an index 0, 1, ... (left to right), got {face!r}.")
    if face >= len(faces):
        raise InputError(f"Face {face} was asked for, but {what} shows {len(faces)} face(s) (numbered 0 to "
                         f"{len(faces) - 1}, left to right). Choose another index or 'largest'.")
    return faces[face]


@dataclass(frozen=True)
class CropSquare:
    """A square of the photo in its pixels: ``left, top`` (may be negative) and ``side``; it may reach past the
    photo's edges, where :meth:`cut` pads it."""

    left: int
    top: int
    side: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The square's pixels ``[side,side,C]``; parts outside the photo replicate its nearest edge pixel."""
        height, width = image.shape[:2]
        rows = np.clip(np.arange(self.top, self.top + self.side), 0, height - 1)
        cols = np.clip(np.arange(self.left, self.left + self.side), 0, width - 1)
        inside = self.left >= 0 and self.top >= 0 and self.left + self.side <= width and self.top + self.side <= height
        if inside:
            return image[self.top:self.top + self.side, self.left:self.left + self.side]
        return image[rows[:, None], cols[None, :]]

    def scaled(self, factor: float) -> CropSquare:
        """The same square on the photo resized by ``factor``."""
        return CropSquare(round(self.left * factor), round(self.top * factor), max(1, round(self.side * factor)))

    def covers(self, height: int, width: int) -> bool:
        return self.left == 0 and self.top == 0 and self.side == height == width

    def as_tensor_values(self) -> list[int]:
        return [self.left, self.top, self.side]


def crop_square(face: DetectedFace, height: int, width: int, min_face_area: float) -> CropSquare:
    """The square of a ``height × width`` photo the pipeline animates for ``face`` (rule: module docstring)."""
    if not 0.0 < min_face_area <= 1.0:
        raise InputError(f"The minimum face area must be a fraction in (0, 1] (official {MIN_FACE_AREA:g}), "
                         f"got {min_face_area}.")
    short = min(height, width)
    cx, cy = face.centre
    target = math.sqrt(face.area / min_face_area)
    if target >= short:  # the face is big enough in the largest square inside the photo
        left = min(max(round(cx - short / 2), 0), width - short)
        top = min(max(round(cy - short / 2), 0), height - short)
        return CropSquare(left, top, short)
    side = max(1, round(target))
    return CropSquare(round(cx - side / 2), round(cy - side / 2), side)


def face_area_in(face: DetectedFace, square: CropSquare) -> float:
    """The face's landmark-box area as a fraction of the square's area."""
    return face.area / square.side ** 2
