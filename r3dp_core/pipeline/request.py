"""What a job is asked to do: ``r3dp generate``'s options, as a plain dataclass the pipeline and tests share.

Each field is an option of :data:`~r3dp_core.pipeline.options.GENERATE`, whose entry holds its default, range
and doc; :func:`request_from_options` builds a request from parsed options (the command line, a batch row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .options import GENERATE
from .pose import PoseRecipe


def _default(name: str):
    return GENERATE[name].default


@dataclass
class GenerateRequest:
    """One ``r3dp generate`` job; see ``r3dp generate --help`` (or the README's table) for each option."""

    image: Path | None = None                   # a photo, or (exclusive) ``persona``
    out: Path = None                            # required (the option table's ``required``)
    audio: Path | None = _default("audio")
    pose_video: Path | None = _default("pose_video")
    expression_video: Path | None = _default("expression_video")
    bg: Path | None = _default("bg")
    camera: str = _default("camera")            # the head-pose recipe (see pose_recipe)
    keyframes: str = _default("keyframes")
    easing: str = _default("easing")
    pose_strength: float = _default("pose_strength")
    pose_smoothing: int = _default("pose_smoothing")
    natural_on_top: bool = _default("natural_on_top")
    mouth_amp: float = _default("mouth_amp")
    mouth_scale: float = _default("mouth_scale")  # scales the mouth's motion in the SECC (audio and video driving)
    blink: bool = _default("blink")
    temperature: float = _default("temperature")
    seed: int = _default("seed")
    device: str = _default("device")
    dtype: str = _default("dtype")
    chunk_size: int = _default("chunk_size")
    min_face_area: float = _default("min_face_area")
    face: str | int = _default("face")          # or an index into the photo's faces, left to right
    output: str = _default("output")            # crop: the 512² square; photo: pasted back into the photo
    models_dir: Path | None = _default("models_dir")
    head_mask: Path | None = _default("head_mask")  # instead of the segmenter: the head (with hair) in the photo
    body_mask: Path | None = _default("body_mask")  # with head_mask: the rest of the person
    debug_panels: bool = _default("debug_panels")   # source | SECC | raw render | depth | final, side by side
    motion: Path | None = _default("motion")        # a motion file (ours, or an official .npy) drives the face
    map_to_init_pose: bool = _default("map_to_init_pose")  # a driving pose starts at the photo's pose (official True)
    head_threshold: float = _default("head_threshold")  # HTB-SR: head alpha above this counts as solid head
    persona: Path | None = _default("persona")      # a persona folder instead of the photo (pipeline/persona.py)
    blink_source: str = _default("blink_source")    # a persona's blinks: schedule or replay
    video: Path | None = _default("video")          # a persona's training video for --output video

    @property
    def is_persona(self) -> bool:
        """The job animates a persona (``--persona``), not a photo."""
        return self.persona is not None

    def pose_recipe(self, pose_motion=None) -> PoseRecipe:
        """The job's head-pose recipe (checked when made); ``pose_motion``: the pose video's motion, if any.
        Natural motion takes the job's seed."""
        return PoseRecipe(mode=self.camera, pose_motion=pose_motion, map_to_init_pose=self.map_to_init_pose,
                          keyframes=self.keyframes, easing=self.easing, pose_smoothing=self.pose_smoothing,
                          pose_strength=self.pose_strength, seed=self.seed, natural_on_top=self.natural_on_top)


def request_from_options(options) -> GenerateRequest:
    """The ``GenerateRequest`` of parsed ``generate`` options (an ``argparse.Namespace`` of a parser made by
    :func:`~r3dp_core.pipeline.options.add_generate_arguments`: ``r3dp generate`` and every row of ``r3dp batch``),
    each value converted as its entry says (paths to ``Path``, ``face`` to ``'largest'`` or an index).

    Raises:
        InputError: ``face`` is neither ``largest`` nor an index; neither or both of ``image`` and ``persona``.
    """
    request = GenerateRequest(**{option.name: option.convert(getattr(options, option.name))
                                 for option in GENERATE if option.request})
    check_subject(request)
    return request


def check_subject(request: GenerateRequest) -> None:
    """Exactly one of ``image`` (a photo) and ``persona`` (a persona folder) is given.

    Raises:
        InputError: neither or both.
    """
    if request.image is not None and request.persona is not None:
        raise InputError("--persona and --image are exclusive: --image animates a photo, --persona a trained "
                         "persona. Give one of them.")
    if request.image is None and request.persona is None:
        raise InputError("Give --image (a portrait photo to animate) or --persona (a persona folder made by "
                         "`r3dp personalise`).")
