"""Reading and validating user inputs before any model is loaded.

Odd but valid inputs (grayscale, RGBA, 16-bit, CMYK, WebP, any size) are normalised to RGB uint8; invalid
ones raise an ``InputError`` that names the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

MIN_IMAGE_SIDE = 64
MAX_IMAGE_PIXELS = 80_000_000


def load_image(path: str | Path) -> np.ndarray:
    """An image file → ``[H,W,3]`` RGB uint8.

    Accepts 8/16-bit, grayscale, RGB(A), CMYK JPEG, PNG, WebP, BMP, TIFF; alpha is composited over white.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image {path} does not exist.")
    if path.stat().st_size == 0:
        raise InputError(f"Image {path} is empty (0 bytes).")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path} is not a readable image (damaged, truncated or not an image). "
                         "Use a PNG, JPEG or WebP photo.")
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise InputError(f"{path} is {width}x{height}; the portrait needs at least {MIN_IMAGE_SIDE} px per side "
                         "(512x512 or more works best).")
    if height * width > MAX_IMAGE_PIXELS:
        raise InputError(f"{path} is {width}x{height}, larger than r3dp accepts ({MAX_IMAGE_PIXELS // 1_000_000} "
                         "megapixels); downscale it first.")
    return normalise_image(image)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """OpenCV's decoded layout (BGR/BGRA/gray, 8/16-bit or float) → RGB uint8."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, 2::-1])
