"""Torso inpainting and background extraction from one segmented frame (spec §7, §8).

Both work on uint8 RGB images [H,W,3] and [H,W] label maps (classes of :mod:`.segmentation`) in numpy/cv2,
because the official results depend on uint8 truncation and OpenCV's Gaussian blur; every step is vectorised
over pixels and columns.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy import ndimage

from ..defaults import FRAME_SIZE
from ..errors import InputError
from ..images import as_uint8_frames
from .segmentation import BACKGROUND, BODY_SKIN, CLOTHES, HEAD_CLASSES, check_label_map

TORSO_FILL_LENGTH = 9          # rows painted above the top clothes pixel of a column
NECK_FILL_LENGTH = 53          # rows painted above the (pushed-down) top neck pixel
NECK_PUSH_DOWN = 4
NECK_DILATION = 3              # vertical dilation of the body-skin mask, in pixels up and down
FILL_DARKENING = 0.98          # colour factor per row away from the source pixel
NECK_BLUR_SIGMA = 4            # the official call passes cv2.BORDER_DEFAULT (= 4) where sigmaX goes
CERTAIN_BACKGROUND_DISTANCE = 10.0


def _single_frame(image: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = as_uint8_frames(image)
    if frames.shape[0] != 1:
        raise InputError(f"Expected one image, got {frames.shape[0]}.")
    labels = check_label_map(torch.as_tensor(labels)).cpu().numpy()
    if labels.shape != (1,) + frames.shape[1:3]:
        raise InputError(f"Label map {labels.shape[1:]} does not match the image {frames.shape[1:3]}.")
    return frames[0], labels[0]


def _fill_up_from_top(work: np.ndarray, source: np.ndarray, region: np.ndarray, head: np.ndarray, length: int,
                      push_down: int = 0) -> np.ndarray:
    """Paint upward from the top pixel of ``region`` in every column whose pixel above that is head.

    The colour of the source pixel (the top pixel moved down by ``min(pixels in column − 1, push_down)``) is
    painted at rows ``top + shift − k`` for k < length, darkened by 0.98^k and truncated to uint8. Row indices
    below 0 wrap to the bottom of the image, as numpy's negative indexing does in the official code.
    Returns the [H,W] bool mask of painted pixels.
    """
    height = work.shape[0]
    columns = np.flatnonzero(region.any(0))
    top = region[:, columns].argmax(0)
    below_head = head[(top - 1) % height, columns]
    columns, top = columns[below_head], top[below_head]
    shift = np.minimum(region[:, columns].sum(0) - 1, push_down)
    source_rows = top + shift
    colour = source[source_rows, columns].astype(np.float64)                     # [m,3]
    k = np.arange(length)
    rows = (source_rows[None, :] - k[:, None]) % height                          # [L,m]
    work[rows, columns[None, :]] = colour[None] * (FILL_DARKENING ** k)[:, None, None]
    painted = np.zeros(region.shape, dtype=bool)
    painted[rows, columns[None, :]] = True
    return painted


def inpaint_torso(image: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The official ``inpaint_torso_job``: the torso without the head, the neck extended up under the chin.

    Args:
        image: [H,W,3] (or [1,H,W,3]) RGB uint8, or float in [0,1].
        labels: [H,W] (or [1,H,W]) selfie-multiclass label map of the same size.

    Returns:
        [H,W,3] uint8 tensor: torso image, black outside neck, clothes and the painted areas
        (``ref_torso_img`` once mapped to [-1,1]).
    """
    original, labels = _single_frame(image, labels)
    head = np.isin(labels, HEAD_CLASSES)
    clothes = labels == CLOTHES
    work = original.copy()
    work[head] = 0

    torso_fill = _fill_up_from_top(work, original, clothes, head, TORSO_FILL_LENGTH)
    neck = ndimage.binary_dilation(labels == BODY_SKIN, structure=np.ones((3, 1), dtype=bool),
                                   iterations=NECK_DILATION)
    neck_fill = _fill_up_from_top(work, original, neck, head, NECK_FILL_LENGTH, NECK_PUSH_DOWN)
    blurred = cv2.GaussianBlur(work, (5, 5), NECK_BLUR_SIGMA)
    work[neck_fill] = blurred[neck_fill]

    work[~(neck | clothes | neck_fill | torso_fill)] = 0
    device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    return torch.from_numpy(work).to(device)


def extract_background(image: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Background plate from one frame (official ``extract_background(..., 'knn')``).

    Pixels more than 10 px (Euclidean) from every person pixel keep their colour; every other pixel takes the
    colour of its nearest such "certain background" pixel. Nearest-pixel ties are broken by the exact Euclidean
    distance transform, where the official KD-tree may pick another pixel at the same distance.

    Args:
        image: [H,W,3] RGB uint8 or float in [0,1]; labels: [H,W] label map.

    Returns:
        [H,W,3] uint8 tensor.

    Raises:
        InputError: no pixel is 10 px away from the person (nothing to fill from).
    """
    original, labels = _single_frame(image, labels)
    person = labels != BACKGROUND
    device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    if not person.any():
        return torch.from_numpy(original.copy()).to(device)
    distance_to_person = ndimage.distance_transform_edt(~person)
    certain = distance_to_person > CERTAIN_BACKGROUND_DISTANCE
    if not certain.any():
        raise InputError("The person fills the whole frame, so no background can be recovered; connect a background "
                         "image instead.")
    nearest_rows, nearest_cols = ndimage.distance_transform_edt(~certain, return_distances=False,
                                                                return_indices=True)
    return torch.from_numpy(original[nearest_rows, nearest_cols]).to(device)


def resize_background(image: torch.Tensor | np.ndarray, size: int = FRAME_SIZE) -> torch.Tensor:
    """A user background resized to size² (cv2 INTER_LINEAR, aspect ratio ignored, as official). → [size,size,3] u8."""
    frame = as_uint8_frames(image)[0]
    device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
    return torch.from_numpy(cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)).to(device)
