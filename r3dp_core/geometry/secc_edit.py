"""Blink and mouth editing of canonical (zero-pose) SECC frames.

Blink (official ``blink_eye_for_secc``, spec §14), on the rendered image.

The SECC mesh has holes at the eyes. A blink of strength p closes each hole column by column: the eye
pixels above ``p·mean + (1−p)·top`` and below ``p·mean + (1−p)·bottom`` (row statistics of the hole in that
column) take the colour of the nearest face pixel, so p = 1 shuts the eye. The official quirks are kept:
an edited frame is quantised to 8 bits first (``floor((x+1)/2·255)``, returned as ``u/127.5 − 1``), even when
p = 0, and the hole is first grown by 5 px into the face so the lids are filled from skin away from the rim.

Masks, eye boxes and per-column lid lines are computed for all edited frames at once; only the
nearest-face-pixel lookup runs per frame, because its point sets differ in size between frames.

Mouth (not in the official system, whose only mouth control, ``mouth_amp``, conditions the audio-to-motion
model and does nothing for video-driven motion), on the mesh before rasterisation so the SECC stays the
image of a face: the expression displacement ``exp_base·exp`` of the vertices around the lips is scaled by a
per-frame gain, blended into the unchanged rest of the face by smooth per-vertex weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bfm import FaceModel3DMM

EYE_BOX_MARGIN = 4        # tight eye box: [min − 4, max + 4) around the hole pixels
EYE_GROW_RADIUS = 5       # face pixels within this Euclidean distance of a hole become eye
_QUERY_CHUNK = 4096

LIP_KEYPOINTS = slice(48, 68)   # 68-point scheme: outer lip contour 48–59, inner 60–67
MOUTH_CORNERS = (48, 54)


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


def mouth_region_weights(bfm: FaceModel3DMM, inner: float = 0.2, outer: float = 1.0, jaw_reach: float = 3.0
                         ) -> torch.Tensor:
    """Per-vertex weight of the mouth region for :func:`scale_mouth_motion`; compute it once per model.

    On the mean shape, a vertex's distance to the nearest lip keypoint (68-point ids 48–67), in mouth widths
    (corner 48 to corner 54), gives weight 1 up to ``inner`` and a raised-cosine fall to 0 at ``outer``.
    Below a keypoint the vertical part of the distance counts ``1/jaw_reach``: the jaw carries the lower lip,
    and lips held shut over a dropped chin would stretch the lower face, so the region reaches down to the
    chin (about 0.9 mouth widths below the lips on a face shaped like the official NCC code) but not up to the
    eyes or sideways to the jaw line.

    Args:
        bfm: the 3DMM (its ``mean_shape`` and correct 68-keypoint ids ``lm68_ids``).
        inner, outer: radii in mouth widths, ``0 <= inner < outer``.
        jaw_reach: how much farther the region reaches downwards than in other directions, > 0.

    Returns:
        [N] in [0,1] on the model's device and dtype: exactly 1 at the lip keypoints and exactly 0 beyond ``outer``.
    """
    if not 0 <= inner < outer or jaw_reach <= 0:
        raise ValueError(f"need 0 <= inner < outer and jaw_reach > 0, got {inner}, {outer}, {jaw_reach}")
    mean = bfm.mean_shape
    keypoints = mean[bfm.lm68_ids]
    width = (keypoints[MOUTH_CORNERS[1]] - keypoints[MOUTH_CORNERS[0]]).norm()
    offset = mean[:, None, :] - keypoints[None, LIP_KEYPOINTS]                      # [N,20,3]
    dy = offset[..., 1]
    offset = torch.stack([offset[..., 0], torch.where(dy < 0, dy / jaw_reach, dy), offset[..., 2]], -1)
    distance = offset.norm(dim=-1).amin(1) / width                                   # [N]
    t = ((distance - inner) / (outer - inner)).clamp(0, 1)
    # exact zeros (not cos(π) rounding) keep the vertices outside the region bit-identical to compute_shape
    return torch.where(t < 1, 0.5 * (1 + torch.cos(torch.pi * t)), torch.zeros_like(t))


def scale_mouth_motion(bfm: FaceModel3DMM, id_coeff: torch.Tensor, exp_coeff: torch.Tensor,
                       gain: torch.Tensor | float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Canonical shapes with the mouth's expression motion scaled: a drop-in for ``bfm.compute_shape``.

    Each vertex becomes ``S(id, exp) + (gain − 1)·w·(exp_base·exp)``: with weight w = 1 (the lips) the
    expression displacement is multiplied by ``gain``; where w = 0 the vertex is ``S(id, exp)`` bit for bit.

    Args:
        bfm: the 3DMM.
        id_coeff: [1,80] (broadcast) or [B,80]; exp_coeff: [B,64]; on the model's device.
        gain: [B] per frame, or one number (or 0-d tensor) for all frames. 1 leaves every vertex exactly as
            ``compute_shape`` gives it, 0 holds the mouth region at the neutral expression (exp = 0), values
            above 1 exaggerate the mouth motion.
        weights: [N] from :func:`mouth_region_weights` (computed here when None).

    Returns:
        [B,N,3] canonical vertices in decimetres, like :meth:`FaceModel3DMM.compute_shape`.
    """
    shape = bfm.compute_shape(id_coeff, exp_coeff)
    frames = shape.shape[0]
    gain = torch.as_tensor(gain, dtype=shape.dtype, device=shape.device)
    if gain.ndim > 1 or (gain.ndim == 1 and gain.shape[0] != frames):
        raise ValueError(f"gain must be one number or [{frames}], got {tuple(gain.shape)}")
    weights = mouth_region_weights(bfm) if weights is None else weights.to(shape)
    exp_offsets = (exp_coeff @ bfm.exp_base.T).reshape(frames, -1, 3)               # [B,N,3]
    return shape + ((gain.reshape(-1, 1) - 1) * weights)[..., None] * exp_offsets
