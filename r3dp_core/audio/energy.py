"""Speech energy and speech activity over time, in [0, 1].

:func:`speech_energy` is how loud the clip is at each moment. :func:`speech_activity` is how loudly the person
*speaks*: the same loudness, counted only where the project's f0 tracker (:mod:`r3dp_core.audio.pitch`) hears a
voice (a periodic sound with f0 in 80–750 Hz), so music, drums or noise under or between the words do not count.
Activity drives natural head motion (more motion while speaking, nods on stressed syllables). Both read channel
0, the channel the speech model reads, on a fixed 5 ms grid of 50 ms windows, so the value at a time does not
depend on the frame rate it is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from .io import SAMPLE_RATE, Audio16k
from .pitch import PraatPitchSettings, praat_pitch_ac

#: Below this level (dBFS) a clip counts as silence (the mouth stays closed, the head settles).
SILENCE_DBFS = -50.0
#: Levels more than this far below the clip's loud speech count as pauses.
DYNAMIC_RANGE_DB = 40.0
HOP_SAMPLES = SAMPLE_RATE // 200        # 5 ms grid
WINDOW_HOPS = 10                        # 50 ms windows: a syllable's loudness, not its waveform
_PIECE_HOPS = 2000                      # hops squared at a time (10 s), so a long clip is never copied whole


def _hop_power(channel: np.ndarray) -> np.ndarray:
    """Mean square ``[ceil(N/hop)]`` of each 5 ms hop of ``channel [N]`` int16 (the last one zero-padded)."""
    hops = -(-channel.shape[0] // HOP_SAMPLES)
    power = np.zeros(hops)
    for first in range(0, hops, _PIECE_HOPS):
        piece = channel[first * HOP_SAMPLES:(first + _PIECE_HOPS) * HOP_SAMPLES].astype(np.float64) / 32768.0
        piece = np.pad(piece, (0, (-piece.shape[0]) % HOP_SAMPLES))
        power[first:first + piece.shape[0] // HOP_SAMPLES] = np.square(piece).reshape(-1, HOP_SAMPLES).mean(1)
    return power


def _window_levels(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid ``[H+1]`` (5 ms hops) and the level (dBFS) of the 50 ms window centred on each grid point."""
    total = np.concatenate([[0.0], np.cumsum(power)])
    grid = np.arange(power.shape[0] + 1)
    lo = np.clip(grid - WINDOW_HOPS // 2, 0, power.shape[0])
    hi = np.clip(grid + WINDOW_HOPS // 2, 0, power.shape[0])
    mean_square = (total[hi] - total[lo]) / np.maximum(hi - lo, 1)
    return grid, 10 * np.log10(np.maximum(mean_square, 1e-12))


def _to_frames(values: np.ndarray, grid: np.ndarray, fps: float, num_frames: int) -> torch.Tensor:
    times = np.arange(num_frames) / fps
    return torch.from_numpy(np.interp(times * SAMPLE_RATE / HOP_SAMPLES, grid, values, right=0.0)).float()


def _default_frames(audio: Audio16k, fps: float, num_frames: int | None) -> int:
    return max(1, int(np.floor(audio.duration_s * fps + 0.5))) if num_frames is None else num_frames


def speech_energy(audio: Audio16k, fps: float, num_frames: int | None = None) -> torch.Tensor:
    """Per-frame energy ``[T]`` in [0,1] of a clip, at any frame rate (loudness, voiced or not).

    The level (dBFS) of the 50 ms window centred on each 5 ms grid point is mapped linearly from
    ``max(loud − 40 dB, −50 dBFS)`` (0: pause) to ``loud`` (1), where ``loud`` is the clip's 95th-percentile
    level; frame i takes the value at ``i / fps`` (linearly interpolated), frames past the clip's end 0. A
    silent clip gives zeros.

    Args:
        audio: the clip (``load_audio``). fps: frames per second of the result.
        num_frames: T (default: the clip's length at ``fps``, rounded).
    """
    num_frames = _default_frames(audio, fps, num_frames)
    grid, level = _window_levels(_hop_power(audio.pcm[0]))
    loud = float(np.percentile(level, 95))
    if loud < SILENCE_DBFS:
        return torch.zeros(num_frames)
    floor = max(loud - DYNAMIC_RANGE_DB, SILENCE_DBFS)
    energy = np.clip((level - floor) / max(loud - floor, 1e-6), 0.0, 1.0)
    return _to_frames(energy, grid, fps, num_frames)


#: Voicing analysis of :func:`speech_activity`: the official f0 settings (20 ms steps, 80–750 Hz).
VOICING_SETTINGS = PraatPitchSettings()


def voicing(audio: Audio16k) -> tuple[np.ndarray, np.ndarray]:
    """Where channel 0 is voiced: ``(times [F] seconds, voiced [F] bool)`` from :func:`praat_pitch_ac`.

    Frame i is centred at ``duration/2 + (i − (F−1)/2)·time_step`` (Praat's symmetric placement); a frame is
    voiced when the tracker gives it an f0 (a periodic sound with f0 between 80 and 750 Hz, strong enough
    against the clip's peak).
    """
    f0 = praat_pitch_ac(audio.pcm[:1], SAMPLE_RATE, VOICING_SETTINGS)
    step = VOICING_SETTINGS.time_step
    times = audio.duration_s / 2 + (np.arange(f0.shape[0]) - (f0.shape[0] - 1) / 2) * step
    return times, f0 > 0


def speech_activity(audio: Audio16k, fps: float, num_frames: int | None = None) -> torch.Tensor:
    """Per-frame speech activity ``[T]`` in [0,1]: the loudness of the *voiced* sound, at any frame rate.

    The voicing of :func:`voicing` (0/1 per 20 ms frame, linearly interpolated onto the 5 ms grid and averaged
    over the same 50 ms windows as the level) multiplies a level mapped as in :func:`speech_energy`, except that
    ``loud`` is the 95th-percentile level of the voiced grid points: the voice's own loudness sets the scale,
    however loud the music under it. Unvoiced sound (noise, drums, an inharmonic chord, breath, most
    consonants) gives 0, as do silence and frames past the clip's end; a clip without voiced frames gives zeros.

    Args:
        audio: the clip (``load_audio``). fps: frames per second of the result.
        num_frames: T (default: the clip's length at ``fps``, rounded).
    """
    num_frames = _default_frames(audio, fps, num_frames)
    power = _hop_power(audio.pcm[0])
    grid, level = _window_levels(power)
    times, voiced = voicing(audio)
    if not voiced.any():
        return torch.zeros(num_frames)
    hop_centres = (np.arange(power.shape[0]) + 0.5) * HOP_SAMPLES / SAMPLE_RATE
    hop_voiced = np.interp(hop_centres, times, voiced.astype(np.float64), left=0.0, right=0.0)
    total = np.concatenate([[0.0], np.cumsum(hop_voiced)])
    lo = np.clip(grid - WINDOW_HOPS // 2, 0, power.shape[0])
    hi = np.clip(grid + WINDOW_HOPS // 2, 0, power.shape[0])
    voiced_share = (total[hi] - total[lo]) / np.maximum(hi - lo, 1)
    loud = float(np.percentile(level[voiced_share > 0.5], 95)) if (voiced_share > 0.5).any() \
        else float(level[voiced_share > 0].max())
    if loud < SILENCE_DBFS:
        return torch.zeros(num_frames)
    floor = max(loud - DYNAMIC_RANGE_DB, SILENCE_DBFS)
    energy = np.clip((level - floor) / max(loud - floor, 1e-6), 0.0, 1.0)
    return _to_frames(energy * voiced_share, grid, fps, num_frames)
