"""Face, mouth, body and torso masks of the aligned crops (official BiSeNet masks, spec §1.2 step 2), r3dp's way.

The official masks come from BiSeNet-19 on each 512² crop: ``faceseg`` = skin, brows, eyes, glasses, ears,
earring, nose, mouth, lips and hair, eroded 3×3, with the smallest connected component removed when there are
several (quirk kept: only the smallest one); ``mouthseg`` = mouth + lips (not eroded); ``bodyseg`` = every class
but background and hat, eroded 3×3; ``torsoseg`` = neck, necklace, cloth, eroded 3×3.

r3dp has MediaPipe's 6-class selfie segmenter (0 background, 1 hair, 2 body skin, 3 face skin, 4 clothes,
5 others) and the face landmarks instead:

* face  = hair ∪ face skin ∪ others ∪ the mouth polygon, eroded 3×3, smallest component removed (as officially);
* mouth = the filled outer-lip polygon of the landmarks (lips and the opening between them = mouth ∪ lips);
* body  = every class but background, eroded 3×3;
* torso = body skin ∪ clothes (neck, shoulders, clothes), eroded 3×3.

Without the segmenter file (the stand-ins), a landmark-only fallback (:func:`landmark_masks`): face = convex hull of
the 478 points ∪ the mouth polygon; body = the face ∪ the region below the chin line widening to 2.6 face widths at
the bottom of the crop (shoulders); torso = body minus face; eroded as above.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...geometry.landmarks import INNER_LIP_IDS, OUTER_LIP_IDS

MASKS = ("face", "mouth", "body", "torso")
#: MediaPipe lip points kept per frame (``tracks["lips"]``): outer ring then inner ring.
LIP_IDS = OUTER_LIP_IDS + INNER_LIP_IDS
CHIN = 152
#: Outer-lip ring in order around the mouth (MediaPipe ``FACEMESH_LIPS`` outer contour).
OUTER_LIP_RING = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS = 1, 2, 3, 4, 5


def _erode(mask: np.ndarray) -> np.ndarray:
    import cv2

    # kornia's erosion with a 3×3 kernel ignores pixels outside the image (geodesic border): cv2's default border
    # (the maximum value) behaves the same
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))


def remove_smallest_component(mask: np.ndarray) -> np.ndarray:
    """Official ``remove_small_mask``: with more than one connected component (4-connected, as ``ndimage.label``),
    only the smallest one is removed."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 2:
        return mask
    smallest = 1 + int(np.argmin(stats[1:, cv2.CC_STAT_AREA]))
    out = mask.copy()
    out[labels == smallest] = 0
    return out


def mouth_polygon(points: np.ndarray, size: int) -> np.ndarray:
    """``[size,size]`` uint8 0/1: the filled outer-lip polygon of ``points`` ``[478,2]`` (crop pixels)."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    ring = np.round(np.asarray(points)[list(OUTER_LIP_RING)]).astype(np.int32)
    cv2.fillPoly(mask, [ring], 1)
    return mask


def masks_from_labels(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Selfie-multiclass labels ``[S,S]`` (0..5) of a crop and its landmarks ``[478,2]`` (crop pixels) →
    ``[4,S,S]`` uint8 0/1 (:data:`MASKS` order; module docstring)."""
    size = labels.shape[0]
    mouth = mouth_polygon(points, size)
    face = np.isin(labels, (HAIR, FACE_SKIN, OTHERS)).astype(np.uint8) | mouth
    face = remove_smallest_component(_erode(face))
    body = _erode(labels != 0)
    torso = _erode(np.isin(labels, (BODY_SKIN, CLOTHES)))
    return np.stack([face, mouth, body, torso]).astype(np.uint8)


def landmark_masks(points: np.ndarray, size: int) -> np.ndarray:
    """The landmark-only fallback (module docstring): ``points`` ``[478,2]`` crop pixels → ``[4,S,S]`` uint8 0/1."""
    import cv2

    points = np.asarray(points, np.float64)
    mouth = mouth_polygon(points, size)
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, np.round(cv2.convexHull(points.astype(np.float32))[:, 0]).astype(np.int32), 1)
    face |= mouth
    left, right = points[:, 0].min(), points[:, 0].max()
    centre, half = (left + right) / 2, (right - left) / 2
    chin_y = points[CHIN, 1]
    below = np.zeros((size, size), np.uint8)
    bottom = max(size - 1, chin_y + 1)
    shoulders = np.array([[centre - 0.6 * half, chin_y - 0.1 * half], [centre + 0.6 * half, chin_y - 0.1 * half],
                          [centre + 2.6 * half, bottom], [centre - 2.6 * half, bottom]])
    cv2.fillConvexPoly(below, np.round(shoulders).astype(np.int32), 1)
    body = face | below
    torso = below & (1 - face)
    return np.stack([remove_smallest_component(_erode(face)), mouth, _erode(body), _erode(torso)]).astype(np.uint8)


def segment_crops(crops: np.ndarray, segmenter: Path) -> np.ndarray:
    """Selfie-multiclass labels ``[B,S,S]`` uint8 of crops ``[B,S,S,3]`` (MediaPipe, IMAGE mode)."""
    from ...geometry.segmentation import segment_selfie_multiclass

    return segment_selfie_multiclass(crops, segmenter).to("cpu").numpy().astype(np.uint8)


def crop_masks(crops: np.ndarray, points: np.ndarray, segmenter: Path | None) -> np.ndarray:
    """The masks ``[B,4,S,S]`` uint8 0/1 of crops ``[B,S,S,3]`` with landmarks ``[B,478,2]`` in crop pixels: from the
    segmenter when given, else the landmark-only fallback."""
    size = crops.shape[1]
    if segmenter is None:
        return np.stack([landmark_masks(p, size) for p in points])
    labels = segment_crops(crops, segmenter)
    return np.stack([masks_from_labels(label, p) for label, p in zip(labels, points)])


#: Eyebrow tops (MediaPipe), the upper edge of the mouth box.
BROW_IDS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


def mouth_box(points: np.ndarray, size: int) -> np.ndarray:
    """The face box Wav2Lip's S3FD gave on the crop (official ``wav2lip_bbox``), from landmarks: ``[4]`` float32
    ``x1, y1, x2, y2`` crop pixels.

    S3FD boxes span the face from cheek to cheek and from about the eyebrows to the chin; Wav2Lip pads the
    bottom by 10 px (at 512²). Here: x from the leftmost to the rightmost of the 478 points, y1 = the highest
    eyebrow point, y2 = the chin (152) + 10·S/512, clipped to the crop. The sync loss uses its lower half.
    """
    points = np.asarray(points, np.float64)
    x1, x2 = points[:, 0].min(), points[:, 0].max()
    y1 = points[list(BROW_IDS), 1].min()
    y2 = points[CHIN, 1] + 10 * size / 512
    box = np.clip([x1, y1, x2, y2], 0, size)
    return box.astype(np.float32)
