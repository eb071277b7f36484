"""Pure compositing: the blend mask of an animated square, the border fade, and the paste into a picture.

Functions of tensors only (no model, no avatar, no file): ``pipeline/paste_back.py`` streams them over a clip.
The blend covers the animated person (the person of every frame united with the person of the source square,
dilated by :data:`BLEND_DILATION` and feathered over :data:`BLEND_FEATHER` pixels of a 512² frame), is exactly 0
on the other people of the square (grown by the same dilation), and fades out towards the square's border, so
the pasted square has no edge of its own; where the weight is 0 the picture is kept bit for bit.

Shapes follow PyTorch: frames ``(B, 3, S, S)``, masks ``(B, 1, S, S)``, pictures ``(B, H, W, 3)`` (ComfyUI's
IMAGE layout). Widths in pixels are given for a 512² frame (:data:`FRAME_SIZE`) and scaled to the frames' size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..defaults import FRAME_SIZE  # the side of the animated frames the pixel widths below are given for
from .framing import CropSquare

#: The person mask is grown by this many pixels of the 512² frame before feathering (hair strands, motion).
BLEND_DILATION = 12
#: Width of the feathered edge in pixels of the 512² frame (also the fade towards the square's borders).
BLEND_FEATHER = 16


def border_fade(size: int, width: float, device: torch.device | str | None = None) -> torch.Tensor:
    r"""The fade of a square's weights towards its border.

    Args:
        size: the square's side :math:`S` in pixels.
        width: pixels over which the fade rises, :math:`> 0`.
        device: where the result is made (default: PyTorch's default device).

    Returns:
        :math:`(S, S)` float32 in [0, 1]: 0 on the outermost pixels, rising linearly to 1 at ``width`` pixels
        inside (the product of a row and a column ramp).

    Example:
        >>> border_fade(5, 2.0)
        tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
                [0.0000, 0.2500, 0.5000, 0.2500, 0.0000],
                [0.0000, 0.5000, 1.0000, 0.5000, 0.0000],
                [0.0000, 0.2500, 0.5000, 0.2500, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000, 0.0000]])
    """
    position = torch.arange(size, device=device, dtype=torch.float32)
    ramp = (torch.minimum(position, size - 1 - position) / width).clamp(0, 1)
    return ramp[:, None] * ramp[None, :]


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    r"""A mask resized bilinearly (returned as it is when it already has that size).

    Args:
        mask: :math:`(B, C, h, w)` float.
        size: the new :math:`(H, W)`.

    Returns:
        :math:`(B, C, H, W)` float.

    Example:
        >>> resize_mask(torch.ones(1, 1, 4, 4), (2, 2))
        tensor([[[[1., 1.],
                  [1., 1.]]]])
    """
    if mask.shape[-2:] == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def blend_mask(person: torch.Tensor | None, source_person: torch.Tensor | None, size: int = FRAME_SIZE,
               dilation: int = BLEND_DILATION, feather: int = BLEND_FEATHER) -> torch.Tensor:
    r"""The paste-back weight of each pixel of the animated frames.

    Args:
        person: HTB-SR's person mask of each frame :math:`(B, 1, S, S)` in [0, 1], or None (then the whole
            square).
        source_person: the person of the source square :math:`(1, 1, h, w)` (any size, resized), or None; a
            second channel :math:`(1, 2, h, w)` marks the other people in the square, left alone.
        size: the frames' side :math:`S` (512 for the real model).
        dilation: growth in pixels of a 512² frame (scaled to ``size``).
        feather: soft-edge width in pixels of a 512² frame (scaled to ``size``), at least 1 after scaling.

    Returns:
        :math:`(B, 1, S, S)` (:math:`(1, 1, S, S)` without ``person``) float in [0, 1]: 1 on the dilated person,
        exactly 0 beyond its feathered edge and on the other people grown by ``dilation`` (the fade towards the
        square's border is :func:`paste`'s, at the pasted size).

    Example:
        >>> person = torch.zeros(1, 1, 64, 64)
        >>> person[..., 24:40, 24:40] = 1
        >>> weights = blend_mask(person, None, size=64)   # dilation 2 px, feather 2 px at 64²
        >>> weights.shape
        torch.Size([1, 1, 64, 64])
        >>> weights[0, 0, 32, 18:27]
        tensor([0.0000, 0.0000, 0.1111, 0.3333, 0.6667, 0.8889, 1.0000, 1.0000, 1.0000])
        >>> bool((blend_mask(None, None, size=8) == 1).all())
        True
    """
    scale = size / FRAME_SIZE
    dilation, feather = round(dilation * scale), max(1, round(feather * scale))
    radius = max(1, feather // 4)
    others = None
    if source_person is not None and source_person.shape[1] > 1:
        source_person, others = source_person[:, :1], source_person[:, 1:2]
    if person is None:
        union = torch.ones(1, 1, size, size)
    else:
        union = person.float()
        if source_person is not None:
            union = torch.maximum(union, resize_mask(source_person.to(union), union.shape[-2:]))
        union = (union > 0.5).float()
        if dilation > 0:
            union = _dilated(union, dilation)
        union = _box_blurs(union, radius)
    if others is not None and bool(others.any()):
        union = union * _away_from(resize_mask(others.to(union), union.shape[-2:]), dilation, radius)
    return union


def _box_blurs(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Two box blurs: a soft edge with a finite support (exact zeros and ones beyond it)."""
    for _ in range(2):
        mask = F.avg_pool2d(mask, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return mask


def _away_from(others: torch.Tensor, dilation: int, radius: int) -> torch.Tensor:
    """``[1,1,S,S]`` in [0,1]: exactly 0 on ``others`` grown by ``dilation`` pixels, rising to exactly 1 over
    ``4·radius`` pixels beyond (the blurs reach ``2·radius``, so the zeros are grown by that much more first)."""
    return _box_blurs(1 - _dilated((others > 0.5).float(), dilation + 2 * radius), radius)


def _dilated(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """The square max filter of side ``2·pixels+1`` as a row pass then a column pass (the same values as one
    2-D max-pool, at a fraction of its cost for the 25-pixel windows of a 512² mask)."""
    mask = F.max_pool2d(mask, (1, 2 * pixels + 1), stride=1, padding=(0, pixels))
    return F.max_pool2d(mask, (2 * pixels + 1, 1), stride=1, padding=(pixels, 0))


def paste(frames: torch.Tensor, weights: torch.Tensor, base: torch.Tensor, square: CropSquare,
          fade: float = BLEND_FEATHER / FRAME_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Blend square frames into a base picture at ``square``.

    Each frame and its weights are resized into the square (bilinear, antialiased when shrinking), the weights
    are multiplied by :func:`border_fade`, and the picture becomes ``base·(1 − w) + frame·w`` where the weight is
    above 0; elsewhere ``base`` is kept bit for bit.

    Args:
        frames: :math:`(B, 3, S, S)` float in [0, 1].
        weights: :math:`(B, 1, S, S)` or :math:`(1, 1, S, S)` blend weights in [0, 1] (:func:`blend_mask`).
        base: :math:`(B, H, W, 3)` or :math:`(1, H, W, 3)`, uint8 in [0, 255] or float in [0, 1]: the photo, or
            frames to paste into.
        square: where the frames go, in ``base``'s pixels; it may reach past its edges (the part outside is
            dropped).
        fade: the weights fade to exactly 0 on the square's outermost pixels over this fraction of its side
            (at least one pixel), so the pasted square has no edge of its own.

    Returns:
        ``(images, masks)``: images :math:`(B, H, W, 3)` of ``base``'s dtype, equal to ``base`` wherever the
        mask is 0; masks :math:`(B, H, W)` float in [0, 1], the weight each pixel was blended with.

    Example:
        >>> photo = torch.zeros(1, 6, 6, 3, dtype=torch.uint8)
        >>> images, masks = paste(torch.ones(1, 3, 16, 16), torch.ones(1, 1, 16, 16), photo, CropSquare(1, 1, 4))
        >>> images[0, :, :, 0]                            # the square's border pixels fade to 0
        tensor([[  0,   0,   0,   0,   0,   0],
                [  0,   0,   0,   0,   0,   0],
                [  0,   0, 255, 255,   0,   0],
                [  0,   0, 255, 255,   0,   0],
                [  0,   0,   0,   0,   0,   0],
                [  0,   0,   0,   0,   0,   0]], dtype=torch.uint8)
        >>> float(masks.sum())
        4.0
    """
    batch = frames.shape[0]
    height, width = base.shape[1:3]
    images = base.expand(batch, -1, -1, -1).clone()
    masks = torch.zeros(batch, height, width, device=frames.device)
    rows = slice(max(square.top, 0), min(square.top + square.side, height))
    cols = slice(max(square.left, 0), min(square.left + square.side, width))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return images, masks
    size = (square.side, square.side)
    down = square.side < frames.shape[-1]
    resized = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=down)
    weight = F.interpolate(weights.float(), size=size, mode="bilinear", align_corners=False, antialias=down)
    weight = weight * border_fade(square.side, max(1.0, fade * square.side), weight.device)
    inside = (slice(None), slice(None), slice(rows.start - square.top, rows.stop - square.top),
              slice(cols.start - square.left, cols.stop - square.left))
    resized, weight = resized[inside].permute(0, 2, 3, 1), weight[inside].permute(0, 2, 3, 1).clamp(0, 1)
    weight = weight.expand(batch, -1, -1, -1)
    region = images[:, rows, cols].to(frames.device)
    if region.dtype == torch.uint8:
        blended = region.float() * (1 - weight) + resized.clamp(0, 1) * 255 * weight
        blended = blended.round().clamp(0, 255).to(torch.uint8)
    else:
        blended = region * (1 - weight) + resized.clamp(0, 1).to(region.dtype) * weight
    # Where the weight is 0 the base is kept bit for bit (not merely recomputed).
    images[:, rows, cols] = torch.where(weight > 0, blended, region).to(images.device)
    masks[:, rows, cols] = weight[..., 0]
    return images, masks
