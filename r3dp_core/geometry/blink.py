"""The official periodic blink schedule, as data for the PNCC stage to apply.

Official inference (``blink_mode='period'``) starts a blink at every frame ``i`` with ``i % 125 == 0`` (every
5 s at 25 fps, the first at frame 0), lasting ``D = random.randint(8, 12)`` frames (Python ``random``,
seeded with the run's seed right before), with eyelid closure ``p(k) = 4k/D − 4k²/D²`` at offset k (0 at the
start, 1 half-way). Frames at or beyond ``T − 1`` are never edited. The official editor re-quantises every
edited frame to 8 bits, including ``k = 0`` where ``p = 0``, so the schedule also says which frames are edited.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import InputError

BLINK_INTERVAL = 125          # frames between blink starts (5 s at 25 fps)
BLINK_MIN_FRAMES, BLINK_MAX_FRAMES = 8, 12


@dataclass(frozen=True)
class BlinkSchedule:
    """Per-frame eyelid closure for a motion of ``T`` frames.

    Attributes:
        closure: ``[T]`` float32 in [0, amplitude]: how far the eyes are closed (0 open, 1 shut).
        edited: ``[T]`` bool: frames the official editor touches (closure may be 0 there, at a blink's start).
        events: ``(start, length)`` of each blink, in frames.
    """

    closure: torch.Tensor
    edited: torch.Tensor
    events: tuple[tuple[int, int], ...]

    @property
    def num_frames(self) -> int:
        return int(self.closure.shape[0])


def blink_schedule(num_frames: int, *, enabled: bool = True, interval: int = BLINK_INTERVAL,
                   min_frames: int = BLINK_MIN_FRAMES, max_frames: int = BLINK_MAX_FRAMES, amplitude: float = 1.0,
                   seed: int | random.Random | None = None) -> BlinkSchedule:
    """The official blink schedule for ``num_frames`` motion frames.

    Args:
        enabled: False gives no blinks (official ``blink_mode='none'``).
        interval: frames between blink starts (official 125); the first blink starts at frame 0. Where an
            interval shorter than a blink makes blinks overlap, the later blink sets the shared frames.
        min_frames, max_frames: inclusive range of blink lengths (official 8–12).
        amplitude: scales the closure (1 = eyes fully shut mid-blink, as official).
        seed: an int (with the official seed, the same lengths as official inference, whose first Python
            ``random`` draws after seeding are these), a ``random.Random``, or None for an unseeded draw.
    """
    if num_frames < 0:
        raise InputError(f"num_frames must be >= 0, got {num_frames}.")
    if interval < 1:
        raise InputError(f"Blink interval must be at least 1 frame, got {interval}.")
    if not 1 <= min_frames <= max_frames:
        raise InputError(f"Blink length range must satisfy 1 <= min <= max, got {min_frames}..{max_frames}.")
    if not 0.0 <= amplitude <= 1.0:
        raise InputError(f"Blink amplitude must be in [0, 1], got {amplitude}.")
    closure = torch.zeros(num_frames)
    edited = torch.zeros(num_frames, dtype=torch.bool)
    events: list[tuple[int, int]] = []
    if enabled:
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        for start in range(0, num_frames, interval):
            length = rng.randint(min_frames, max_frames)
            events.append((start, length))
            for k in range(length):
                frame = start + k
                if frame >= num_frames - 1:
                    break
                closure[frame] = amplitude * (-4 * k * k / length ** 2 + 4 * k / length)
                edited[frame] = True
    return BlinkSchedule(closure, edited, tuple(events))
