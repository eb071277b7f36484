"""Phase A of ``r3dp personalise``: personalising the EG3D prior to one person (VIVE3D, spec §1.3).

Three stages, all on the aligned crops of :class:`~.prepare.PreparedVideo`:

1. **Joint inversion** (``Pipeline.inversion``) of K anchor frames (:func:`choose_anchor_frames`): one person
   latent ``w`` ``[1, w_dim]`` shared by all anchors, a small per-anchor offset ``δ_k`` and per-anchor yaw/pitch,
   optimised with the StyleGAN projector's schedule (:func:`projector_learning_rate`, :func:`latent_noise_std`).
2. **PTI tuning** (``Pipeline.tune``) of the generator's mapping, backbone and decoder (the super-resolution stays
   frozen) so it reproduces the anchors at ``w_person + δ_k``, with PTI's locality regulariser keeping renders of
   nearby latents close to those of the original generator.
3. **Per-frame cameras** (``invert_video.py``): every frame, in order, gets a W+ offset and a yaw/pitch optimised
   from the previous frame's solution; only the yaw/pitch are kept (expressions are the U-Net's job in phase B).

Image conventions: crops are ``uint8 [N,S,S,3]`` RGB; inside, images are float ``[B,3,S,S]`` in [-1,1] on the
generator's device; ``I_raw`` is :class:`~..losses.BicubicDownSample` of the crop by ``S / R`` (R = the raw render's
side, 128 officially), compared with the raw render ``image_raw``.

The renderer's random draws (stratified jitter, importance uniforms) and every latent draw come from CPU
``torch.Generator`` objects seeded by ``seed``, so a run is reproducible and the same seed gives the same draws on
every device.

Where r3dp cannot do what the official code does, :data:`DEVIATIONS` says so (the lead copies it into
``persona.json``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ...host import HERE, Host
from ..eg3d_camera import LookAtCameraConfig
from ..eg3d_generator import TriPlaneGenerator
from ..losses import BicubicDownSample, lpips_distances, lpips_sum
from .prepare import crop_images

#: Frame rate of every prepared video (the official 25 fps).
FPS = 25
#: z samples whose mapped mean is the average W that the inversion starts from (official: 10 000).
AVERAGE_W_SAMPLES = 10_000
#: Anchor candidates within this many degrees (|Δyaw| + |Δpitch|) of a segment's most frontal frame count as
#: frontal (tracking jitter is a degree or two; a turned head is tens).
FRONTAL_TOLERANCE_DEGREES = 5.0
#: Standard deviation of the per-anchor offsets' initial values (official N(0, 0.02²)).
OFFSET_INIT_STD = 0.02
#: Joint inversion loss weights (the official command line's): raw L1, raw LPIPS, feature-mask terms, the mask's L2.
INVERSION_L1_WEIGHT, INVERSION_LPIPS_WEIGHT, INVERSION_MASK_WEIGHT, INVERSION_MASK_L2_WEIGHT = 0.05, 1.0, 2.0, 0.75
#: Offset regulariser λ_w: this value up to :data:`OFFSET_DECAY_START`, then ×0.99 per step down to the floor.
OFFSET_WEIGHT, OFFSET_DECAY_START, OFFSET_DECAY, OFFSET_WEIGHT_FLOOR = 0.05, 100, 0.99, 0.005
#: PTI locality regulariser: truncation of the sampled latents, step towards them, weights of its L2 and LPIPS.
LOCALITY_PSI, LOCALITY_ALPHA, LOCALITY_L2_WEIGHT, LOCALITY_LPIPS_WEIGHT = 0.5, 0.1, 0.05, 0.05
#: Per-frame camera inversion loss weights: L1, offset norm, offset drift from the warm start, feature-mask terms.
CAMERA_L1_WEIGHT, CAMERA_OFFSET_WEIGHT, CAMERA_DRIFT_WEIGHT, CAMERA_MASK_WEIGHT = 0.25, 0.01, 0.02, 1.2
#: Dilation (pixels at 512², scaled with the crop size) of the feature mask for the camera inversion (official 8).
CAMERA_MASK_DILATION_AT_512 = 8

#: Where phase A differs from the official recipe (copied into ``persona.json`` by the lead).
DEVIATIONS: list[str] = [
    "phase A feature mask: the official mask is BiSeNet's brows, nose, mouth and dilated eyes of the anchor frames; "
    "r3dp has no BiSeNet and uses the prepared mouth mask united with the central band of the face mask (from a "
    "quarter of the face's height below its top down to the mouth, the middle 70 % of its width), which covers "
    "eyes, brows and nose in an aligned crop; the union over the anchors as officially",
    "per-frame camera inversion keeps the one alignment of the preparation: the official invert_video.py re-aligns "
    "every frame to the personalised generator's face (G_tune(w_person) at yaw 0, pitch -0.1) before inverting; "
    "r3dp inverts the crops aligned to the preparation's reference",
    "anchor frames are chosen automatically (spread over the first seconds, frontal, mouth open and closed) "
    "instead of the official hand-picked --frame indices, and only among the training frames",
    "LPIPS terms are summed over the frames of a batch; the tuning's early stop compares the mean per-frame LPIPS "
    "with the threshold",
]


@dataclass
class PhaseAResult:
    """What phase A hands to phase B (the generator itself is tuned in place)."""

    w_person: torch.Tensor
    """``[1, w_dim]`` float32 (CPU): the person's latent; ``P_ID`` is the tuned generator's tri-plane at it."""
    yaw_pitch: torch.Tensor
    """``[N, 2]`` float32 (CPU) radians, per frame of the prepared video: camera offsets from frontal."""
    anchors: list[int]
    """The frames jointly inverted and tuned on."""
    losses: dict[str, float]
    """Final losses: ``inversion``, ``tuning``, ``camera_mean`` (mean over frames of each frame's last loss), and
    ``tuning_steps`` / ``camera_steps_mean`` (steps actually taken, early stops included)."""
    notes: list[str] = field(default_factory=list)
    """Run-specific remarks (a missing LPIPS network, fewer anchors than asked) beside :data:`DEVIATIONS`."""


LPIPSFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------ anchor frames --

def mouth_opening(prepared: Any) -> np.ndarray:
    """How open the mouth is per frame: ``[N]`` float, height / width of the lips' bounding box.

    Uses ``tracks["lips"]`` ``[N,40,2]`` (any order of the MediaPipe lip points: only their extent matters, and
    the ratio does not depend on the face's size); without it, the bounding box of the mouth mask
    (``masks[:, 1]``). A frame without lips/mask scores 0 (closed).
    """
    lips = prepared.tracks.get("lips") if hasattr(prepared.tracks, "get") else None
    if lips is not None and len(lips) == prepared.num_frames:
        points = torch.as_tensor(lips, dtype=torch.float32)
        extent = points.amax(dim=1) - points.amin(dim=1)                       # [N, 2] (width, height)
        return (extent[:, 1] / extent[:, 0].clamp_min(1e-6)).numpy().astype(np.float64)
    opening = np.zeros(prepared.num_frames)
    for index in range(prepared.num_frames):
        rows, cols = np.nonzero(np.asarray(prepared.masks[index, 1]))
        if len(rows):
            opening[index] = (rows.max() - rows.min() + 1) / (cols.max() - cols.min() + 1)
    return opening


def frontal_deviation(prepared: Any, frames: Sequence[int]) -> np.ndarray:
    """``|yaw − median yaw| + |pitch − median pitch|`` (degrees) of ``frames`` (``tracks["head_angles"]``,
    columns pitch, yaw, roll). The median over ``frames`` stands for "frontal" because the official angle formula
    (quirk included: solvePnP on normalised landmarks) carries a constant bias, so its zero is not the frontal
    pose. Zeros when the track is missing."""
    angles = prepared.tracks.get("head_angles") if hasattr(prepared.tracks, "get") else None
    if angles is None:
        return np.zeros(len(frames))
    angles = torch.as_tensor(angles, dtype=torch.float64)[list(frames)].numpy()
    pitch, yaw = angles[:, 0], angles[:, 1]
    return np.abs(yaw - np.median(yaw)) + np.abs(pitch - np.median(pitch))


def choose_anchor_frames(prepared: Any, count: int, seconds: float) -> list[int]:
    """The anchor frames of the joint inversion, chosen automatically (sorted frame indices).

    Rule: the candidates are the training frames of the first ``seconds`` seconds (25 fps). They are cut into
    ``count`` equal consecutive segments (spread in time). In each segment the frames within
    :data:`FRONTAL_TOLERANCE_DEGREES` of its most frontal frame (:func:`frontal_deviation`) are kept, and of those
    the one with the most closed mouth (even segments: 0, 2, …) or the most open mouth (odd segments) is taken
    (:func:`mouth_opening`), so two or more anchors always show the mouth both closed and open. Fewer candidates
    than ``count`` give every candidate.

    Raises:
        InputError: no training frame in the first ``seconds`` seconds.
    """
    last = min(int(prepared.train_frames), max(1, int(round(seconds * FPS))))
    if last < 1:
        raise InputError("Phase A needs at least one training frame to invert, but the prepared video has none; "
                         "use a longer video (at least 5 s).")
    candidates = np.arange(last)
    if count >= last:
        return candidates.tolist()
    opening = mouth_opening(prepared)
    deviation = frontal_deviation(prepared, candidates)
    anchors = []
    for segment_index, segment in enumerate(np.array_split(candidates, count)):
        segment_deviation = deviation[segment]
        frontal = segment[segment_deviation <= segment_deviation.min() + FRONTAL_TOLERANCE_DEGREES]
        mouth = opening[frontal]
        pick = np.argmax(mouth) if segment_index % 2 else np.argmin(mouth)
        anchors.append(int(frontal[pick]))
    return sorted(anchors)


def validate_anchor_frames(anchors: Sequence[int], prepared: Any) -> list[int]:
    """``anchors`` as a sorted list of ints after checking them (the ``--anchor-frames`` override).

    Raises:
        InputError: empty, not integers, repeated, or outside the training frames ``0 … train_frames − 1``.
    """
    train = int(prepared.train_frames)
    try:
        values = [int(a) for a in anchors]
        integral = all(float(a) == int(a) for a in anchors)
    except (TypeError, ValueError):
        values, integral = [], False
    if not values or not integral:
        raise InputError(f"The anchor frames must be a non-empty list of frame numbers, got {list(anchors)!r}; give "
                         f"whole numbers between 0 and {train - 1} (e.g. --anchor-frames 0 85 110) or leave the "
                         f"option out to choose them automatically.")
    outside = [a for a in values if not 0 <= a < train]
    if outside:
        raise InputError(f"Anchor frame(s) {outside} are outside the training frames 0…{train - 1} of this video "
                         f"(the last 1/11 is held out for evaluation); pick frames in that range or leave "
                         f"--anchor-frames out to choose them automatically.")
    if len(set(values)) != len(values):
        raise InputError(f"The anchor frames {values} repeat a frame; each anchor must be a different frame "
                         f"(remove the duplicates).")
    return sorted(values)


# ------------------------------------------------------------------------------------------------ building blocks --

def differentiable_cameras(yaw: torch.Tensor, pitch: torch.Tensor,
                           config: LookAtCameraConfig | None = None) -> torch.Tensor:
    """EG3D cameras ``[N, 25]`` of :func:`~..eg3d_camera.lookat_cameras` with gradients to ``yaw`` and ``pitch``
    (``[N]`` radians, any device; float32 arithmetic). ``lookat_cameras`` detaches its angles (it mirrors the
    official float64 → float32 sequence for parity); this is the same formula in float32 on the angles' device."""
    config = config or LookAtCameraConfig()
    device = yaw.device
    theta = math.pi / 2 + yaw.float().reshape(-1, 1)
    v = torch.clamp(math.pi / 2 + pitch.float().reshape(-1, 1), 1e-5, math.pi - 1e-5) / math.pi
    phi = torch.arccos(1 - 2 * v)
    radius = config.radius
    origin = torch.cat([radius * torch.sin(phi) * torch.cos(math.pi - theta), radius * torch.cos(phi),
                        radius * torch.sin(phi) * torch.sin(math.pi - theta)], dim=1)
    pivot = torch.tensor(config.pivot, dtype=torch.float32, device=device)
    forward = F.normalize(pivot - origin, dim=-1, eps=0.0)
    up = torch.tensor([0.0, 1.0, 0.0], device=device).expand_as(forward)
    right = -F.normalize(torch.cross(up, forward, dim=-1), dim=-1, eps=0.0)
    up = F.normalize(torch.cross(forward, right, dim=-1), dim=-1, eps=0.0)
    rotation = torch.stack((right, up, forward), dim=-1)                       # [N, 3, 3]
    top = torch.cat([rotation, origin[:, :, None]], dim=2)                     # [N, 3, 4]
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=device).expand(len(top), 1, 4)
    f, c = config.focal_length, config.principal_point
    intrinsics = torch.tensor([f, 0.0, c, 0.0, f, c, 0.0, 0.0, 1.0], device=device).expand(len(top), -1)
    return torch.cat([torch.cat([top, bottom], dim=1).reshape(-1, 16), intrinsics], dim=1)


def projector_learning_rate(base: float, progress: float) -> float:
    """The StyleGAN projector's schedule at ``progress`` t = step/steps: ``base · (0.5 − 0.5·cos(π·min(1,
    (1−t)/0.25))) · min(1, t/0.05)`` (cosine ramp-down over the last quarter, linear ramp-up over the first 5 %);
    1e-4 where that is 0 (the first step)."""
    ramp_down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - progress) / 0.25))
    ramp_up = min(1.0, progress / 0.05)
    lr = base * ramp_down * ramp_up
    return lr if lr > 0 else 1e-4


def latent_noise_std(w_std: float, progress: float) -> float:
    """Std of the noise added to W during the inversion: ``w_std · 0.02 · max(0, 1 − t/0.75)²``."""
    return w_std * 0.02 * max(0.0, 1.0 - progress / 0.75) ** 2


def offset_weight(step: int) -> float:
    """λ_w of the inversion's offset regulariser at ``step``: 0.05, ×0.99 per step after step 100, floor 0.005."""
    if step <= OFFSET_DECAY_START:
        return OFFSET_WEIGHT
    return max(OFFSET_WEIGHT_FLOOR, OFFSET_WEIGHT * OFFSET_DECAY ** (step - OFFSET_DECAY_START))


@torch.no_grad()
def average_latent(generator: TriPlaneGenerator, *, samples: int = AVERAGE_W_SAMPLES,
                   seed: int = 0) -> tuple[torch.Tensor, float]:
    """Mean W ``[1, w_dim]`` of ``samples`` mapped z ~ N(0, I) and the projector's scalar spread
    ``w_std = sqrt(Σ‖w − w̄‖² / samples)``. The mapping is cheap (2 layers), so the official 10 000 samples are
    used at every size; they are mapped in chunks of 1 000."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, generator.config.z_dim, generator=rng)
    ws = torch.cat([generator.mapping(chunk.to(generator.device))[:, 0].float() for chunk in z.split(1000)])
    mean = ws.mean(dim=0, keepdim=True)
    w_std = float(((ws - mean) ** 2).sum() / samples) ** 0.5
    return mean, w_std


def feature_mask(prepared: Any, frames: Sequence[int]) -> torch.Tensor:
    """The facial-feature mask M ``[1,1,S,S]`` float 0/1 (CPU): the union over ``frames`` of the mouth mask and
    the central band of the face mask (see :data:`DEVIATIONS`: r3dp's stand-in for BiSeNet's brows, eyes, nose
    and mouth). All ones when the masks are empty (nothing to weight)."""
    size = prepared.masks.shape[-1]
    union = np.zeros((size, size), dtype=bool)
    for frame in frames:
        face = np.asarray(prepared.masks[frame, 0]) > 0
        mouth = np.asarray(prepared.masks[frame, 1]) > 0
        union |= mouth
        rows, cols = np.nonzero(face)
        if not len(rows):
            continue
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        band_top = top + (bottom - top) // 4
        mouth_rows = np.nonzero(mouth.any(axis=1))[0]
        band_bottom = mouth_rows.max() if len(mouth_rows) else top + 3 * (bottom - top) // 4
        margin = int(round(0.15 * (right - left)))
        band = np.zeros_like(face)
        band[band_top:band_bottom + 1, left + margin:right - margin + 1] = True
        union |= face & band
    if not union.any():
        union[:] = True
    return torch.from_numpy(union.astype(np.float32))[None, None]


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``[B,1,H,W]`` 0/1 by a (2·radius+1)² square."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


def broadcast_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """``[B, w_dim]`` → ``[B, num_ws, w_dim]`` (one latent drives every style row)."""
    return w[:, None, :].expand(-1, num_ws, -1)


class _Renderer:
    """Renders latents with the generator; the renderer's random draws come from one seeded CPU generator."""

    def __init__(self, generator: TriPlaneGenerator, seed: int):
        self.generator = generator
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, ws: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor,
                 model: TriPlaneGenerator | None = None):
        """``ws [B,num_ws,w_dim]``, yaw/pitch ``[B]`` radians → :class:`~..eg3d_generator.EG3DRenderOutput`."""
        model = model or self.generator
        planes = model.synthesize_planes(ws)
        camera = differentiable_cameras(yaw, pitch, model.config.camera)
        return model.render(planes, ws, camera, generator=self.rng)


# ------------------------------------------------------------------------------------------------ stages --

@dataclass
class _Targets:
    """Target images of some frames: ``images [B,3,S,S]`` and ``raw [B,3,R,R]`` in [-1,1]."""

    images: torch.Tensor
    raw: torch.Tensor


def _targets(prepared: Any, frames: Sequence[int], downsample: BicubicDownSample,
             device: torch.device) -> _Targets:
    images = crop_images(prepared, frames, device)
    return _Targets(images, downsample(images))


def invert_anchors(generator: TriPlaneGenerator, targets: _Targets, mask: torch.Tensor, steps: int, lr: float,
                   lpips: LPIPSFn | None, renderer: _Renderer, rng: torch.Generator, *, w_mean: torch.Tensor,
                   w_std: float, host: Host = HERE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The joint inversion (``Pipeline.inversion``) of K anchor targets.

    Each step renders ``W_k = w + δ_k + noise`` (one latent on every style row) at the anchor's yaw/pitch and
    minimises ``0.05·Σ|Î_raw − I_raw|/R² + LPIPS(Î_raw, I_raw) + 2·[LPIPS(M⊙Î, M⊙I) + 0.75·Σ(M⊙Î − M⊙I)²/ΣM]
    + λ_w·‖δ‖_F`` (sums over the K frames and 3 channels; ΣM counts the mask's pixels once; LPIPS terms only with
    a network), with the projector's learning-rate and latent-noise schedules.

    Args:
        mask: the feature mask M ``[1,1,S,S]`` 0/1 on the generator's device (:func:`feature_mask`).
        rng: CPU generator of the offsets' start and the latent noise.

    Returns:
        ``w`` ``[1,w_dim]``, offsets ``δ`` ``[K,w_dim]``, yaw/pitch ``[K,2]`` radians (all detached, on the
        generator's device) and the last step's loss.
    """
    device, num_ws = generator.device, generator.num_ws
    count, w_dim = targets.images.shape[0], w_mean.shape[1]
    w = w_mean.clone().to(device).requires_grad_(True)
    offsets = (torch.randn(count, w_dim, generator=rng) * OFFSET_INIT_STD).to(device).requires_grad_(True)
    angles = torch.zeros(count, 2, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([w, offsets, angles], lr=lr, betas=(0.9, 0.999))
    raw_pixels = targets.raw.shape[-1] ** 2
    mask_pixels = mask.sum()
    loss_value = float("nan")
    for step in range(steps):
        host.check()
        progress = step / steps
        for group in optimizer.param_groups:
            group["lr"] = projector_learning_rate(lr, progress)
        noise = (torch.randn(1, w_dim, generator=rng) * latent_noise_std(w_std, progress)).to(device)
        ws = broadcast_ws(w + offsets + noise, num_ws)
        out = renderer(ws, angles[:, 0], angles[:, 1])
        loss = INVERSION_L1_WEIGHT * (out.image_raw - targets.raw).abs().sum() / raw_pixels
        masked_l2 = ((out.image * mask - targets.images * mask) ** 2).sum() / mask_pixels
        masked = INVERSION_MASK_L2_WEIGHT * masked_l2
        if lpips is not None:
            loss = loss + INVERSION_LPIPS_WEIGHT * lpips_sum(lpips, out.image_raw, targets.raw)
            masked = masked + lpips_sum(lpips, out.image * mask, targets.images * mask)
        loss = loss + INVERSION_MASK_WEIGHT * masked + offset_weight(step) * torch.linalg.norm(offsets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    return w.detach(), offsets.detach(), angles.detach(), loss_value


def tune_generator(generator: TriPlaneGenerator, targets: _Targets, ws: torch.Tensor, angles: torch.Tensor,
                   steps: int, lr: float, stop_lpips: float, locality_weight: float, lpips: LPIPSFn | None,
                   renderer: _Renderer, rng: torch.Generator, *, host: Host = HERE) -> tuple[float, int]:
    """PTI tuning (``Pipeline.tune``) of the mapping, backbone and decoder in place (the SR stays frozen).

    Loss per step: ``Σ|Î_raw − I_raw|/S² + LPIPS(Î, I) + locality_weight·locality`` (:func:`_locality`),
    back-propagated one anchor at a time (the gradients add up to the whole step's; peak memory is one anchor's).

    Args:
        ws: ``[K, w_dim]`` the anchors' latents ``w_person + δ_k`` (fixed); angles ``[K,2]`` their yaw/pitch.

    Returns:
        The last step's loss and the number of steps taken (fewer when the mean LPIPS reached ``stop_lpips``).
    """
    device, num_ws = generator.device, generator.num_ws
    # The frozen original for the locality term. A forward wrapped by ``prepare_for_inference`` (the SR under
    # autocast) still points at the tuned model's SR after the copy; harmless, since the SR is not tuned.
    original = copy.deepcopy(generator).requires_grad_(False)
    generator.requires_grad_(False)
    tuned = [p for name, p in generator.named_parameters() if not name.startswith("superresolution.")]
    for parameter in tuned:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned, lr=lr, betas=(0.9, 0.999))
    anchor_ws = broadcast_ws(ws, num_ws)
    image_pixels = targets.images.shape[-1] ** 2
    frontal = torch.zeros(len(ws), device=device)
    loss_value, taken = float("nan"), 0
    try:
        for _ in range(steps):
            host.check()
            optimizer.zero_grad(set_to_none=True)
            loss_value, anchor_lpips = 0.0, []
            # The loss is a sum over the anchors, so each anchor's part is back-propagated on its own and the
            # gradients add up: the same step with the memory of one anchor (3 at once do not fit in 24 GB).
            for k in range(len(ws)):
                out = renderer(anchor_ws[k:k + 1], angles[k:k + 1, 0], angles[k:k + 1, 1])
                loss = (out.image_raw - targets.raw[k:k + 1]).abs().sum() / image_pixels
                if lpips is not None:
                    distance = lpips_distances(lpips, out.image, targets.images[k:k + 1]).sum()
                    anchor_lpips.append(float(distance.detach()))
                    loss = loss + distance
                if locality_weight > 0:
                    loss = loss + locality_weight * _locality(generator, original, ws[k:k + 1], frontal[k:k + 1],
                                                              lpips, renderer, rng)
                loss.backward()
                loss_value += float(loss.detach())
            optimizer.step()
            taken += 1
            reconstruction_lpips = float(np.mean(anchor_lpips)) if anchor_lpips else None
            # PTI stops once the anchors look right (the check is on this step's renders, as officially).
            if reconstruction_lpips is not None and reconstruction_lpips <= stop_lpips:
                break
    finally:
        generator.requires_grad_(False)
        for parameter in tuned:
            parameter.grad = None
    return loss_value, taken


def _locality(generator: TriPlaneGenerator, original: TriPlaneGenerator, ws: torch.Tensor, frontal: torch.Tensor,
              lpips: LPIPSFn | None, renderer: _Renderer, rng: torch.Generator) -> torch.Tensor:
    """PTI's locality regulariser: latents a small step (0.1) from each anchor towards a random truncated latent
    render (yaw = pitch = 0) like the original generator's: ``0.05·MSE_sum + 0.05·LPIPS`` of the images."""
    z = torch.randn(1, generator.config.z_dim, generator=rng).to(generator.device)
    with torch.no_grad():
        w_random = original.mapping(z, truncation_psi=LOCALITY_PSI)[:, 0]
    direction = w_random - ws
    nearby = broadcast_ws(ws + LOCALITY_ALPHA * direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8),
                          generator.num_ws)
    tuned_image = renderer(nearby, frontal, frontal).image
    with torch.no_grad():
        original_image = renderer(nearby, frontal, frontal, model=original).image
    loss = LOCALITY_L2_WEIGHT * ((tuned_image - original_image) ** 2).sum()
    if lpips is not None:
        loss = loss + LOCALITY_LPIPS_WEIGHT * lpips_sum(lpips, tuned_image, original_image)
    return loss


def invert_cameras(generator: TriPlaneGenerator, prepared: Any, w_person: torch.Tensor, start_offset: torch.Tensor,
                   start_angles: torch.Tensor, mask: torch.Tensor, *, first_steps: int, steps: int, lr: float,
                   threshold: float, lpips: LPIPSFn | None, renderer: _Renderer,
                   host: Host = HERE) -> tuple[torch.Tensor, list[float], list[int]]:
    """Per-frame camera inversion (``invert_video.py``) of every frame, in order.

    Frame 0 starts from ``start_offset`` ``[1,w_dim]`` (broadcast to the W+ rows) and ``start_angles`` ``[2]``
    and runs ``first_steps``; frame n > 0 starts from frame n−1's solution and runs ``steps``, with a penalty on
    drifting from that start. Each frame stops early once its loss is below ``threshold``. Loss:
    ``0.25·Σ|Î − I|/S² + LPIPS(Î, I) + 0.01·‖off‖ + 0.02·‖off − off_start‖ (n > 0) + 1.2·[LPIPS(M⊙Î, M⊙I) +
    Σ|M⊙Î − M⊙I|/ΣM]`` with ``M`` the dilated feature mask ``[1,1,S,S]``.

    Returns:
        yaw/pitch ``[N,2]`` float32 CPU radians, each frame's last loss, each frame's steps taken.
    """
    device, num_ws = generator.device, generator.num_ws
    person_ws = broadcast_ws(w_person, num_ws)
    image_pixels = prepared.crops.shape[1] ** 2
    mask_pixels = mask.sum()
    offset = broadcast_ws(start_offset, num_ws).clone()
    angles = start_angles.detach().clone().reshape(2)
    total = int(prepared.num_frames)
    yaw_pitch = torch.zeros(total, 2)
    losses, steps_taken = [], []
    for frame in range(total):
        host.check()
        target = crop_images(prepared, [frame], device)
        drift_start = None if frame == 0 else offset.detach().clone()
        offset = offset.detach().clone().requires_grad_(True)
        angles = angles.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([offset, angles], lr=lr, betas=(0.9, 0.999))
        loss_value, taken = float("nan"), 0
        for _ in range(first_steps if frame == 0 else steps):
            host.check()
            out = renderer(person_ws + offset, angles[:1], angles[1:])
            loss = CAMERA_L1_WEIGHT * (out.image - target).abs().sum() / image_pixels
            masked = (out.image * mask - target * mask).abs().sum() / mask_pixels
            if lpips is not None:
                loss = loss + lpips_sum(lpips, out.image, target)
                masked = masked + lpips_sum(lpips, out.image * mask, target * mask)
            loss = loss + CAMERA_OFFSET_WEIGHT * torch.linalg.norm(offset) + CAMERA_MASK_WEIGHT * masked
            if drift_start is not None:
                loss = loss + CAMERA_DRIFT_WEIGHT * torch.linalg.norm(offset - drift_start)
            loss_value = float(loss.detach())
            if loss_value < threshold:
                break  # good enough: keep the camera that produced this loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            taken += 1
        yaw_pitch[frame] = angles.detach().float().cpu()
        losses.append(loss_value)
        steps_taken.append(taken)
        host.report(frame + 1, total)
    return yaw_pitch, losses, steps_taken


def _downsample_factor(generator: TriPlaneGenerator, prepared: Any) -> int:
    size, raw = int(prepared.crops.shape[1]), int(generator.config.render.resolution)
    if size % raw:
        raise InputError(f"The prepared crops are {size}² but the generator renders {raw}² raw images; the crop side "
                         f"must be a whole multiple of the raw side. Prepare the video again for this generator.")
    return size // raw


def _check_prepared(generator: TriPlaneGenerator, prepared: Any) -> None:
    crops = prepared.crops
    size = generator.config.superresolution.img_resolution
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise InputError(f"Phase A needs uint8 crops [N,{size},{size},3] for this generator's {size}² output, got "
                         f"{crops.dtype} {list(crops.shape)}; prepare the video again with image_size={size}.")
    if prepared.masks.shape[0] != crops.shape[0] or prepared.masks.shape[-1] != size:
        raise InputError(f"The prepared masks {list(prepared.masks.shape)} do not match the crops "
                         f"{list(crops.shape)}; the prepared folder is inconsistent: prepare the video again.")


# ------------------------------------------------------------------------------------------------ phase A --

def run_phase_a(generator: TriPlaneGenerator, prepared: Any, preset: Any, lpips: LPIPSFn | None, *,
                anchors: list[int] | None = None, host: Host = HERE, say: Callable[[str], None] = print,
                seed: int = 0) -> PhaseAResult:
    """Personalise the EG3D prior to the person of ``prepared`` (VIVE3D; spec §1.3): joint inversion of the
    anchors, PTI tuning of ``generator`` **in place** (mapping, backbone, decoder; its parameters have
    ``requires_grad=False`` afterwards), then the yaw/pitch of every frame.

    Args:
        generator: the prior, on the device phase A runs on (CPU, CUDA or MPS), float32.
        prepared: a :class:`~.prepare.PreparedVideo` (crops ``uint8 [N,S,S,3]``, masks ``[N,4,S,S]``, tracks).
        preset: the :class:`~.presets.PersonalisePreset` (anchor count/seconds, steps, learning rates, thresholds).
        lpips: ``(x, y) → [B]`` perceptual distance of ``[B,3,H,W]`` images in [-1,1], or None (its terms are
            dropped and the tuning never stops early; said once).
        anchors: frames to invert jointly instead of the automatic choice (:func:`choose_anchor_frames`).
        host: ``check()`` before every step (raises to interrupt: the exception propagates), ``report(done, N)``
            after each frame's camera.
        say: one-line messages.
        seed: seeds the latent draws and the renderer's noise (reproducible runs).

    Raises:
        InputError: bad ``anchors`` or crops that do not fit the generator.
    """
    _check_prepared(generator, prepared)
    device = generator.device
    notes: list[str] = []
    if lpips is None:
        notes.append("phase A ran without LPIPS (its terms dropped, no early stop of the tuning)")
        say("Phase A: no LPIPS network, so its perceptual terms are dropped and the tuning runs all its steps.")
    if anchors is None:
        anchors = choose_anchor_frames(prepared, preset.anchor_frames, preset.anchor_seconds)
        if len(anchors) < preset.anchor_frames:
            notes.append(f"only {len(anchors)} anchor frame(s) in the first {preset.anchor_seconds:g} s "
                         f"(preset asks {preset.anchor_frames})")
    else:
        anchors = validate_anchor_frames(anchors, prepared)
    say(f"Phase A: anchor frames {anchors}.")

    generator.requires_grad_(False)
    downsample = BicubicDownSample(_downsample_factor(generator, prepared)).to(device)
    targets = _targets(prepared, anchors, downsample, device)
    mask = feature_mask(prepared, anchors).to(device)
    # Three independent streams: average W (seed), renderer noise (seed + 1), offsets / W noise / locality z.
    renderer = _Renderer(generator, seed + 1)
    latent_rng = torch.Generator().manual_seed(seed + 2)

    w_mean, w_std = average_latent(generator, seed=seed)
    say(f"Phase A: joint inversion of {len(anchors)} frames, {preset.inversion_steps} steps.")
    w_person, offsets, angles, inversion_loss = invert_anchors(
        generator, targets, mask, preset.inversion_steps, preset.inversion_lr, lpips, renderer, latent_rng,
        w_mean=w_mean.to(device), w_std=w_std, host=host)

    say(f"Phase A: tuning the generator on the anchors, up to {preset.tune_steps} steps.")
    tuning_loss, tuning_steps = tune_generator(
        generator, targets, w_person + offsets, angles, preset.tune_steps, preset.tune_lr, preset.tune_stop_lpips,
        preset.locality_weight, lpips, renderer, latent_rng, host=host)

    say(f"Phase A: camera of each of the {prepared.num_frames} frames.")
    camera_mask = dilate(mask, max(1, round(CAMERA_MASK_DILATION_AT_512 * mask.shape[-1] / 512)))
    with torch.no_grad():
        start_offset = offsets.mean(dim=0, keepdim=True)
        start_angles = angles.mean(dim=0)
    yaw_pitch, camera_losses, camera_steps = invert_cameras(
        generator, prepared, w_person, start_offset, start_angles, camera_mask,
        first_steps=preset.camera_first_steps, steps=preset.camera_steps, lr=preset.camera_lr,
        threshold=preset.camera_loss_threshold, lpips=lpips, renderer=renderer, host=host)

    losses = {"inversion": inversion_loss, "tuning": tuning_loss, "tuning_steps": float(tuning_steps),
              "camera_mean": float(np.mean(camera_losses)), "camera_steps_mean": float(np.mean(camera_steps))}
    say(f"Phase A done: inversion loss {inversion_loss:.4f}, tuning loss {tuning_loss:.4f} ({tuning_steps} steps), "
        f"mean camera loss {losses['camera_mean']:.4f}.")
    return PhaseAResult(w_person=w_person.float().cpu(), yaw_pitch=yaw_pitch, anchors=list(anchors), losses=losses,
                        notes=notes)
