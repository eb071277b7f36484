"""Reading and validating user images before any model is loaded.

Odd but valid images are accepted and normalised to RGB uint8: grayscale, palette, RGBA (composited over
white), 16-bit, float, CMYK JPEG, WebP, BMP, TIFF, EXIF-rotated phone photos, letterboxed frames (the black
bars are removed) and very large photos (downscaled to :data:`WORKING_SIDE`). Anything else raises an
``InputError`` whose one-paragraph message starts with the file, says what is wrong and what to do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..images import unit_to_uint8

MIN_IMAGE_SIDE = 64
#: Photos above this are refused before decoding (a 15000x10000 photo; protects memory from decompression bombs).
MAX_IMAGE_PIXELS = 150_000_000
#: Longer sides are downscaled to this: the pipeline works at 512² and MediaPipe at 256², so more detail is unused.
WORKING_SIDE = 4096
#: A border line counts as a letterbox bar when no pixel in it is brighter than this (JPEG noise in black stays below).
BAR_LEVEL = 24
#: Bars thinner than this fraction of the long side are left alone (a thin frame is not letterboxing).
MIN_BAR_FRACTION = 0.02

_WHAT_TO_DO = "Use a PNG, JPEG or WebP photo."


@dataclass
class LoadedImage:
    """pixels: ``[H,W,3]`` RGB uint8. notes: what was done to normalise the file (for ``--dry-run``)."""

    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)


def load_image(path: str | Path) -> np.ndarray:
    """An image file → ``[H,W,3]`` RGB uint8 (see :func:`read_image`; letterbox bars are kept)."""
    return read_image(path).pixels


def read_image(path: str | Path, remove_bars: bool = False) -> LoadedImage:
    """Decode, check and normalise an image file.

    Args:
        remove_bars: cut letterbox bars (:func:`letterbox_bars`); for the portrait, not for masks drawn on it.
    Returns:
        :class:`LoadedImage` with RGB uint8 pixels at most :data:`WORKING_SIDE` px per side.
    Raises:
        InputError: missing, empty, not an image, truncated/damaged, smaller than :data:`MIN_IMAGE_SIDE` or
            larger than :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: the image does not exist. Check the path.")
    if not path.is_file():
        raise InputError(f"{path}: this is a folder, not an image file. Give the path of a photo.")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the image file is empty (0 bytes); it was probably not saved or copied "
                         f"completely. {_WHAT_TO_DO}")
    notes: list[str] = []
    decoded = _decode_with_pil(path, notes)
    if decoded is None:  # a format Pillow does not know (e.g. float TIFF): OpenCV's decoders
        decoded = _decode_with_opencv(path, notes)
    pixels, stored_size = decoded
    pixels = _downscale(pixels, stored_size, notes)
    if remove_bars:
        pixels = _remove_letterbox(pixels, notes)
    return LoadedImage(np.require(pixels, requirements=["C", "W"]), notes)  # writable, like any decoded array


def _check_size(path: Path, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"{path}: the image is {width}x{height}; the portrait needs at least {MIN_IMAGE_SIDE} px "
                         "per side (512x512 or more works best). Use a larger photo.")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: the image is {width}x{height} ({width * height / 1e6:.0f} megapixels), more than "
                         f"r3dp reads ({MAX_IMAGE_PIXELS // 1_000_000} megapixels). Downscale it first (anything "
                         f"up to {WORKING_SIDE} px per side keeps all the detail r3dp uses).")


def _decode_with_pil(path: Path, notes: list[str]) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(RGB uint8 pixels, (width, height) in the file), or None when Pillow does not recognise the format.

    Huge JPEGs are decoded at a power-of-two reduction (DCT scaling), so they never occupy full-size memory.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise InputError(f"{path}: the image is larger than r3dp reads ({MAX_IMAGE_PIXELS // 1_000_000} "
                             f"megapixels). Downscale it to at most {WORKING_SIDE} px per side.") from None
        except UnidentifiedImageError:
            return None
        except OSError as exc:
            raise InputError(f"{path}: the image cannot be read ({exc}). {_WHAT_TO_DO}") from None
    with image:
        stored_size = image.size
        _check_size(path, *stored_size)
        if image.format == "JPEG" and max(image.size) > 2 * WORKING_SIDE:
            scale = WORKING_SIDE / max(image.size)  # decode at a power-of-two reduction, still >= WORKING_SIDE
            image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path}: the image is damaged or truncated ({exc}); it is not a readable image. "
                             f"Save or download it again. {_WHAT_TO_DO}") from None
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
            notes.append(f"turned upright as its EXIF orientation ({orientation}) asks")
            if orientation in (5, 6, 7, 8):
                stored_size = stored_size[::-1]
        return _pil_to_rgb(image, notes), stored_size


def _pil_to_rgb(image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I"):  # 16/32-bit integer gray: keep the high byte, as 16-bit colour PNGs decode
        gray = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        notes.append(f"{mode} gray converted to 8-bit RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = unit_to_uint8(np.asarray(image, dtype=np.float32))
        notes.append("float gray converted to 8-bit RGB")
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return _over_white(rgba, notes)
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    return np.asarray(image.convert("RGB"))


def _over_white(rgba: np.ndarray, notes: list[str]) -> np.ndarray:
    alpha = rgba[:, :, 3:4]
    if alpha.min() == 255:
        return rgba[:, :, :3]
    notes.append("transparent areas filled with white")
    weight = alpha.astype(np.float32) / 255.0
    return (rgba[:, :, :3].astype(np.float32) * weight + 255.0 * (1 - weight)).round().astype(np.uint8)


def _decode_with_opencv(path: Path, notes: list[str]) -> tuple[np.ndarray, tuple[int, int]]:
    import cv2

    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: not a readable image (damaged, truncated or not an image at all). "
                         f"{_WHAT_TO_DO}")
    _check_size(path, image.shape[1], image.shape[0])
    return normalise_image(image, notes), (image.shape[1], image.shape[0])


def normalise_image(image: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """OpenCV's decoded layout (BGR/BGRA/gray, 8/16-bit or float) → RGB uint8."""
    notes = [] if notes is None else notes
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
        notes.append("16-bit converted to 8-bit")
    elif image.dtype != np.uint8:
        notes.append(f"{image.dtype} samples converted to 8-bit")
        image = unit_to_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return _over_white(np.ascontiguousarray(image[:, :, [2, 1, 0, 3]]), notes)
    return np.ascontiguousarray(image[:, :, 2::-1])


def _downscale(pixels: np.ndarray, stored_size: tuple[int, int], notes: list[str]) -> np.ndarray:
    """At most WORKING_SIDE px per side (``stored_size``: the file's upright width and height, for the note)."""
    import cv2

    height, width = pixels.shape[:2]
    if max(stored_size) <= WORKING_SIDE:
        return pixels
    scale = WORKING_SIDE / max(stored_size)
    size = (max(1, round(stored_size[0] * scale)), max(1, round(stored_size[1] * scale)))
    notes.append(f"downscaled from {stored_size[0]}x{stored_size[1]} to {size[0]}x{size[1]}")
    if (width, height) == size:
        return pixels
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def letterbox_bars(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Black bars to cut from a non-square ``[H,W,3]`` image: ``(top, bottom, left, right)`` in pixels.

    Only the long axis is trimmed, only lines with no pixel above :data:`BAR_LEVEL`, and never past square:
    the official pipeline squashes the photo to 512² (aspect ratio ignored), so bars would squeeze the face,
    and a 2:1 letterboxed portrait is squeezed so much that no face is found. A square photo with a black
    background is left alone; so are bars thinner than :data:`MIN_BAR_FRACTION` of the long side.
    """
    height, width = pixels.shape[:2]
    if height == width:
        return 0, 0, 0, 0
    dark = pixels.max(axis=2) <= BAR_LEVEL
    lines = dark.all(axis=1) if height > width else dark.all(axis=0)   # dark lines along the long axis
    if lines.all():
        return 0, 0, 0, 0
    lead = int(np.argmin(lines))
    trail = int(np.argmin(lines[::-1]))
    excess = abs(height - width)
    cut_lead = min(lead, max(excess // 2, excess - trail))
    cut_trail = min(trail, excess - cut_lead)
    if cut_lead + cut_trail < MIN_BAR_FRACTION * max(height, width):
        return 0, 0, 0, 0
    return (cut_lead, cut_trail, 0, 0) if height > width else (0, 0, cut_lead, cut_trail)


def _remove_letterbox(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    top, bottom, left, right = letterbox_bars(pixels)
    if not top + bottom + left + right:
        return pixels
    height, width = pixels.shape[:2]
    trimmed = pixels[top:height - bottom, left:width - right]
    sides = {"top": top, "bottom": bottom, "left": left, "right": right}
    notes.append("black bars removed (" + ", ".join(f"{v} px {k}" for k, v in sides.items() if v) +
                 f"): {width}x{height} → {trimmed.shape[1]}x{trimmed.shape[0]}")
    return trimmed
