"""Speech energy over time: how loudly the person speaks at each moment, in [0, 1].

Drives natural head motion (more motion while speaking, nods on stressed syllables). It reads channel 0, the
channel the speech model reads, on a fixed 5 ms grid of 50 ms windows, so the value at a time does not depend
on the frame rate it is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from .io import SAMPLE_RATE, Audio16k

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


def speech_energy(audio: Audio16k, fps: float, num_frames: int | None = None) -> torch.Tensor:
    """Per-frame speech energy ``[T]`` in [0,1] of a clip, at any frame rate.

    The level (dBFS) of the 50 ms window centred on each 5 ms grid point is mapped linearly from
    ``max(loud − 40 dB, −50 dBFS)`` (0: pause) to ``loud`` (1), where ``loud`` is the clip's 95th-percentile
    level; frame i takes the value at ``i / fps`` (linearly interpolated), frames past the clip's end 0. A
    silent clip gives zeros.

    Args:
        audio: the clip (``load_audio``). fps: frames per second of the result.
        num_frames: T (default: the clip's length at ``fps``, rounded).
    """
    if num_frames is None:
        num_frames = max(1, int(np.floor(audio.duration_s * fps + 0.5)))
    power = _hop_power(audio.pcm[0])
    total = np.concatenate([[0.0], np.cumsum(power)])
    grid = np.arange(power.shape[0] + 1)
    lo = np.clip(grid - WINDOW_HOPS // 2, 0, power.shape[0])
    hi = np.clip(grid + WINDOW_HOPS // 2, 0, power.shape[0])
    mean_square = (total[hi] - total[lo]) / np.maximum(hi - lo, 1)
    level = 10 * np.log10(np.maximum(mean_square, 1e-12))
    loud = float(np.percentile(level, 95))
    if loud < SILENCE_DBFS:
        return torch.zeros(num_frames)
    floor = max(loud - DYNAMIC_RANGE_DB, SILENCE_DBFS)
    energy = np.clip((level - floor) / max(loud - floor, 1e-6), 0.0, 1.0)
    times = np.arange(num_frames) / fps
    values = np.interp(times * SAMPLE_RATE / HOP_SAMPLES, grid, energy, right=0.0)
    return torch.from_numpy(values).float()
