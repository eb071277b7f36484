"""Parity stage ``geom_fit_image``: the official single-image landmark fit (stage-2 values)."""

from __future__ import annotations

import torch

from ..geometry.fitting import IMAGE_FIT, fit_image
from ._fit_common import image_height
from .case import ParityCase
from .synth_bfm import synth_face_model

NEEDS_GRAD = True


def run(case: ParityCase) -> dict[str, torch.Tensor]:
    fitted = fit_image(synth_face_model(case.dir), case.tensor("lms478"), image_height(case), IMAGE_FIT)
    return {"id": fitted.id, "exp": fitted.exp, "euler": fitted.euler, "trans": fitted.trans}
