"""The per-frame conditioning tracks of Talk3D's tokens (spec §1.2 step 2, §2.2), computed as officially.

* ``landmarks`` ``[N,6,2]``: the six smoothed, int-truncated raw-frame points divided by the frame **width** (for
  both axes: official quirk, spec §8.4) and mapped to ``(·−0.5)·2``.
* ``head_angles`` ``[N,3]`` (pitch, yaw, roll) degrees by the official ``face_orientation``
  (``preprocess_utils/pose_estimation.py``): ``cv2.solvePnP`` (iterative) of a generic six-point 3-D face
  (:data:`FACE_MODEL_POINTS`, in the order of the six points) against a pinhole camera of the raw frame (centre =
  image centre, f = (W/2)/tan 30°, no distortion), Euler angles from ``decomposeProjectionMatrix``, each wrapped by
  ``asin(sin(·))``, returned as (pitch, yaw, −roll); then a Gaussian of σ = 1 frame over time (``mode='nearest'``).
  **Quirk kept:** the 2-D points given to solvePnP are the *normalised* [-1,1] landmarks, not pixels (spec §8.2):
  geometrically meaningless but what the official checkpoints were trained on.
* ``blink`` ``[N]`` AU45 intensity in [0,2] from MediaPipe's eye-blink blend shapes (:func:`blink_au45`).
"""

from __future__ import annotations

import math

import numpy as np

#: The official generic face (nose tip, chin, "left eye left corner", "right eye right corner", left and right
#: mouth corners) as written in ``pose_estimation.py`` — note ±165 for the eye corners there, not the ±225 of the
#: tutorial it was borrowed from. Paired in order with the six points ``[30, 8, 45, 36, 64, 60]``.
FACE_MODEL_POINTS = np.array([
    (0.0, 0.0, 0.0),
    (0.0, -330.0, -65.0),
    (-165.0, 170.0, -135.0),
    (165.0, 170.0, -135.0),
    (-150.0, -150.0, -125.0),
    (150.0, -150.0, -125.0),
])
ANGLE_SIGMA = 1.0

#: Blink mapping (:func:`blink_au45`): MediaPipe blend-shape score at which AU45 reaches 2 (eyes shut).
BLINK_SHUT_SCORE = 0.6
#: Upper bound of the per-video open-eye baseline (a video where the eyes are shut most of the time).
BLINK_BASELINE_MAX = 0.3


def landmark_track(points: np.ndarray, frame_width: int) -> np.ndarray:
    """``[N,6,2]`` raw-frame pixel points (smoothed, int32) → ``[N,6,2]`` float32 ``(p / W − 0.5)·2``, x and y
    both divided by the frame width ``W`` (official quirk)."""
    return ((np.asarray(points, np.float32) / np.float32(frame_width) - 0.5) * 2).astype(np.float32)


def face_orientation(landmarks: np.ndarray, frame_width: int, frame_height: int) -> tuple[float, float, float]:
    """Official ``face_orientation`` of one frame: ``landmarks`` ``[6,2]`` normalised as :func:`landmark_track`
    (the quirk), the camera of a ``frame_width`` × ``frame_height`` frame → (pitch, yaw, roll) degrees, each in
    [-90, 90]."""
    import cv2

    image_points = np.asarray(landmarks, np.float32).astype(np.float64)
    centre = (frame_width / 2, frame_height / 2)
    focal = centre[0] / np.tan(60 / 2 * np.pi / 180)
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], dtype=np.float64)
    _, rotation_vector, translation = cv2.solvePnP(FACE_MODEL_POINTS, image_points, camera, np.zeros((4, 1)),
                                                   flags=cv2.SOLVEPNP_ITERATIVE)
    rotation = cv2.Rodrigues(rotation_vector)[0]
    euler = cv2.decomposeProjectionMatrix(np.hstack([rotation, translation]))[6].reshape(3)
    pitch, yaw, roll = (math.radians(float(a)) for a in euler)
    return (math.degrees(math.asin(math.sin(pitch))), math.degrees(math.asin(math.sin(yaw))),
            -math.degrees(math.asin(math.sin(roll))))


def head_angles(landmarks: np.ndarray, frame_width: int, frame_height: int, sigma: float = ANGLE_SIGMA
                ) -> np.ndarray:
    """``[N,6,2]`` normalised landmarks → ``[N,3]`` float32 (pitch, yaw, roll) degrees, smoothed over time."""
    from scipy.ndimage import gaussian_filter1d

    angles = np.array([face_orientation(frame, frame_width, frame_height) for frame in landmarks], np.float64)
    angles = angles.reshape(-1, 3)
    if len(angles) > 1:
        angles = gaussian_filter1d(angles, sigma, axis=0, mode="nearest")
    return angles.astype(np.float32)


def blink_au45(scores: np.ndarray) -> np.ndarray:
    """MediaPipe eye-blink blend shapes → the official blink token's AU45 scale ``[N]`` float32 in [0,2].

    The official token is OpenFace 2.0's ``AU45_r`` clipped to [0,2]. OpenFace calibrates its AU intensities per
    person on video (it subtracts the person's neutral), so open eyes read about 0 whatever the eye shape, a half
    closure about 1 and a full blink 2 or more (clipped). MediaPipe's ``eyeBlinkLeft/Right`` (mean of the two,
    ``scores`` in [0,1]) read about 0.0–0.2 for open eyes depending on the face and 0.5–0.9 for shut ones. The map
    is therefore linear between the video's own open-eye baseline ``b₀`` (the median score, since the eyes are open
    most of the time; capped at :data:`BLINK_BASELINE_MAX`) and :data:`BLINK_SHUT_SCORE` = 0.6, a shut eye:

        ``AU45 = clip(2 · (b − b₀) / (0.6 − b₀), 0, 2)``
    """
    scores = np.asarray(scores, np.float64)
    if scores.size == 0:
        return scores.astype(np.float32)
    baseline = min(float(np.median(scores)), BLINK_BASELINE_MAX)
    return np.clip(2 * (scores - baseline) / (BLINK_SHUT_SCORE - baseline), 0, 2).astype(np.float32)
