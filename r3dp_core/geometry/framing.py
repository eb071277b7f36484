"""Faces found on the photo as it is, and the square around the chosen face the 512² pipeline animates.

The official preprocessing squashes the photo to 512² before it looks for a face, so a wide photo of two
people finds none. Here MediaPipe looks at the photo at its own aspect ratio: its face detector letterboxes
its input to a small square, so a wide photo is searched in overlapping square windows (the short side, then
half of it, then a quarter of it: :data:`WINDOW_LEVELS`, the finer levels where a window keeps at least
:data:`MIN_WINDOW_SIDE` pixels), each downscaled to :data:`DETECTION_SIDE` for speed only; detections of the
same face in several windows are merged. MediaPipe finds a face about a ninth of its window wide or wider, so the
quarter windows find faces down to about 3 % of the short side wide (photos under 640 px on the short side have
no quarter windows: 6 %). In the finer windows a detection that runs over an edge of its window inside the photo
is dropped (a face cut by the window; the sliding windows show it whole elsewhere), and a face seen only there is
kept only when it is found again in windows centred on it (:data:`CONFIRM_CONTEXTS`): one window of the grid
showing a collar can make MediaPipe see a face. Faces are reported in a documented order: **left to right**
(box centres).

Face choice: ``'largest'`` picks the largest face (landmark box area) among those covering at least
:data:`MIN_CHOSEN_FACE` of the photo; smaller faces are found and listed but never picked by ``'largest'`` (a
face that small is a distant passer-by, a picture on the wall or a false detection, and it is animated from very
few pixels). If only such faces exist, ``'largest'`` is refused with the list; an explicit index may still pick
one, with a warning (:func:`face_warnings`). ``'largest'`` is called ambiguous when the runner-up's area is within
:data:`AMBIGUOUS_AREA` of the largest's.

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

Paste-back puts the animated square back into the photo canvas (:func:`photo_canvas`): the photo capped at
:data:`MAX_PHOTO_SIDE` and trimmed to even sizes, with the square moved onto it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
#: Window sides as fractions of the photo's short side: the whole short side, then finer windows for smaller faces.
WINDOW_LEVELS = (1, 2, 4)
#: The finer windows are searched only when they are at least this large (smaller faces are not looked for).
MIN_WINDOW_SIDE = 160
#: ``'largest'`` picks only among faces whose landmark box covers at least this fraction of the photo's area.
MIN_CHOSEN_FACE = 0.01
#: ``'largest'`` is ambiguous when the second largest face's area is within this fraction of the largest's.
AMBIGUOUS_AREA = 0.10
#: A face seen only in the finer windows is looked for again in windows these many times its size, centred on it,
CONFIRM_CONTEXTS = (3.0, 5.0)
#: ... and kept when in each of them a face found overlaps it more than this (intersection over union).
CONFIRM_IOU = 0.5
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
    """Square search windows ``(left, top, side)``: the short side, then its half and its quarter (those at least
    :data:`MIN_WINDOW_SIDE`), each sliding by half its side (the last one flush with the far edge), so every face
    up to half a window wide lies wholly inside one window of its level."""
    short = min(height, width)
    windows = []
    for side in (short // level for level in WINDOW_LEVELS):
        if side < MIN_WINDOW_SIDE and side != short:
            continue
        windows += [(left, top, side) for top in _starts(height, side) for left in _starts(width, side)]
    return windows


def _cut_by_window(box: tuple[float, float, float, float], left: int, top: int, side: int, height: int,
                   width: int) -> bool:
    """Whether a face's box reaches an edge of its window that lies inside the photo (the face is cut there)."""
    x0, y0, x1, y1 = box
    return ((left > 0 and x0 <= left) or (top > 0 and y0 <= top) or (left + side < width and x1 >= left + side)
            or (top + side < height and y1 >= top + side))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


#: The memo ``remembered_faces`` makes ``find_faces`` use (none outside such a block).
_REMEMBERED: ContextVar[dict | None] = ContextVar("r3dp_remembered_faces", default=None)


@contextmanager
def remembered_faces(memo: dict) -> Iterator[dict]:
    """Inside the block, ``find_faces`` looks a photo up in ``memo`` (by the photo's content and the landmarker's
    path) before searching it, and stores what it finds there. ``r3dp batch`` searches each distinct photo once
    this way: its up-front check fills the memo, and its workers (the memo travels with them: it pickles) reuse
    it for their own check and for preparing the portrait."""
    token = _REMEMBERED.set(memo)
    try:
        yield memo
    finally:
        _REMEMBERED.reset(token)


def _photo_key(image: np.ndarray, landmarker_path: str | Path) -> str:
    photo = np.ascontiguousarray(image)
    hasher = hashlib.sha256(f"{photo.dtype}{photo.shape}|{Path(landmarker_path)}|".encode())
    hasher.update(photo.data)
    return hasher.hexdigest()


def find_faces(image: np.ndarray, landmarker_path: str | Path) -> list[DetectedFace]:
    """Every face in a photo at its own aspect ratio, in photo pixels, ordered left to right.

    Args:
        image: ``[H,W,3]`` RGB uint8, any size.
        landmarker_path: ``face_landmarker.task``.

    Returns:
        The faces sorted by the x of their box centre (then y); empty when none is found.
    """
    memo = _REMEMBERED.get()
    if memo is None:
        return search_faces(image, landmarker_path)
    key = _photo_key(image, landmarker_path)
    if key not in memo:
        memo[key] = search_faces(image, landmarker_path)
    return list(memo[key])


def search_faces(image: np.ndarray, landmarker_path: str | Path) -> list[DetectedFace]:
    """``find_faces`` without the memo: MediaPipe looks at every window of the photo."""
    height, width = image.shape[:2]
    if (layout := standin_layout(landmarker_path)) is not None:  # the self-test's stand-in: its one face
        return [DetectedFace(layout * (width, height))]
    short = min(height, width)
    # (how far inside its window, relative to its size), face, found in a window finer than the short side
    found: list[tuple[float, DetectedFace, bool]] = []
    with create_landmarker(landmarker_path, video=False, num_faces=MAX_FACES_PER_WINDOW) as landmarker:
        for left, top, side in _windows(height, width):
            for face in _faces_in_window(image, landmarker, left, top, side):
                if side < short and _cut_by_window(face.box, left, top, side, height, width):
                    continue
                x0, y0, x1, y1 = face.box
                margin = min(x0 - left, y0 - top, left + side - x1, top + side - y1)
                found.append((margin / max(x1 - x0, y1 - y0, 1.0), face, side < short))
        merged: list[tuple[DetectedFace, bool]] = []  # face, seen only in the finer windows
        for _, face, fine in sorted(found, key=lambda item: -item[0]):  # most inside its window first: it wins
            same = next((i for i, (kept, _) in enumerate(merged) if _iou(face.box, kept.box) > SAME_FACE_IOU), None)
            if same is None:
                merged.append((face, fine))
            elif not fine:
                merged[same] = (merged[same][0], False)
        faces = [face for face, fine in merged if not fine or _confirmed(image, landmarker, face)]
    return sorted(faces, key=lambda face: face.centre)


def _faces_in_window(image: np.ndarray, landmarker, left: int, top: int, side: int) -> list[DetectedFace]:
    """The faces MediaPipe finds in a square of the photo (edge pixels replicated where it leaves the photo)."""
    window = CropSquare(left, top, side).cut(image)
    scale = min(1.0, DETECTION_SIDE / side)
    if scale < 1.0:
        window = cv2.resize(window, (round(side * scale),) * 2, interpolation=cv2.INTER_AREA)
    shown = window.shape[0]
    result = landmarker.detect(to_mediapipe_image(np.ascontiguousarray(window)))
    return [DetectedFace(points * (side / shown) + (left, top)) for points in faces_in_result(result, shown, shown)]


def _confirmed(image: np.ndarray, landmarker, face: DetectedFace) -> bool:
    """Whether a face seen only in the finer windows is found again in every window of :data:`CONFIRM_CONTEXTS`
    centred on it (in one window of a sliding grid MediaPipe can see a face in a collar or a pattern; a real face
    is found at any framing, a false one rarely twice)."""
    left, top, right, bottom = face.box
    cx, cy = face.centre
    for context in CONFIRM_CONTEXTS:
        side = max(round(context * max(right - left, bottom - top)), 32)
        again = _faces_in_window(image, landmarker, round(cx - side / 2), round(cy - side / 2), side)
        if not any(_iou(face.box, other.box) > CONFIRM_IOU for other in again):
            return False
    return True


def _percent(face: DetectedFace, photo_area: float) -> str:
    share = 100 * face.area / photo_area
    return f"{share:.1f}%" if share >= 1 else f"{share:.2f}%"


def describe_faces(faces: list[DetectedFace], height: int, width: int) -> list[str]:
    """One line per face, numbered as ``--face`` counts them: ``face N: x=…, y=…, w=…, h=… (…% of the photo)``
    (the landmark box in photo pixels), marking the faces ``'largest'`` never picks."""
    lines = []
    for index, face in enumerate(faces):
        left, top, right, bottom = face.box
        line = (f"face {index}: x={left:.0f}, y={top:.0f}, w={right - left:.0f}, h={bottom - top:.0f} "
                f"({_percent(face, height * width)} of the photo)")
        if face.area < MIN_CHOSEN_FACE * height * width:
            line += f", under {MIN_CHOSEN_FACE:.0%}: never picked by 'largest'"
        lines.append(line)
    return lines


def _listing(faces: list[DetectedFace], photo_area: float) -> str:
    return "; ".join(f"face {index} covers {_percent(face, photo_area)}" for index, face in enumerate(faces))


def parse_face_choice(value: str | int) -> str | int:
    """A face choice as text (``--face``, a node's combo, a JOBS cell) → ``'largest'`` or an index (left to right).

    Only the form is checked here (an index is a whole number); :func:`choose_face` checks it against the faces.

    Raises:
        InputError: neither ``'largest'`` nor a whole number.

    Example:
        >>> parse_face_choice("largest"), parse_face_choice("1")
        ('largest', 1)
    """
    if value == "largest" or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--face {value!r}: give 'largest' or an index 0, 1, ... (faces left to right).") from None


def choose_face(faces: list[DetectedFace], face: str | int, what: str = "the photo",
                photo_size: tuple[int, int] | None = None) -> DetectedFace:
    """``'largest'`` (landmark box area, among the faces covering at least :data:`MIN_CHOSEN_FACE` of the photo
    when ``photo_size`` ``(height, width)`` is given) or an index into ``faces`` (left to right; any face, however
    small: see :func:`face_warnings`).

    Raises:
        InputError: no face; only faces under :data:`MIN_CHOSEN_FACE` for ``'largest'``; the index is past the
            faces found.
    """
    if not faces:
        raise InputError(f"No face found in {what}. {NO_FACE_ADVICE}")
    if face == "largest":
        if photo_size is None:
            return max(faces, key=lambda f: f.area)
        area = photo_size[0] * photo_size[1]
        big = [f for f in faces if f.area >= MIN_CHOSEN_FACE * area]
        if not big:
            raise InputError(f"Only faces under {MIN_CHOSEN_FACE:.0%} of {what}'s area were found "
                             f"({_listing(faces, area)}); 'largest' never picks a face that small (it is animated "
                             "from very few pixels, and may be a picture or a false detection). Crop the photo "
                             "closer to the person, or choose the face by its index (0, 1, ... from the left) to "
                             "animate it anyway.")
        return max(big, key=lambda f: f.area)
    if not isinstance(face, int) or face < 0:
        raise InputError(f"The face must be 'largest' or an index 0, 1, ... (left to right), got {face!r}.")
    if face >= len(faces):
        raise InputError(f"Face {face} was asked for, but {what} shows {len(faces)} face(s) (numbered 0 to "
                         f"{len(faces) - 1}, left to right). Choose another index or 'largest'.")
    return faces[face]


def face_warnings(faces: list[DetectedFace], face: str | int, photo_size: tuple[int, int]) -> list[str]:
    """What to warn about a face choice (call after :func:`choose_face` accepted it): ``'largest'`` with two
    faces within :data:`AMBIGUOUS_AREA` of each other's area, or an index picking a face under
    :data:`MIN_CHOSEN_FACE` of the photo."""
    area = photo_size[0] * photo_size[1]
    if face == "largest":
        big = sorted(((f.area, index) for index, f in enumerate(faces) if f.area >= MIN_CHOSEN_FACE * area),
                     reverse=True)
        if len(big) >= 2 and big[1][0] >= (1 - AMBIGUOUS_AREA) * big[0][0]:
            (first, a), (second, b) = big[:2]
            return [f"'largest' is ambiguous: faces {a} and {b} differ in area by only "
                    f"{100 * (1 - second / first):.0f}% (under {AMBIGUOUS_AREA:.0%}); face {a} is animated. Choose "
                    f"the person by index (face {min(a, b)} or {max(a, b)}, e.g. --face {a}) to be sure."]
        return []
    if isinstance(face, int) and 0 <= face < len(faces) and faces[face].area < MIN_CHOSEN_FACE * area:
        return [f"face {face} covers only {_percent(faces[face], area)} of the photo (under "
                f"{MIN_CHOSEN_FACE:.0%}); it is animated as asked, from very few pixels, so expect a soft, "
                "unsteady result."]
    return []


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


#: The photo canvas's longest side is capped at this (the pasted output's resolution limit).
MAX_PHOTO_SIDE = 2048


def photo_canvas(photo: np.ndarray, square: CropSquare) -> tuple[np.ndarray, CropSquare, list[str]]:
    """The photo as paste-back's canvas, and the square on it.

    The canvas is the photo with its longest side capped at :data:`MAX_PHOTO_SIDE` (the animated square is
    rendered at 512², so larger canvases add only untouched photo pixels and encoding time; ``cv2.INTER_AREA``)
    and an odd width or height trimmed by its last column or row (H.264 needs even sizes).

    Args:
        photo: ``[H,W,3]`` uint8, the photo the square was cut from.
        square: the crop square in ``photo``'s pixels.

    Returns:
        ``(canvas [h,w,3]`` uint8, the square in canvas pixels, notes: one line per change made``)``.

    Example:
        >>> canvas, square, notes = photo_canvas(np.zeros((301, 400, 3), np.uint8), CropSquare(10, 20, 200))
        >>> canvas.shape, square, notes
        ((300, 400, 3), CropSquare(left=10, top=20, side=200), ['odd size 400x301 trimmed to 400x300 for H.264'])
    """
    height, width = photo.shape[:2]
    notes = []
    scale = min(1.0, MAX_PHOTO_SIDE / max(height, width))
    canvas = photo
    if scale < 1.0:
        size = (max(2, round(width * scale)), max(2, round(height * scale)))
        canvas = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        notes.append(f"the photo output is capped at {MAX_PHOTO_SIDE} px: {width}x{height} → {size[0]}x{size[1]}")
        square = square.scaled(size[0] / width)
    even_h, even_w = canvas.shape[0] // 2 * 2, canvas.shape[1] // 2 * 2
    if (even_h, even_w) != canvas.shape[:2]:
        notes.append(f"odd size {canvas.shape[1]}x{canvas.shape[0]} trimmed to {even_w}x{even_h} for H.264")
        canvas = canvas[:even_h, :even_w]
    return np.ascontiguousarray(canvas), square, notes


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
