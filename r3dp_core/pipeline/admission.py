"""One admission step for a ``generate`` job: which model files it needs, its inputs checked and decoded, its masks.

``r3dp generate`` (and its ``--dry-run``), ``r3dp batch``'s up-front check of every row and the batch workers
all admit a job with :func:`admit`; the model files a job needs are :func:`needed_models`'s list, which the
check here, ``load_job_models`` and the batch's model list (``batch.jobs.model_users``) all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import model_files
from ..defaults import MASK_THRESHOLD
from ..errors import InputError
from ..images import uint8_to_unit
from .request import GenerateRequest
from .types import PortraitMasks
from .validation import ValidatedInputs, validate


@dataclass
class Admitted:
    """A job that passed admission: its request, its decoded inputs (``ValidatedInputs``: the portrait, the sound
    decoded once, the motion file, ...), its head/body masks (None: the segmenter's) and the model files it needs
    (``model_files`` keys, :func:`needed_models`), in ``models_dir``."""

    request: GenerateRequest
    inputs: ValidatedInputs     # a persona job: ``pipeline.persona.PersonaInputs``
    masks: PortraitMasks | None
    models: tuple[str, ...]
    models_dir: Path


def needed_models(request: GenerateRequest) -> list[str]:
    """Keys of ``model_files.MODEL_FILES`` this job needs (a persona job: Talk3D's wav2vec2 alone)."""
    if request.persona is not None:
        return ["wav2vec2"]
    needed = ["video_model", "bfm", "bfm_mediapipe_index", "bfm_left_eye_faces", "bfm_right_eye_faces",
              "face_landmarker"]
    if request.head_mask is None:
        needed.append("segmenter")
    if request.expression_video is None and request.motion is None:
        needed += ["audio_model", "hubert"]
    return needed


def check_model_files(request: GenerateRequest, models_dir: Path, skip: tuple[str, ...] = ()) -> None:
    """Raise one error listing every model file the job needs and the folder lacks (where it goes, where it
    comes from); nothing is loaded."""
    specs = [model_files.BY_KEY[key] for key in needed_models(request) if key not in skip]
    missing = [spec for spec in specs if spec.find(models_dir) is None]
    if missing:
        raise InputError(f"{len(missing)} model file(s) missing (`r3dp models fetch` downloads what can be "
                         "downloaded):\n" + "\n".join("  - " + m.missing_message(models_dir) for m in missing))


def load_masks(request: GenerateRequest) -> PortraitMasks | None:
    """The ``--head-mask``/``--body-mask`` images as ``PortraitMasks`` (None without a head mask)."""
    from .inputs import load_image

    if request.head_mask is None:
        if request.body_mask is not None:
            raise InputError("--body-mask needs --head-mask: give the head mask too, or neither to use the segmenter.")
        return None

    def grey(path: Path) -> torch.Tensor:
        return uint8_to_unit(load_image(path)).amax(-1)

    head = grey(request.head_mask)
    if not bool((head > MASK_THRESHOLD).any()):
        raise InputError(f"{request.head_mask}: the head mask is empty (no pixel is brighter than half); "
                         "the head must be white on black.")
    return PortraitMasks(head, grey(request.body_mask) if request.body_mask is not None else None)


def admit(request: GenerateRequest, models_dir: Path | None = None, *, check_models: bool = True,
          skip_models: tuple[str, ...] = ()) -> Admitted:
    """Admit one job, before any model is loaded: the model files it needs are in the folder (all missing ones
    listed at once), then every input is read and checked (``validation.validate``: needs only the face
    landmarker), then the masks.

    Args:
        models_dir: the models folder (default: the request's, else the default folder).
        check_models: look for the model files first. Off where another step has done it: ``--dry-run`` (which
            checks inputs only), a batch (its rows' files are checked together, with the rows that need each) and
            a batch worker (its models are loaded).
        skip_models: model files not looked for (the video model when the caller brings its own).
    Raises:
        InputError: a missing model file, a bad input or mask (one paragraph each).
    """
    models_dir = Path(models_dir) if models_dir is not None else model_files.default_models_dir(request.models_dir)
    if check_models:
        check_model_files(request, models_dir, skip_models)
    if request.persona is not None:
        from .persona import validate_persona

        return Admitted(request, validate_persona(request), None, tuple(needed_models(request)), models_dir)
    inputs = validate(request, models_dir)
    masks = load_masks(request)
    return Admitted(request, inputs, masks, tuple(needed_models(request)), models_dir)
