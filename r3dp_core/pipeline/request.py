"""What a job is asked to do: the CLI's arguments, as a plain dataclass the pipeline and tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from .pose import PoseRecipe

OUTPUT_MODES = ("crop", "photo")


@dataclass
class GenerateRequest:
    """One ``r3dp generate`` job; see ``r3dp generate --help`` for each option."""

    image: Path
    out: Path
    audio: Path | None = None
    pose_video: Path | None = None
    expression_video: Path | None = None
    bg: Path | None = None
    camera: str = PoseRecipe.mode            # the head-pose recipe (see pose_recipe)
    keyframes: str = PoseRecipe.keyframes
    easing: str = PoseRecipe.easing
    pose_strength: float = PoseRecipe.pose_strength
    pose_smoothing: int = PoseRecipe.pose_smoothing
    natural_on_top: bool = PoseRecipe.natural_on_top
    mouth_amp: float = defaults.MOUTH_AMP
    mouth_scale: float = defaults.MOUTH_SCALE  # scales the mouth's motion in the SECC (audio and video driving)
    blink: bool = defaults.BLINK
    temperature: float = defaults.TEMPERATURE
    seed: int = defaults.SEED
    device: str = "auto"
    dtype: str = "auto"
    chunk_size: int = defaults.CHUNK_SIZE
    min_face_area: float = defaults.MIN_FACE_AREA
    face: str | int = "largest"              # or an index into the photo's faces, left to right
    output: str = "crop"                     # crop: the 512² square; photo: pasted back into the photo
    models_dir: Path | None = None
    head_mask: Path | None = None            # instead of the segmenter: the head (with hair) in the photo
    body_mask: Path | None = None            # with head_mask: the rest of the person
    debug_panels: bool = False               # source | SECC | raw render | depth | final, side by side
    motion: Path | None = None               # a motion file (.safetensors of ours, official .npy) drives the face
    map_to_init_pose: bool = True            # a driving pose starts at the photo's pose (official True)
    head_threshold: float = defaults.HEAD_THRESHOLD  # HTB-SR: head alpha above this counts as solid head (official 0.9)

    def pose_recipe(self, pose_motion=None) -> PoseRecipe:
        """The job's head-pose recipe (checked when made); ``pose_motion``: the pose video's motion, if any.
        Natural motion takes the job's seed."""
        return PoseRecipe(mode=self.camera, pose_motion=pose_motion, map_to_init_pose=self.map_to_init_pose,
                          keyframes=self.keyframes, easing=self.easing, pose_smoothing=self.pose_smoothing,
                          pose_strength=self.pose_strength, seed=self.seed, natural_on_top=self.natural_on_top)
