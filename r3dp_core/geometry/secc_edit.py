"""Blink editing of canonical (zero-pose) SECC frames (official ``blink_eye_for_secc``, spec §14).

The SECC mesh has holes at the eyes. A blink of strength p closes each hole column by column: the eye
pixels above ``p·mean + (1−p)·top`` and below ``p·mean + (1−p)·bottom`` (row statistics of the hole in that
column) take the colour of the nearest face pixel, so p = 1 shuts the eye. The official quirks are kept:
an edited frame is quantised to 8 bits first (``floor((x+1)/2·255)``, returned as ``u/127.5 − 1``), even when
p = 0, and the hole is first grown by 5 px into the face so the lids are filled from skin away from the rim.

Masks, eye boxes and per-column lid lines are computed for all edited frames at once; only the
nearest-face-pixel lookup runs per frame, because its point sets differ in size between frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EYE_BOX_MARGIN = 4        # tight eye box: [min − 4, max + 4) around the hole pixels
EYE_GROW_RADIUS = 5       # face pixels within this Euclidean distance of a hole become eye
_QUERY_CHUNK = 4096


def _disk_kernel(radius: int, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, device=device)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2).float()[None, None]


def _nearest_colours(codes: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """codes [3,H,W]; targets, sources [H,W] bool → colours [N,3] of the nearest source pixel of each target
    (Euclidean; ties go to the first source in raster order)."""
    target_rc = targets.nonzero().float()
    source_rc = sources.nonzero()
    source_codes = codes[:, source_rc[:, 0], source_rc[:, 1]].T
    source_rc = source_rc.float()
    nearest = torch.cat([torch.cdist(target_rc[i:i + _QUERY_CHUNK], source_rc).argmin(1)
                         for i in range(0, target_rc.shape[0], _QUERY_CHUNK)])
    return source_codes[nearest]


def blink_secc(secc: torch.Tensor, amplitude: torch.Tensor, edited: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a blink schedule to SECC frames.

    Args:
        secc: [T,3,H,W] canonical SECC in [-1,1] (background −1; eyes in rows H/4..H/2, as rendered by
            :func:`..secc.render_secc` with zero pose).
        amplitude: [T] blink strength p in [0,1] per frame (0 open, 1 closed).
        edited: [T] bool, frames to edit; default ``amplitude > 0``. The official schedule also edits the first
            frame of every blink with p = 0 (which quantises it and fills the top/bottom hole rows), so pass
            the schedule's own mask to reproduce it.

    Returns:
        [T,3,H,W] float32; frames not edited are returned unchanged.
    """
    frames, _, height, width = secc.shape
    device = secc.device
    amplitude = amplitude.to(device)
    edited = (amplitude > 0) if edited is None else edited.to(device=device, dtype=torch.bool)
    if amplitude.shape != (frames,) or edited.shape != (frames,):
        raise ValueError(f"amplitude and edited must be [{frames}], got {tuple(amplitude.shape)} and "
                         f"{tuple(edited.shape)}")
    out = secc.float().clone()
    index = edited.nonzero().squeeze(1)
    if index.numel() == 0:
        return out
    # float64 makes the lid lines match the official numpy arithmetic; MPS has no float64
    line_dtype = torch.float32 if device.type == "mps" else torch.float64
    p = amplitude[index].to(line_dtype)[:, None, None]                                  # [E,1,1]
    codes = torch.floor((out[index] + 1) / 2 * 255)                                      # [E,3,H,W]
    face = (codes != 0).all(1)                                                           # [E,H,W]

    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    prior_rows = (rows >= height // 4) & (rows < height // 2)
    prior = [prior_rows & (cols >= width // 4) & (cols < width // 2),
             prior_rows & (cols >= width // 2) & (cols < 3 * width // 4)]
    holes = [~face & box for box in prior]                                               # per eye [E,H,W]
    both = holes[0] | holes[1]
    big = height + width
    row_lo = torch.where(both, rows, big).amin((1, 2)) - EYE_BOX_MARGIN
    row_hi = torch.where(both, rows, -big).amax((1, 2)) + EYE_BOX_MARGIN
    tight = torch.zeros_like(face)
    for hole in holes:
        col_lo = torch.where(hole, cols, big).amin((1, 2)) - EYE_BOX_MARGIN
        col_hi = torch.where(hole, cols, -big).amax((1, 2)) + EYE_BOX_MARGIN
        tight |= ((cols >= col_lo[:, None, None].clamp(min=0)) & (cols < col_hi[:, None, None])
                  & (rows >= row_lo[:, None, None].clamp(min=0)) & (rows < row_hi[:, None, None]))

    near_hole = F.conv2d(both[:, None].float(), _disk_kernel(EYE_GROW_RADIUS, device),
                         padding=EYE_GROW_RADIUS)[:, 0] > 0.5
    face &= ~(near_hole & tight)
    eye = ~face & tight

    count = eye.sum(1)                                                                   # [E,W]
    mean = (eye * rows).sum(1).to(line_dtype) / count.clamp(min=1)
    top = torch.where(eye, rows, big).amin(1).to(line_dtype)
    bottom = torch.where(eye, rows, -1).amax(1).to(line_dtype)
    upper = p[:, 0] * mean + (1 - p[:, 0]) * top
    lower = p[:, 0] * mean + (1 - p[:, 0]) * bottom
    blink = eye & ((rows <= upper[:, None, :]) | (rows >= lower[:, None, :]))

    sources = face & tight
    for e in range(index.numel()):
        if blink[e].any() and sources[e].any():
            codes[e][:, blink[e]] = _nearest_colours(codes[e], blink[e], sources[e]).T
    # the official code divides uint8 codes in float64 and returns float32; a table keeps that exact on any device
    decode = (torch.arange(256, dtype=torch.float64) / 127.5 - 1).float().to(device)
    out[index] = decode[codes.long()]
    return out
