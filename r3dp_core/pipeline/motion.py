"""Motion decided once, like the head pose: a motion *recipe*, resolved with the models into the driving ``Motion``.

The front ends only say where the face's motion comes from (``r3dp generate`` and ``r3dp batch`` from their
options through :func:`motion_recipe`, the Audio → 3DMM and Video → 3DMM nodes from their inputs);
:func:`resolve_motion` makes it, from one of three sources:

* ``audio`` — expressions from speech (HuBERT + f0 → the audio-to-motion VAE on the sound's 16 kHz view);
* ``video`` — expressions and head pose fitted to a driving video (a file read block by block, or frames in memory);
* ``file`` — a motion read from a file (an r3dp motion or an official coefficient dict).

Every source ends the same way: the motion carries its sound, the one :class:`~r3dp_core.audio.io.Sound` that
is muxed (the clip at its own rate; natural head motion reads its 16 kHz view, converted once), and the official
blink schedule when the recipe asks for it (``blink=None`` leaves blinks to a later stage, the PNCC Builder node).
The sound is the recipe's (for a video without one, the video's own track), else the motion file's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import defaults
from ..audio.io import Sound
from ..errors import InputError
from ..host import HERE, Host
from .types import Motion

MOTION_SOURCES = ("audio", "video", "file")


@dataclass(frozen=True, eq=False)
class MotionRecipe:
    """Where the face's motion comes from and how it is made, independent of the models that make it.

    Attributes:
        sound: the clip's sound. With neither ``video`` nor ``motion`` it drives the face (``audio``); with them it
            is only what is heard (and what natural head motion follows).
        video: a driving video: a file, or its frames ``[T,H,W,3]`` (uint8, or float in [0,1]) at ``video_fps``.
        video_fps: the frame rate of frames given in memory.
        motion: a motion read from a file, at 25 fps.
        face: which face of the driving video drives the motion (``'largest'`` or its index).
        mouth_amp, temperature, seed: the audio model's mouth amplitude, latent temperature and seed (the seed
            also times the blinks).
        blink: add the official blink schedule (a motion with its own keeps it); False: no blinks; None: leave
            the motion's blinks as they are (a later stage adds them).
        sound_to_clip: cut a video's or a motion file's sound to the clip's length (what ``r3dp generate`` muxes);
            the speech that drives an audio motion is never cut.
    """

    sound: Sound | None = None
    video: str | Path | torch.Tensor | np.ndarray | None = None
    video_fps: float = defaults.MOTION_FPS
    motion: Motion | None = None
    face: str | int = "largest"
    mouth_amp: float = defaults.MOUTH_AMP
    temperature: float = defaults.TEMPERATURE
    seed: int = defaults.SEED
    blink: bool | None = defaults.BLINK
    sound_to_clip: bool = False

    def __post_init__(self):
        if self.video is not None and self.motion is not None:
            raise InputError("A driving video and a motion file both drive the face; give one of them.")
        if self.video is None and self.motion is None and self.sound is None:
            raise InputError("Give a voice clip, a driving video or a motion file to drive the face.")

    @property
    def source(self) -> str:
        """One of :data:`MOTION_SOURCES`: ``file`` (a motion is given), ``video`` or ``audio``."""
        return "file" if self.motion is not None else "video" if self.video is not None else "audio"


def motion_recipe(request, inputs) -> MotionRecipe:
    """The motion recipe of a ``generate`` job (``GenerateRequest`` and its admitted ``ValidatedInputs``): the
    ``--audio`` sound (decoded once, at admission), ``--expression-video`` or the ``--motion`` file, cutting a
    video's or file's sound to the clip as the mp4 needs."""
    return MotionRecipe(sound=inputs.audio, video=request.expression_video, motion=inputs.motion,
                        mouth_amp=request.mouth_amp, temperature=request.temperature, seed=request.seed,
                        blink=request.blink, sound_to_clip=True)


def resolve_motion(recipe: MotionRecipe, *, a2m: torch.nn.Module | None = None, hubert: torch.nn.Module | None = None,
                   kit=None, log: Callable[[str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None, host: Host = HERE,
                   compute_dtype: torch.dtype = torch.float32) -> Motion:
    """The driving motion of ``recipe``, with its sound and blinks.

    Args:
        a2m, hubert: the audio-to-motion VAE and HuBERT (``audio``).
        kit: the ``FaceKit`` (landmarker and BFM) fitting a driving video (``video``).
        log: where a driving video's faceless frames are reported.
        progress: ``progress(done, total)`` over the audio model's windows (``audio``); default: the host's.
        host: where the audio models compute for the call (:mod:`.host`; the CLI's leaves them in place).
        compute_dtype: the audio models run under autocast in this dtype (float32: no autocast).
    Raises:
        InputError: the models the source needs are missing, or the source itself is unusable.
    """
    from .stages import speech_motion, with_blinks

    source = recipe.source
    if source == "audio":
        if a2m is None or hubert is None:
            raise InputError("Speech-driven motion needs the audio model and HuBERT; load both.")
        recipe.sound.at_16k()   # the clip's checks (and its 16 kHz view, made once) before any model moves
        with host.place(a2m, hubert) as device, \
                torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            # the speech is the clip: never cut; speech_motion adds the blink schedule (None: none yet, as False)
            return speech_motion(recipe.sound, a2m, hubert, mouth_amp=recipe.mouth_amp,
                                 temperature=recipe.temperature, seed=recipe.seed, blink=bool(recipe.blink),
                                 progress=progress or host.report)
    if source == "video":
        if kit is None:
            raise InputError("Video-driven motion needs the face landmarker and the BFM 3DMM; load both.")
        motion = _video_motion(recipe, kit, log)
        sound = recipe.sound if recipe.sound is not None else _own_sound(recipe.video)
    else:
        motion, sound = recipe.motion, recipe.sound
    if sound is not None:
        motion = dataclasses.replace(motion, audio=sound.cut(motion.duration_s) if recipe.sound_to_clip else sound)
    return motion if recipe.blink is None else with_blinks(motion, recipe.blink, recipe.seed)


def _video_motion(recipe: MotionRecipe, kit, log) -> Motion:
    from . import driving

    if isinstance(recipe.video, (str, Path)):
        return driving.video_motion(recipe.video, kit, face=recipe.face, log=log)
    return driving.motion_from_frames(recipe.video, recipe.video_fps, kit.landmarker_path, kit.bfm, face=recipe.face)


def _own_sound(video) -> Sound | None:
    """A driving video file's own sound track (None for frames in memory, or a video without a usable one)."""
    from ..audio.io import load_audio, load_sound

    if not isinstance(video, (str, Path)):
        return None
    try:
        sound = load_sound(video)
        load_audio(sound)  # a voice clip's checks (its 16 kHz view is kept, for natural head motion)
    except InputError:  # a video without a (readable) sound track: the clip is silent
        return None
    return sound
