"""Parity stage ``geom_fit_video``: the official video landmark fit with a shared identity (stage-2 values)."""

from __future__ import annotations

import torch

from ..geometry.fitting import VIDEO_FIT, fit_video
from ._fit_common import image_height
from .case import ParityCase
from .synth_bfm import synth_face_model

NEEDS_GRAD = True


def run(case: ParityCase) -> dict[str, torch.Tensor]:
    fitted = fit_video(synth_face_model(case.dir), case.tensor("lms478"), image_height(case), VIDEO_FIT)
    return {"id": fitted.id, "exp": fitted.exp, "euler": fitted.euler, "trans": fitted.trans}
