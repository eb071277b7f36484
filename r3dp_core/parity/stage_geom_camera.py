"""Parity stage ``geom_camera``: driving-pose length matching, depth fix, mapping, EG3D cameras, smoothing,
and the torso keypoints of source and driving frames."""

from __future__ import annotations

import re

import torch

from ..geometry.camera import driving_pose, eg3d_cameras, mirror_index, smooth_camera_sequence
from ..geometry.keypoints import smooth_torso_keypoints, torso_keypoints
from .case import ParityCase
from .synth_bfm import synth_face_model


def _map_to_init_pose(case: ParityCase) -> bool:
    m = re.search(r"map_to_init_pose\s*=\s*'?(\w+)'?", case.call.get("official", ""))
    return m is None or m.group(1) == "True"  # the official default is True


def run(case: ParityCase) -> dict[str, torch.Tensor]:
    model = synth_face_model(case.dir)
    pose_euler, pose_trans = case.tensor("pose_euler"), case.tensor("pose_trans")
    src_id, src_exp = case.tensor("src_id"), case.tensor("src_exp")
    src_euler, src_trans = case.tensor("src_euler"), case.tensor("src_trans")
    drv_exp = case.tensor("drv_exp")
    n = drv_exp.shape[0]
    pose = driving_pose(pose_euler, pose_trans, n, src_euler, src_trans, _map_to_init_pose(case))
    camera_raw = eg3d_cameras(pose.euler, pose.trans, dtype=torch.float64)
    drv_kp = torso_keypoints(model, src_id.expand(n, -1), drv_exp, pose.euler, pose.trans)
    return {
        "mirror_index": mirror_index(n, pose_euler.shape[0]),
        "euler_mapped": pose.euler,
        "trans_mapped": pose.trans,
        "camera_raw": camera_raw,
        "camera": smooth_camera_sequence(camera_raw).float(),
        "src_kp": torso_keypoints(model, src_id, src_exp, src_euler, src_trans),
        "drv_kp": drv_kp,
        "drv_kp_smoothed": smooth_torso_keypoints(drv_kp),
    }
