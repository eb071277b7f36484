"""Head / torso / background masks from a 6-class selfie label map (spec §6).

Label maps are [T,H,W] integer tensors with MediaPipe's selfie-multiclass classes
0 background, 1 hair, 2 body skin, 3 face skin, 4 clothes, 5 others (accessories). They come from
:func:`segment_selfie_multiclass` (the official model, ``selfie_multiclass_256x256.tflite``) or from any other
segmentation through :func:`label_map_from_masks`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..defaults import MASK_THRESHOLD
from ..errors import InputError, ModelFileError
from ..images import as_uint8_frames
from ..model_files import BY_KEY

BACKGROUND, HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS = range(6)
NUM_CLASSES = 6
HEAD_CLASSES = (HAIR, FACE_SKIN, OTHERS)
TORSO_CLASSES = (BODY_SKIN, CLOTHES)
PERSON_CLASSES = (HAIR, BODY_SKIN, FACE_SKIN, CLOTHES, OTHERS)
TORSO_WITH_BACKGROUND_CLASSES = (BACKGROUND, BODY_SKIN, CLOTHES)
BACKGROUND_CLASSES = (BACKGROUND,)

_GET_SEGMENTER = f"download {BY_KEY['segmenter'].relpath} from {BY_KEY['segmenter'].url}"


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


def background_mask(labels: torch.Tensor) -> torch.Tensor:
    """[T,H,W] bool: background only."""
    return class_mask(labels, BACKGROUND_CLASSES)


def keep_region(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Image [T,3,H,W] in [-1,1] with pixels outside ``mask`` [T,H,W] set to −1 (black).

    ``keep_region(img, head_mask(labels))`` is the official ``ref_head_img`` (Image→Triplane input).
    """
    return torch.where(mask.to(image.device)[:, None], image, torch.full_like(image, -1.0))


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


def _not_the_segmenter(path: Path, reason: object) -> str:
    return (f"{path} is not MediaPipe's 6-class selfie segmenter ({reason}); {_GET_SEGMENTER}, or pass your own "
            "head/body masks instead.")


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
        ModelFileError: the file is missing, not a MediaPipe segmenter, or a segmenter with other than 6 classes.
    """
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions, vision

    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"Segmentation model {path} not found; {_GET_SEGMENTER}, or pass your own head/body "
                             "masks instead.")
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
                    raise ModelFileError(_not_the_segmenter(path, f"it segments into {classes} classes, not "
                                                                  f"{NUM_CLASSES}"))
                label[...] = result.category_mask.numpy_view().reshape(label.shape)   # GRAY8 comes as [H,W,1]
        finally:
            _close_once(segmenter)
    except (RuntimeError, ValueError) as exc:
        raise ModelFileError(_not_the_segmenter(path, exc)) from exc
    device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    return check_label_map(torch.from_numpy(labels).to(device))
