"""Head / torso / background masks from a 6-class selfie label map (spec §6).

Label maps are [T,H,W] integer tensors with MediaPipe's selfie-multiclass classes
0 background, 1 hair, 2 body skin, 3 face skin, 4 clothes, 5 others (accessories). They come from
:func:`segment_selfie_multiclass` (the official model, ``selfie_multiclass_256x256.tflite``) or from any other
segmentation through :func:`label_map_from_masks`. The masks of a label map are :func:`head_mask` and its siblings;
the masks of an avatar's one-hot ``segmap`` are :func:`segmap_mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..defaults import MASK_THRESHOLD
from ..errors import InputError, ModelFileError
from ..images import as_uint8_frames

BACKGROUND, HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS = range(6)
NUM_CLASSES = 6
HEAD_CLASSES = (HAIR, FACE_SKIN, OTHERS)
TORSO_CLASSES = (BODY_SKIN, CLOTHES)
PERSON_CLASSES = (HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS)
TORSO_WITH_BACKGROUND_CLASSES = (BACKGROUND, BODY_SKIN, CLOTHES)


def check_label_map(labels: torch.Tensor) -> torch.Tensor:
    """Validate a [T,H,W] (or [H,W]) integer label map with values in 0..5; returns it as int64 [T,H,W]."""
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise InputError(f"A segmentation label map must be an integer [frames, height, width] tensor, got "
                         f"{labels.dtype} {tuple(labels.shape)}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise InputError(f"Segmentation labels must lie in 0..{NUM_CLASSES - 1} (selfie-multiclass classes), got "
                         f"{int(labels.min())}..{int(labels.max())}.")
    return labels.long()


def one_hot_segmap(labels: torch.Tensor) -> torch.Tensor:
    """Label map [T,H,W] → one-hot ``segmap`` [T,6,H,W] float32 (the torso network's segmap input)."""
    labels = check_label_map(labels)
    return torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()


def class_mask(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """[T,H,W] bool, True where the label is one of ``classes``."""
    labels = check_label_map(labels)
    return torch.isin(labels, torch.tensor(classes, device=labels.device))


def head_mask(labels: torch.Tensor) -> torch.Tensor:
    """[T,H,W] bool: hair, face skin and accessories (the official ``'head'`` mode)."""
    return class_mask(labels, HEAD_CLASSES)


def torso_mask(labels: torch.Tensor) -> torch.Tensor:
    """[T,H,W] bool: body skin and clothes."""
    return class_mask(labels, TORSO_CLASSES)


def person_mask(labels: torch.Tensor) -> torch.Tensor:
    """[T,H,W] bool: every class but background."""
    return class_mask(labels, PERSON_CLASSES)


def segmap_mask(segmap: torch.Tensor, classes: Sequence[int], keepdim: bool = False) -> torch.Tensor:
    """The pixels of ``classes`` in a one-hot segmentation (an avatar's ``segmap``).

    Args:
        segmap: ``[T,6,H,W]`` float one-hot (:func:`one_hot_segmap`).
        classes: the classes to keep, e.g. :data:`HEAD_CLASSES` or :data:`PERSON_CLASSES`.
        keepdim: keep the class axis: ``[T,1,H,W]``.

    Returns:
        ``[T,H,W]`` (or ``[T,1,H,W]``) float32 in [0,1], 1 where the class is one of ``classes``.

    Example:
        >>> segmap = one_hot_segmap(torch.tensor([[[BACKGROUND, HAIR], [FACE_SKIN, CLOTHES]]]))
        >>> segmap_mask(segmap, HEAD_CLASSES)
        tensor([[[0., 1.],
                 [1., 0.]]])
        >>> segmap_mask(segmap, PERSON_CLASSES, keepdim=True).shape
        torch.Size([1, 1, 2, 2])
    """
    return segmap[:, list(classes)].sum(1, keepdim=keepdim).clamp(0, 1).float()


def keep_region(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Image [T,3,H,W] in [-1,1] with pixels outside ``mask`` [T,H,W] set to −1 (black).

    ``keep_region(img, head_mask(labels))`` is the official ``ref_head_img`` (Image→Triplane input).
    """
    return torch.where(mask.to(image.device)[:, None], image, torch.full_like(image, -1.0))


#: A face holds a connected region of the person mask when at least this share of its landmarks lies on it.
HOLD_SHARE = 0.25
#: Pieces of other people smaller than this fraction of the frame are not kept as other people (segmentation specks).
MIN_OTHER_PIECE = 0.002


def _components_held(components: np.ndarray, count: int, points: np.ndarray) -> np.ndarray:
    """``[count]`` how many of ``points`` (``[N,2]`` x, y pixels) lie on each connected component (0: background)."""
    height, width = components.shape
    xy = np.floor(np.asarray(points, dtype=np.float64)).astype(np.int64)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    xy = xy[inside]
    return np.bincount(components[xy[:, 1], xy[:, 0]], minlength=count)


def _reach(points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Horizontal distance of each column from a face's centre, in units of the face's width."""
    left, right = float(points[:, 0].min()), float(points[:, 0].max())
    return np.abs(columns - (left + right) / 2) / max(right - left, 1.0)


def restrict_to_person(labels: torch.Tensor, face: np.ndarray, other_faces: Sequence[np.ndarray] = ()
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen person of a label map, and the other people in it.

    The chosen person is the connected region of the person mask (every class but background, 8-connected) that
    holds the chosen face (at least :data:`HOLD_SHARE` of its landmarks lie on it; failing that, the region with
    most of them). Where that region also holds another face (two people touching), its pixels are split between
    the faces by horizontal distance to each face's centre in units of the face's width (people stand side by
    side, each body below its face). Every other person pixel — another person's region, a neighbour's shoulder
    whose face is outside the frame, a detached speck — is relabelled background, so a neighbour never joins the
    animated head, torso or person mask.

    Args:
        labels: ``[H,W]`` (or ``[1,H,W]``) 6-class label map.
        face: ``[N,2]`` the chosen face's landmarks in the label map's pixels (x right, y down).
        other_faces: the other faces' landmarks, likewise (they may lie outside the frame).
    Returns:
        ``(labels [H,W]`` int64 with only the chosen person left, ``others [H,W]`` bool: the person pixels of
        everyone else, without pieces under :data:`MIN_OTHER_PIECE` of the frame``)``.
    """
    import cv2

    labels = check_label_map(labels)[0].cpu()
    person = (labels != BACKGROUND).numpy()
    count, components = cv2.connectedComponents(person.astype(np.uint8), connectivity=8)
    components = components.astype(np.int64)

    def held(points: np.ndarray) -> np.ndarray:
        hits = _components_held(components, count, points)
        hits[0] = 0
        return np.flatnonzero(hits >= HOLD_SHARE * len(points))

    hits = _components_held(components, count, face)
    hits[0] = 0
    mine = held(face)
    if mine.size == 0 and hits.any():
        mine = np.array([int(hits.argmax())])
    others_held = [held(points) for points in other_faces]
    if mine.size == 0:  # the segmentation misses the chosen face: drop only the regions of the other faces
        taken = np.concatenate([np.zeros(0, np.int64), *others_held])
        chosen = person & ~np.isin(components, taken)
    else:
        chosen = np.isin(components, mine)
        columns = np.arange(person.shape[1], dtype=np.float64)
        for component in mine:
            rivals = [points for points, regions in zip(other_faces, others_held) if component in regions]
            if rivals:  # the component's columns go to the nearest face (a column as far from both: to neither)
                ours = _reach(face, columns) < np.min([_reach(points, columns) for points in rivals], axis=0)
                chosen &= ~((components == component) & ~ours[None, :])
    others = (person & ~chosen).astype(np.uint8)
    _, parts, stats, _ = cv2.connectedComponentsWithStats(others, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < MIN_OTHER_PIECE * others.size)
    others = (others > 0) & ~np.isin(parts, small[small > 0])
    kept = torch.where(torch.from_numpy(chosen), labels, torch.full_like(labels, BACKGROUND))
    return kept, torch.from_numpy(others)


def label_map_from_masks(head: torch.Tensor, body: torch.Tensor | None = None,
                         threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """Build a label map from external masks (e.g. a ComfyUI ``MASK`` from another segmentation model).

    Args:
        head: [T,H,W] or [H,W] float in [0,1] (or bool): the head including hair.
        body: optional mask of the rest of the person (neck, shoulders, clothes); pixels also in ``head`` stay head.
        threshold: a pixel belongs to a mask when its value is > threshold.

    Returns:
        [T,H,W] int64 labels: head → face skin (3), body → clothes (4), the rest background (0). The neck is
        not told apart, so the torso inpainting's neck fill (§7 B) has nothing to extend.
    """
    def binary(mask: torch.Tensor) -> torch.Tensor:
        mask = mask[None] if mask.ndim == 2 else mask
        if mask.ndim != 3:
            raise InputError(f"A mask must be [frames, height, width], got {tuple(mask.shape)}.")
        return mask > threshold if mask.dtype != torch.bool else mask

    head = binary(head)
    labels = torch.where(head, FACE_SKIN, BACKGROUND)
    if body is not None:
        body = binary(body).to(head.device)
        if body.shape != head.shape:
            raise InputError(f"Head and body masks differ in shape: {tuple(head.shape)} vs {tuple(body.shape)}.")
        labels = torch.where(body & ~head, CLOTHES, labels)
    return labels.long()


class SegmenterFileError(ModelFileError):
    """The segmenter file is missing or is not MediaPipe's 6-class selfie segmenter.

    ``problem`` names the file and what is wrong with it. The message adds the way out this module knows (the
    caller's own masks); the loader, which knows where the file comes from, adds how to get it: ``with_source``.
    """

    def __init__(self, problem: str):
        super().__init__(f"{problem}; pass your own head/body masks instead.")
        self.problem = problem

    def with_source(self, how_to_get: str) -> ModelFileError:
        """The same error with ``how_to_get`` (e.g. ``download X from URL``) before the masks' way out."""
        return ModelFileError(f"{self.problem}; {how_to_get}, or pass your own head/body masks instead.")


def _not_the_segmenter(path: Path, reason: object) -> SegmenterFileError:
    return SegmenterFileError(f"{path} is not MediaPipe's 6-class selfie segmenter ({reason})")


def _close_once(segmenter) -> None:
    """Close a MediaPipe segmenter so that its ``__del__`` does not close it again.

    After a failed run MediaPipe's ``close`` raises the graph's error but keeps the native handle, and the
    second close from ``__del__`` can then hang the process (seen with mediapipe 1.2.2 when another segmenter
    ran before). Forgetting the handle turns that second close into a no-op; with a MediaPipe that names the
    attribute otherwise this sets an unused one and changes nothing.
    """
    try:
        segmenter.close()
    finally:
        segmenter._handle = None


def segment_selfie_multiclass(images: torch.Tensor | np.ndarray, model_path: str | Path) -> torch.Tensor:
    """Run MediaPipe's selfie-multiclass ImageSegmenter (IMAGE mode, category mask) on each image.

    Args:
        images: [T,H,W,3] or [H,W,3] RGB, uint8 or float in [0,1]; the official pipeline passes the 512² source.
        model_path: ``selfie_multiclass_256x256.tflite``.

    Returns:
        [T,H,W] int64 label map on the input's device (MediaPipe returns the mask at the input's size).

    Raises:
        SegmenterFileError: the file is missing, not a MediaPipe segmenter, or a segmenter with other than 6
            classes (the message does not say where to get the file: the caller adds it, see ``with_source``).
    """
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions, vision

    path = Path(model_path)
    if not path.is_file():
        raise SegmenterFileError(f"Segmentation model {path} not found")
    frames = as_uint8_frames(images)
    labels = np.empty(frames.shape[:3], dtype=np.uint8)
    # the confidence masks, one per class, tell the 6-class model from other segmenters with valid labels 0..5
    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           running_mode=vision.RunningMode.IMAGE, output_category_mask=True,
                                           output_confidence_masks=True)
    try:
        # MediaPipe raises these for a file that is no segmenter, when loading or when running it
        segmenter = vision.ImageSegmenter.create_from_options(options)
        try:
            for frame, label in zip(frames, labels):
                result = segmenter.segment(Image(image_format=ImageFormat.SRGB, data=frame))
                classes = len(result.confidence_masks or ())
                if classes != NUM_CLASSES:
                    raise _not_the_segmenter(path, f"it segments into {classes} classes, not {NUM_CLASSES}")
                label[...] = result.category_mask.numpy_view().reshape(label.shape)   # GRAY8 comes as [H,W,1]
        finally:
            _close_once(segmenter)
    except (RuntimeError, ValueError) as exc:
        raise _not_the_segmenter(path, exc) from exc
    device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    return check_label_map(torch.from_numpy(labels).to(device))
