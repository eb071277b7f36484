"""Parity stage ``geom_3dmm_forward``: 3DMM shape, pose, camera, landmark projections and torso keypoints."""

from __future__ import annotations

import torch

from ..geometry.bfm import fit_space_to_pixels
from ..geometry.keypoints import smooth_torso_keypoints, torso_keypoints
from .case import ParityCase
from .synth_bfm import synth_face_model

#: the image size of the derived ``lm468_img512`` output
IMAGE_SIZE = 512


def run(case: ParityCase) -> dict[str, torch.Tensor]:
    model = synth_face_model(case.dir)
    exp, euler, trans = case.tensor("exp"), case.tensor("euler"), case.tensor("trans")
    id_coeff = case.tensor("id").expand(exp.shape[0], -1)  # the case repeats id to T rows before every call
    pose = (id_coeff, exp, euler, trans)
    lm468 = model.lm468(*pose)
    torso_kp = torso_keypoints(model, *pose)
    return {
        "shape_canonical": model.compute_shape(id_coeff, exp),
        "rotation": model.compute_rotation(euler),
        "vertex_cam": model.vertices_cam(*pose),
        "lm468_fit": lm468,
        "lm468_img512": fit_space_to_pixels(lm468, IMAGE_SIZE),
        "lm68_pfm_fit": model.lm68(*pose),
        "lm68_helper_3d": model.lm68_helper_3d(*pose),
        "lm68_helper_2d": model.lm68_helper_2d(*pose),
        "torso_kp": torso_kp,
        "torso_kp_smoothed": smooth_torso_keypoints(torso_kp),
    }
