"""Head-pose shaping: natural (speech-aware) head motion and pose strength (pose smoothing with any window is
:meth:`r3dp_core.geometry.camera.HeadPose.cameras`).

Poses follow :mod:`r3dp_core.geometry.camera`: ``euler [T,3]`` = (pitch, yaw, roll) in radians and ``trans [T,3]``
in the 3DMM's decimetres. A *deviation* ``[T,6]`` = (Δpitch, Δyaw, Δroll, Δx, Δy, Δz) is added to a base pose
(:func:`apply_deviation`), by the plain addition of Euler angles the official pipeline uses when it maps a
driving pose onto the source pose.

Natural motion is a continuous function of time in seconds, sampled at the frame times ``i / fps``: the same
seed gives the same head path at any frame rate. Its parts:

* **drift**: per axis, a few sinusoids with seeded frequencies in ``[0.1, 0.6]`` Hz and seeded phases (band-
  limited noise, so angular velocity and acceleration are bounded by construction, never jitter);
* **speech envelope**: the drift's amplitude follows the speech activity (the loudness of the *voiced* sound,
  :func:`r3dp_core.audio.energy.speech_activity`) smoothed over ~0.3 s, from ``idle_level`` in pauses (a
  listener's smaller but living motion, never a freeze) to 1 while the person speaks;
* **nods**: stressed syllables (activity rising above its local average) dip the pitch by a smooth 0.5 s bump;
* **start**: the whole motion fades in over the first :data:`FADE_IN_S` seconds (a raised cosine), so frame 0
  is exactly the base pose and the head starts from rest;
* **bounds**: absolute, on the *total* pose (base + motion), per angle: the total stays strictly inside
  ``±limit`` (yaw 12°, pitch 8°, roll 5°), except that a base already beyond a limit is never taken further
  out (the motion only turns it back in); and the motion never moves more than ``limit`` from the base. Each
  side of the base gets the room left to it, the drift passes through ``room·tanh(x / room)`` on that side
  (smooth, strictly inside), and where the outward room is under :data:`MIN_ROOM_SHARE` of the limit the
  motion's centre eases inwards (with the fade-in) by up to that much, so a head at the edge of the range still
  moves both ways. Sway (x/y) is bounded about the base, ±``limits.sway``;
* **strength** ``s``: ``s ≤ 1`` scales the bounded motion (exactly linear, 0 = the base pose); ``s > 1`` scales
  the motion before the bounds (more motion, the same absolute bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class NaturalMotionLimits:
    """Bounds of natural motion: absolute bounds of the total head angles (degrees) and the sway (decimetres).

    The angles bound the *total* pose (base pose + natural motion), whatever the base pose: the range the 3D
    model renders well (yaw ±12°, pitch ±8°, roll ±5°). A base beyond a bound keeps its own angle as the bound
    on that side. The motion also never moves an angle more than its limit away from the base. The sway bounds
    the x/y translation about the base (half a centimetre); depth stays fixed, as the official pipeline fixes
    it.
    """

    yaw_degrees: float = 12.0
    pitch_degrees: float = 8.0
    roll_degrees: float = 5.0
    sway: float = 0.05          # x/y translation, decimetres

    def radians(self) -> tuple[float, float, float]:
        return (math.radians(self.pitch_degrees), math.radians(self.yaw_degrees), math.radians(self.roll_degrees))


#: Band of the drift's sinusoids (Hz): slow enough to read as a calm head, fast enough not to look frozen.
DRIFT_BAND_HZ = (0.1, 0.6)
DRIFT_COMPONENTS = 3
#: Drift amplitude relative to the limit before the soft bound (tanh keeps the result inside the limit).
DRIFT_GAIN = 1.3
#: The envelope follows the speech activity smoothed over this many seconds (Gaussian σ).
ENVELOPE_SIGMA_S = 0.3
#: Drift amplitude in pauses (and in silent or voiceless clips), relative to speech: a listener's motion.
IDLE_LEVEL = 0.35
#: Stress = fast-smoothed activity above slow-smoothed activity (Gaussian σ in seconds).
STRESS_FAST_SIGMA_S, STRESS_SLOW_SIGMA_S = 0.04, 0.6
#: A nod is a raised-cosine dip of the pitch this long, starting this much before the stress peak.
NOD_DURATION_S, NOD_LEAD_S = 0.5, 0.1
#: Pitch dip (degrees) of a typical stressed syllable (stress integral ``NOD_REFERENCE``, in activity·seconds).
NOD_DEGREES, NOD_REFERENCE = 3.0, 0.04
#: The motion fades in over this many seconds (raised cosine): frame 0 is the base pose, the head starts at rest.
FADE_IN_S = 0.8
#: Outward room (share of the limit) below which the motion's centre eases inwards to make it up.
MIN_ROOM_SHARE = 1 / 3


def _gaussian_smooth(signal: torch.Tensor, sigma_samples: float) -> torch.Tensor:
    """``[N]`` float64 smoothed by a normalised Gaussian (truncated at 3σ, renormalised at the ends)."""
    if sigma_samples < 0.5 or signal.numel() < 2:
        return signal.clone()
    half = int(math.ceil(3 * sigma_samples))
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma_samples) ** 2)
    padded = torch.nn.functional.pad(signal[None, None], (half, half))
    weight = torch.nn.functional.pad(torch.ones_like(signal)[None, None], (half, half))
    num = torch.nn.functional.conv1d(padded, kernel[None, None])[0, 0]
    den = torch.nn.functional.conv1d(weight, kernel[None, None])[0, 0]
    return num / den


def _interpolate(values: torch.Tensor, rate: float, times: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``values [N]`` sampled at ``k / rate`` at ``times [T]`` (held past the ends)."""
    position = (times * rate).clamp(0, values.shape[0] - 1)
    low = position.floor().long().clamp(max=values.shape[0] - 1)
    high = (low + 1).clamp(max=values.shape[0] - 1)
    frac = position - low
    return values[low] * (1 - frac) + values[high] * frac


def _speech_drive(activity: torch.Tensor, rate: float, times: torch.Tensor, idle_level: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Envelope ``[T]`` in ``[idle_level, 1]`` and nod signal ``[T]`` (≥ 0, ~1 for a typical stressed syllable)."""
    activity = activity.to(torch.float64).clamp(0, 1)
    smoothed = _gaussian_smooth(activity, ENVELOPE_SIGMA_S * rate)
    envelope = idle_level + (1 - idle_level) * (2 * smoothed).clamp(max=1)
    stress = (_gaussian_smooth(activity, STRESS_FAST_SIGMA_S * rate)
              - _gaussian_smooth(activity, STRESS_SLOW_SIGMA_S * rate)).clamp(min=0)
    # nod(t) = ∫ stress(s)·bump(t − s) ds on the activity's grid (an integral in seconds, not a sum of frames)
    taps = torch.arange(int(math.ceil(NOD_DURATION_S * rate)) + 1, dtype=torch.float64) / rate
    bump = 0.5 * (1 - torch.cos(2 * math.pi * taps / NOD_DURATION_S))
    lead = int(round(NOD_LEAD_S * rate))
    padded = torch.nn.functional.pad(stress[None, None], (bump.numel() - 1 - lead, lead))
    nod = torch.nn.functional.conv1d(padded, bump.flip(0)[None, None])[0, 0] / rate / NOD_REFERENCE
    return _interpolate(envelope, rate, times), _interpolate(nod, rate, times)


def _drift(generator: torch.Generator, times: torch.Tensor) -> torch.Tensor:
    """``[T]`` sum of seeded sinusoids in :data:`DRIFT_BAND_HZ`, total amplitude 1 (so ``|drift| ≤ 1``)."""
    low, high = (math.log(f) for f in DRIFT_BAND_HZ)
    freq = torch.exp(low + (high - low) * torch.rand(DRIFT_COMPONENTS, generator=generator, dtype=torch.float64))
    phase = 2 * math.pi * torch.rand(DRIFT_COMPONENTS, generator=generator, dtype=torch.float64)
    weight = 0.5 + torch.rand(DRIFT_COMPONENTS, generator=generator, dtype=torch.float64)
    weight = weight / weight.sum()
    return (weight * torch.sin(2 * math.pi * freq * times[:, None] + phase)).sum(-1)


def _fade_in(times: torch.Tensor) -> torch.Tensor:
    """``[T]`` raised-cosine ramp from 0 at t = 0 to 1 at :data:`FADE_IN_S` (zero slope at both ends)."""
    return 0.5 * (1 - torch.cos(math.pi * (times / FADE_IN_S).clamp(0, 1)))


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def _bounded_angle(raw: torch.Tensor, fade: torch.Tensor, base: torch.Tensor, limit: float) -> torch.Tensor:
    """Offset ``[T]`` of one angle from ``base [T]`` with ``|base + offset| < limit`` (or, on a side where the
    base is already beyond the limit, never further out than the base) and ``|offset| < limit``.

    ``raw`` is the unbounded motion, ``fade`` the fade-in (the offset is 0 where it is 0). Each side of the base
    gets its room (the distance to the bound there, at most ``limit``); where the outward room is short of
    ``MIN_ROOM_SHARE·limit`` the centre moves inwards by up to that much (eased in by ``fade``), and around the
    centre each side passes through ``room·tanh(x / room)``.
    """
    up = (limit - base).clamp(min=0, max=limit)        # room above the base
    down = (limit + base).clamp(min=0, max=limit)      # room below
    margin = MIN_ROOM_SHARE * limit
    # a smooth inward shift of at most `margin` as the base nears (or passes) a bound
    shift = margin * (_smoothstep((base - limit + margin) / margin) - _smoothstep((-base - limit + margin) / margin))
    centre = -fade * shift
    above, below = up - centre, down + centre            # room about the centre; both ≥ 0, and > 0 once fade > 0
    x = fade * raw
    above, below = above.clamp(min=1e-12), below.clamp(min=1e-12)
    return centre + torch.where(x >= 0, above * torch.tanh(x / above), below * torch.tanh(x / below))


def natural_head_motion(num_frames: int, fps: float, speech_activity: torch.Tensor | None = None, seed: int = 0,
                        strength: float = 1.0, *, energy_fps: float | None = None,
                        limits: NaturalMotionLimits = NaturalMotionLimits(), idle_level: float = IDLE_LEVEL,
                        base_euler: torch.Tensor | None = None) -> torch.Tensor:
    """Seeded, smooth, bounded, speech-aware head motion as deviations from a base pose.

    Args:
        num_frames: T, frames of the clip.
        fps: its frame rate; frame i is at ``i / fps`` seconds.
        speech_activity: ``[N]`` speech activity in [0,1] (see :func:`r3dp_core.audio.energy.speech_activity`;
            any loudness-like signal works) sampled at ``energy_fps`` (default ``fps``, i.e. one value per
            frame), or None for no speech information (a steady, calm drift at half the speaking amplitude, and
            no nods).
        seed: the path; the same seed gives the same motion on any device and at any frame rate.
        strength: ``≤ 1`` scales the (bounded) motion linearly, 0 gives zeros (the base pose); ``> 1`` scales it
            before the bounds (more motion inside the same absolute bounds).
        energy_fps: the rate of ``speech_activity``. Giving it at a fixed rate (e.g. 100 Hz) makes the result
            independent of ``fps`` at shared frame times exactly; per-frame activity agrees up to its sampling.
        limits: absolute bounds of the total angles, and the sway. idle_level: drift amplitude in pauses relative
            to speech.
        base_euler: ``[1,3]`` or ``[T,3]`` (pitch, yaw, roll) radians the motion is added to (the photo's pose,
            or a drawn path); None: a frontal base (zeros). The bounds hold on ``base + motion``.

    Returns:
        ``[T,6]`` float32: Δ(pitch, yaw, roll) in radians, Δ(x, y, z) in decimetres (Δz = 0), zero at frame 0,
        with ``|base + Δyaw| < limits.yaw`` (or between the base and the limit where the base is beyond it) and
        ``|Δyaw| < limits.yaw``, likewise pitch and roll, and ``|Δx|, |Δy| < limits.sway``.
    """
    if num_frames < 0:
        raise InputError(f"num_frames must be >= 0, got {num_frames}.")
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}.")
    if strength < 0:
        raise InputError(f"The head-motion strength must be >= 0, got {strength}.")
    if not 0 <= idle_level <= 1:
        raise InputError(f"idle_level must be in [0, 1], got {idle_level}.")
    times = torch.arange(num_frames, dtype=torch.float64) / fps
    if speech_activity is None or speech_activity.numel() == 0:
        envelope = torch.full_like(times, 0.5)
        nod = torch.zeros_like(times)
    else:
        if speech_activity.ndim != 1:
            raise InputError(f"speech_activity must be [N], got {tuple(speech_activity.shape)}.")
        envelope, nod = _speech_drive(speech_activity.detach().cpu(), energy_fps or fps, times, idle_level)
    base = torch.zeros(1, 3, dtype=torch.float64) if base_euler is None else \
        base_euler.detach().to("cpu", torch.float64).reshape(-1, 3)
    if base.shape[0] not in (1, num_frames):
        raise InputError(f"base_euler must be [1,3] or [{num_frames},3], got {tuple(base_euler.shape)}.")
    base = base.expand(num_frames, 3)
    generator = torch.Generator().manual_seed(int(seed))
    pitch_limit, yaw_limit, roll_limit = limits.radians()
    axes = [(pitch_limit, 0.6), (yaw_limit, 1.0), (roll_limit, 1.0), (limits.sway, 1.0), (limits.sway, 1.0)]
    fade = _fade_in(times)
    gain = max(strength, 1.0)
    out = torch.zeros(num_frames, 6, dtype=torch.float64)
    for axis, (limit, share) in enumerate(axes):
        raw = DRIFT_GAIN * share * limit * envelope * _drift(generator, times)
        if axis == 0:  # nods take the pitch budget the drift leaves
            raw = raw + math.radians(NOD_DEGREES) * nod
        if limit <= 0:
            continue
        if axis < 3:
            out[:, axis] = _bounded_angle(gain * raw, fade, base[:, axis], limit)
        else:
            out[:, axis] = limit * torch.tanh(fade * gain * raw / limit)
    return (min(strength, 1.0) * out).float()


def apply_deviation(euler: torch.Tensor, trans: torch.Tensor, deviation: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A pose ``[T,3]`` (or ``[1,3]``, broadcast) plus a deviation ``[T,6]`` → ``(euler, trans)`` ``[T,3]``."""
    deviation = deviation.to(euler.device, euler.dtype)
    return euler + deviation[:, :3], trans + deviation[:, 3:].to(trans.dtype)


def scale_pose(euler: torch.Tensor, trans: torch.Tensor, strength: float, reference: str = "first"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale a pose sequence's motion: ``ref + strength·(pose − ref)`` for euler and trans alike.

    Args:
        euler, trans: ``[T,3]``.
        strength: 0 holds the reference pose, 1 keeps the motion, 2 doubles it (linear in between).
        reference: ``'first'`` (frame 0 stays put: what the official mapping onto the source pose anchors on)
            or ``'mean'`` (the motion is scaled about its average pose).
    """
    if strength < 0:
        raise InputError(f"The pose strength must be >= 0, got {strength}.")
    if reference == "first":
        ref_euler, ref_trans = euler[:1], trans[:1]
    elif reference == "mean":
        ref_euler, ref_trans = euler.mean(0, keepdim=True), trans.mean(0, keepdim=True)
    else:
        raise InputError(f"The pose-strength reference must be 'first' or 'mean', got {reference!r}.")
    return ref_euler + strength * (euler - ref_euler), ref_trans + strength * (trans - ref_trans)


__all__ = ["NaturalMotionLimits", "apply_deviation", "natural_head_motion", "scale_pose"]
