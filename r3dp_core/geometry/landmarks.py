"""MediaPipe 478-point face landmarks, as the official preprocessing extracts them (spec §4).

Points are returned in pixel units of the image they were detected on: ``(x·W, y·H)`` of MediaPipe's
normalised landmarks, x to the right, y down, origin at the top-left corner (z dropped). The 3DMM fit uses
points 0..467 and flips y itself.

Face choice when MediaPipe sees several faces: ``'largest'`` (bounding box of the 478 points) or an index in
MediaPipe's result order. ``face=0`` runs MediaPipe with ``num_faces=1`` exactly as the official code does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..defaults import MOTION_FPS
from ..errors import InputError, ModelFileError
from ..images import as_uint8_frames

NUM_LANDMARKS = 478
# The official video extraction spaces VIDEO-mode timestamps 20 frame periods (of 25 fps) apart to weaken
# MediaPipe's temporal smoothing.
VIDEO_TIMESTAMP_STEP_MS = 1000 / MOTION_FPS * 20

# Landmark ids whose VIDEO-mode positions the official code replaces by the IMAGE-mode ones.
EYE_IDS = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
           263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
INNER_LIP_IDS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
WITHIN_MOUTH_IDS = (76, 62, 184, 183, 74, 72, 73, 41, 72, 38, 11, 12, 302, 268, 303, 271, 304, 272, 408, 407,
                    292, 306, 325, 307, 319, 320, 403, 404, 316, 315, 15, 16, 86, 85, 179, 180, 89, 90, 96, 77)
IMAGE_MODE_IDS = tuple(sorted(set(EYE_IDS + INNER_LIP_IDS + OUTER_LIP_IDS + WITHIN_MOUTH_IDS)))

FaceChoice = str | int


@dataclass
class Landmarks:
    """points: [T,478,2] float32 pixel coordinates (x right, y down); found: [T] bool, a face was detected
    on that frame (frames without one hold the substitute described by the function that made them)."""

    points: torch.Tensor
    found: torch.Tensor


# A stand-in landmarker (``r3dp doctor --selftest`` without MediaPipe's model file): a JSON file holding one
# fixed face, [478,2] coordinates normalised to the image, returned for every image. MediaPipe's .task files are
# zip archives, so the two cannot be confused.
STANDIN_KEY = "r3dp_standin_landmarks"


def standin_layout(model_path: str | Path) -> np.ndarray | None:
    """The normalised ``[478,2]`` face of a stand-in landmarker file, or None for a real MediaPipe model."""
    prefix = ('{"' + STANDIN_KEY).encode()
    try:
        with open(model_path, "rb") as fh:
            if fh.read(len(prefix)) != prefix:
                return None
    except OSError:
        return None
    return np.asarray(json.loads(Path(model_path).read_text())[STANDIN_KEY], dtype=np.float64)


def write_standin_landmarker(path: str | Path, layout: np.ndarray) -> Path:
    """Write a stand-in landmarker file that 'detects' ``layout`` (``[478,2]`` in [0,1]) in every image."""
    path = Path(path)
    path.write_text(json.dumps({STANDIN_KEY: np.asarray(layout, dtype=np.float64).tolist()}))
    return path


def _check_face_choice(face: FaceChoice) -> None:
    if face != "largest" and not (isinstance(face, int) and face >= 0):
        raise ValueError(f"face must be 'largest' or a non-negative index, got {face!r}")


def create_landmarker(model_path: str | Path, video: bool, num_faces: int, blendshapes: bool = False):
    """A MediaPipe face landmarker (a context manager) in VIDEO or IMAGE mode, finding up to ``num_faces``;
    ``blendshapes``: its results also hold the 52 ARKit-style blend-shape scores of each face
    (``result.face_blendshapes``, e.g. ``eyeBlinkLeft`` in [0,1])."""
    from mediapipe.tasks.python import BaseOptions, vision

    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"Face landmarker model {path} not found; download face_landmarker.task from "
                             "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
                             "float16/latest/face_landmarker.task")
    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           running_mode=mode, num_faces=num_faces,
                                           output_face_blendshapes=blendshapes)
    try:
        return vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a usable MediaPipe face landmarker model: {exc}") from exc


def _num_faces(face: FaceChoice, max_faces: int) -> int:
    return max(max_faces, 1) if face == "largest" else face + 1


def faces_in_result(result, width: int, height: int) -> list[np.ndarray]:
    """Every face of a MediaPipe result as [478,2] float64 pixels, in MediaPipe's order."""
    return [np.array([[p.x, p.y] for p in lms], dtype=np.float64) * (width, height) for lms in result.face_landmarks]


def _select(result, width: int, height: int, face: FaceChoice) -> np.ndarray | None:
    """The chosen face of a MediaPipe result as [478,2] float64 pixels, or None."""
    faces = faces_in_result(result, width, height)
    if face == "largest":
        if not faces:
            return None
        return max(faces, key=lambda pts: float(np.prod(pts.max(0) - pts.min(0))))
    return faces[face] if face < len(faces) else None


def to_mediapipe_image(frame: np.ndarray):
    """RGB uint8 ``[H,W,3]`` (contiguous) → ``mediapipe.Image``."""
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)


def _as_output(points: np.ndarray, found: np.ndarray, like: torch.Tensor | np.ndarray) -> Landmarks:
    device = like.device if isinstance(like, torch.Tensor) else torch.device("cpu")
    return Landmarks(torch.from_numpy(points.astype(np.float32)).to(device), torch.from_numpy(found).to(device))


def detect_image_points(frames: np.ndarray, model_path: str | Path, face: FaceChoice = "largest",
                        max_faces: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """IMAGE-mode detection on uint8 frames [T,H,W,3] → (points [T,478,2] float64 as MediaPipe gives them,
    found [T] bool); frames without the face hold zeros. Prefer :func:`detect_landmarks_image`."""
    _check_face_choice(face)
    count, height, width = frames.shape[:3]
    if (layout := standin_layout(model_path)) is not None:
        return np.repeat((layout * (width, height))[None], count, axis=0), np.ones(count, dtype=bool)
    points = np.zeros((count, NUM_LANDMARKS, 2))
    found = np.zeros(count, dtype=bool)
    with create_landmarker(model_path, video=False, num_faces=_num_faces(face, max_faces)) as landmarker:
        for index, frame in enumerate(frames):
            chosen = _select(landmarker.detect(to_mediapipe_image(frame)), width, height, face)
            if chosen is not None:
                points[index], found[index] = chosen, True
    return points, found


def detect_faces(image: np.ndarray, model_path: str | Path, max_faces: int = 4) -> list[np.ndarray]:
    """IMAGE-mode detection of every face (up to ``max_faces``) in one uint8 image [H,W,3] → list of [478,2]
    float64 pixel points, largest first (the one ``face='largest'`` picks)."""
    height, width = image.shape[:2]
    if (layout := standin_layout(model_path)) is not None:
        return [layout * (width, height)]
    with create_landmarker(model_path, video=False, num_faces=max(max_faces, 1)) as landmarker:
        faces = faces_in_result(landmarker.detect(to_mediapipe_image(np.ascontiguousarray(image))), width, height)
    return sorted(faces, key=lambda pts: -float(np.prod(pts.max(0) - pts.min(0))))


NO_FACE_ADVICE = ("Use a photo with one clearly visible, roughly frontal face (a strong profile, a covered or a very "
                  "small face is not detected).")


def raise_if_missing(found: np.ndarray, face: FaceChoice, require_all: bool = True) -> None:
    """InputError naming the frames without a face (all of them must have one if ``require_all``)."""
    missing = np.flatnonzero(~found)
    if missing.size and (require_all or missing.size == found.size):
        which = "the photo" if found.size == 1 else f"frame(s) {missing[:10].tolist()}"
        extra = "" if face == "largest" else f" (face index {face} was requested)"
        raise InputError(f"No face found in {which}{extra}. {NO_FACE_ADVICE}")


def detect_landmarks_image(images: torch.Tensor | np.ndarray, model_path: str | Path, face: FaceChoice = "largest",
                           max_faces: int = 4, require_all: bool = True) -> Landmarks:
    """IMAGE-mode landmarks of every image independently (official ``extract_lm478_from_img``).

    Args:
        images: [T,H,W,3] or [H,W,3] RGB, uint8 or float in [0,1].
        model_path: ``face_landmarker.task``.
        face: ``'largest'`` or an index into MediaPipe's faces (see module docstring).
        max_faces: faces MediaPipe looks for when ``face='largest'``.
        require_all: raise :class:`InputError` if any image has no face; otherwise such frames get zeros and
            ``found=False`` (an error is still raised when no image has a face).

    Returns:
        :class:`Landmarks` with points [T,478,2] on the input's device.
    """
    points, found = detect_image_points(as_uint8_frames(images), model_path, face, max_faces)
    raise_if_missing(found, face, require_all)
    return _as_output(points, found, images)


def _fill_missing(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Frames without a detection take the previous detected frame's points (leading ones the first detection)."""
    last = np.maximum.accumulate(np.where(found, np.arange(found.size), -1))
    source = np.where(last >= 0, last, np.flatnonzero(found)[0])
    return points[source]


def track_video(chunks: Callable[[], Iterable[np.ndarray]], model_path: str | Path, face: FaceChoice = "largest",
                max_faces: int = 4) -> Landmarks:
    """Landmarks of a video the official way (``extract_lm478_from_frames`` + ``combine_vid_img_lm478_to_lm478``),
    read block by block, so that memory does not grow with its length.

    Every frame goes through an IMAGE-mode landmarker and a VIDEO-mode one (timestamps 800 ms apart); the
    result is the VIDEO-mode points with the eye and mouth ids (:data:`IMAGE_MODE_IDS`) taken from IMAGE mode.
    A frame where a mode finds no face reuses that mode's previous detection, like the official code; unlike it,
    leading frames without a face take the first detection instead of failing.

    VIDEO mode tracks the face only while it looks for a single face (with more it re-detects every frame and
    returns the IMAGE-mode points), so with ``face='largest'`` the VIDEO pass uses ``num_faces=1``, as the
    official code does, unless the IMAGE pass saw several faces in some frame.

    Args:
        chunks: called once per landmarker pass (twice); yields [B,H,W,3] RGB blocks of consecutive frames, uint8
            or float in [0,1] (``lambda: [frames]`` for a video in memory).

    Returns:
        :class:`Landmarks` on the CPU; ``found[t]`` is True when both modes detected the face on frame t. When no
        frame has a face, every point is zero and ``found`` is all False, and the caller decides.
    """
    _check_face_choice(face)
    num_faces = _num_faces(face, max_faces)
    image_pass, most_faces = [], 0
    with create_landmarker(model_path, video=False, num_faces=num_faces) as landmarker:
        for frame in _frames(chunks):
            result = landmarker.detect(to_mediapipe_image(frame))
            most_faces = max(most_faces, len(result.face_landmarks))
            image_pass.append(_select(result, frame.shape[1], frame.shape[0], face))
    if face == "largest" and most_faces <= 1:
        face, num_faces = 0, 1
    video_pass = []
    with create_landmarker(model_path, video=True, num_faces=num_faces) as landmarker:
        for index, frame in enumerate(_frames(chunks)):
            result = landmarker.detect_for_video(to_mediapipe_image(frame), int(VIDEO_TIMESTAMP_STEP_MS * index))
            video_pass.append(_select(result, frame.shape[1], frame.shape[0], face))
    if len(video_pass) != len(image_pass):
        raise InputError(f"The video gave {len(image_pass)} frames on one read and {len(video_pass)} on the next; "
                         "it is damaged. Re-encode it (e.g. ffmpeg -i in.mp4 out.mp4).")
    (image_points, image_found), (video_points, video_found) = _stack(image_pass), _stack(video_pass)
    if not (image_found.any() and video_found.any()):
        return _as_output(np.zeros((len(image_pass), NUM_LANDMARKS, 2)), np.zeros(len(image_pass), bool), np.empty(0))
    combined = _fill_missing(video_points, video_found)
    combined[:, IMAGE_MODE_IDS] = _fill_missing(image_points, image_found)[:, IMAGE_MODE_IDS]
    return _as_output(combined, image_found & video_found, np.empty(0))


def _frames(chunks: Callable[[], Iterable[np.ndarray]]) -> Iterator[np.ndarray]:
    for block in chunks():
        yield from as_uint8_frames(block)


def _stack(detections: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame detections (None = no face) → (points [T,478,2] with zeros where none, found [T])."""
    points = np.zeros((len(detections), NUM_LANDMARKS, 2))
    found = np.array([d is not None for d in detections], dtype=bool)
    for index in np.flatnonzero(found):
        points[index] = detections[index]
    return points, found
