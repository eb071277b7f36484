"""Head-pose shaping: natural (speech-aware) head motion, pose strength and pose smoothing.

Poses follow :mod:`r3dp_core.geometry.camera`: ``euler [T,3]`` = (pitch, yaw, roll) in radians and ``trans [T,3]``
in the 3DMM's decimetres. A *deviation* ``[T,6]`` = (Δpitch, Δyaw, Δroll, Δx, Δy, Δz) is added to a base pose
(:func:`apply_deviation`), by the plain addition of Euler angles the official pipeline uses when it maps a
driving pose onto the source pose.

Natural motion is a continuous function of time in seconds, sampled at the frame times ``i / fps``: the same
seed gives the same head path at any frame rate. Its parts:

* **drift**: per axis, a few sinusoids with seeded frequencies in ``[0.1, 0.6]`` Hz and seeded phases (band-
  limited noise, so angular velocity and acceleration are bounded by construction, never jitter);
* **speech envelope**: the drift's amplitude follows the speech energy smoothed over ~0.3 s, from
  ``idle_level`` in pauses (the head settles towards the base pose) to 1 while the person speaks;
* **nods**: stressed syllables (energy rising above its local average) dip the pitch by a smooth 0.5 s bump;
* **bounds**: each axis passes through ``limit·tanh(x / limit)`` (smooth, strictly inside ``±limit``), and the
  whole deviation is scaled by ``strength`` (0 = the base pose, limits scale with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from .bfm import CAMERA_DISTANCE, rotation_to_euler
from .camera import CAMERA_OFFSET_Y, CAMERA_OFFSET_Z, CAMERA_SCALE, SMOOTH_KERNEL, eg3d_cameras, smooth_camera_sequence


@dataclass(frozen=True)
class NaturalMotionLimits:
    """Largest deviation from the base pose per axis at ``strength`` 1 (degrees / decimetres).

    The defaults keep the head inside the range the 3D model renders well (yaw ±12°, pitch ±8°, roll ±5°)
    and sway it by at most half a centimetre; depth stays fixed, as the official pipeline fixes it.
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
#: Speech activity is the energy smoothed over this many seconds (Gaussian σ).
ENVELOPE_SIGMA_S = 0.3
#: Stress = fast-smoothed energy above slow-smoothed energy (Gaussian σ in seconds).
STRESS_FAST_SIGMA_S, STRESS_SLOW_SIGMA_S = 0.04, 0.6
#: A nod is a raised-cosine dip of the pitch this long, starting this much before the stress peak.
NOD_DURATION_S, NOD_LEAD_S = 0.5, 0.1
#: Pitch dip (degrees) of a typical stressed syllable (stress integral ``NOD_REFERENCE``, in energy·seconds).
NOD_DEGREES, NOD_REFERENCE = 3.0, 0.04


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


def _speech_drive(energy: torch.Tensor, rate: float, times: torch.Tensor, idle_level: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Envelope ``[T]`` in ``[idle_level, 1]`` and nod signal ``[T]`` (≥ 0, ~1 for a typical stressed syllable)."""
    energy = energy.to(torch.float64).clamp(0, 1)
    activity = _gaussian_smooth(energy, ENVELOPE_SIGMA_S * rate)
    envelope = idle_level + (1 - idle_level) * (2 * activity).clamp(max=1)
    stress = (_gaussian_smooth(energy, STRESS_FAST_SIGMA_S * rate)
              - _gaussian_smooth(energy, STRESS_SLOW_SIGMA_S * rate)).clamp(min=0)
    # nod(t) = ∫ stress(s)·bump(t − s) ds on the energy's grid (an integral in seconds, not a sum of frames)
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


def natural_head_motion(num_frames: int, fps: float, speech_energy: torch.Tensor | None = None, seed: int = 0,
                        strength: float = 1.0, *, energy_fps: float | None = None,
                        limits: NaturalMotionLimits = NaturalMotionLimits(), idle_level: float = 0.2
                        ) -> torch.Tensor:
    """Seeded, smooth, bounded, speech-aware head motion as deviations from a base pose.

    Args:
        num_frames: T, frames of the clip.
        fps: its frame rate; frame i is at ``i / fps`` seconds.
        speech_energy: ``[N]`` speech energy in [0,1] (see :func:`r3dp_core.audio.energy.speech_energy`)
            sampled at ``energy_fps`` (default ``fps``, i.e. one value per frame), or None for no speech
            information (a steady, calm drift at half the speaking amplitude, and no nods).
        seed: the path; the same seed gives the same motion on any device and at any frame rate.
        strength: scales the whole deviation and so its bounds; 0 gives zeros (the base pose).
        energy_fps: the rate of ``speech_energy``. Giving energy at a fixed rate (e.g. 100 Hz) makes the result
            independent of ``fps`` at shared frame times exactly; per-frame energy agrees up to its sampling.
        limits: per-axis bounds at strength 1. idle_level: drift amplitude in pauses relative to speech.

    Returns:
        ``[T,6]`` float32: Δ(pitch, yaw, roll) in radians, Δ(x, y, z) in decimetres (Δz = 0), with
        ``|Δyaw| < strength·limits.yaw``, likewise pitch and roll, and ``|Δx|, |Δy| < strength·limits.sway``.
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
    if speech_energy is None or speech_energy.numel() == 0:
        envelope = torch.full_like(times, 0.5)
        nod = torch.zeros_like(times)
    else:
        if speech_energy.ndim != 1:
            raise InputError(f"speech_energy must be [N], got {tuple(speech_energy.shape)}.")
        envelope, nod = _speech_drive(speech_energy.detach().cpu(), energy_fps or fps, times, idle_level)
    generator = torch.Generator().manual_seed(int(seed))
    pitch_limit, yaw_limit, roll_limit = limits.radians()
    axes = [(pitch_limit, 0.6), (yaw_limit, 1.0), (roll_limit, 1.0), (limits.sway, 1.0), (limits.sway, 1.0)]
    out = torch.zeros(num_frames, 6, dtype=torch.float64)
    for axis, (limit, share) in enumerate(axes):
        raw = DRIFT_GAIN * share * limit * envelope * _drift(generator, times)
        if axis == 0:  # nods take the pitch budget the drift leaves
            raw = raw + math.radians(NOD_DEGREES) * nod
        out[:, axis] = limit * torch.tanh(raw / limit) if limit > 0 else 0.0
    return (strength * out).float()


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


def camera_to_pose(cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`~r3dp_core.geometry.camera.eg3d_cameras`: ``[T,25]`` → ``(euler, trans)`` ``[T,3]``."""
    cam = cameras.to(torch.float64)
    pose = cam[:, :12].reshape(-1, 3, 4)
    rot = pose[:, :, :3] * pose.new_tensor([1.0, -1.0, -1.0])  # undo the OpenGL → OpenCV column flip
    centre = pose[:, :, 3] - pose.new_tensor([0.0, CAMERA_OFFSET_Y, CAMERA_OFFSET_Z])
    trans = -(rot.transpose(1, 2) @ (centre / CAMERA_SCALE).unsqueeze(-1)).squeeze(-1)
    trans = trans + trans.new_tensor([0.0, 0.0, CAMERA_DISTANCE])
    return rotation_to_euler(rot), trans


def smooth_pose(euler: torch.Tensor, trans: torch.Tensor, window: int = SMOOTH_KERNEL
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The official camera smoothing (:func:`smooth_camera_sequence`) with a chosen window, as a pose.

    The pose becomes EG3D cameras, each is averaged over ``window`` frames (rotations by their chordal mean,
    camera centres by their plain mean, a window truncated at the clip's ends), and the result turns back into
    a pose, so ``eg3d_cameras(*smooth_pose(e, t, k))`` equals ``HeadPose(e, t).cameras(k)``.

    Args:
        euler, trans: ``[T,3]``.
        window: odd number of frames; 7 is the official fixed window, 1 leaves the pose unchanged.

    Returns:
        ``(euler, trans)`` ``[T,3]`` in the inputs' dtype and device.
    """
    if window < 1 or window % 2 == 0:
        raise InputError(f"The pose smoothing window must be an odd number of frames >= 1 (official 7, 1 = none), "
                         f"got {window}.")
    if window == 1:
        return euler.clone(), trans.clone()
    smoothed = smooth_camera_sequence(eg3d_cameras(euler, trans, dtype=torch.float64), window)
    new_euler, new_trans = camera_to_pose(smoothed)
    return new_euler.to(euler.device, euler.dtype), new_trans.to(trans.device, trans.dtype)


__all__ = ["NaturalMotionLimits", "apply_deviation", "camera_to_pose", "natural_head_motion", "scale_pose",
           "smooth_pose"]
