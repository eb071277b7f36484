"""Cameras and head poses: official parity, EG3D convention, smoothing vs scipy, and the new camera paths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from r3dp_core.geometry.bfm import compute_rotation
from r3dp_core.geometry.camera import (
    EG3D_FOCAL,
    HeadPose,
    camera_to_pose,
    driving_pose,
    eg3d_cameras,
    keyframe_pose,
    matrix_to_quaternion,
    mirror_index,
    orbit_pose,
    quaternion_to_matrix,
    smooth_camera_sequence,
    static_pose,
)
from r3dp_core.parity import run_case

SRC_EULER = torch.tensor([[0.05, -0.12, 0.02]])
SRC_TRANS = torch.tensor([[0.02, -0.03, -1.5]])
OFFSET = torch.tensor([0.0, 0.006, 0.161])


def test_parity_camera(parity_dir, parity_cache):
    report = run_case(parity_dir / "case_geom_camera.safetensors")
    assert report.passed, report.summary()
    exact = {c.name for c in report.checks if c.max_abs == 0.0}
    assert {"mirror_index", "euler_mapped", "trans_mapped", "camera_raw", "camera"} <= exact


def test_zero_pose_camera_is_the_documented_one():
    cam = eg3d_cameras(torch.zeros(1, 3), torch.zeros(1, 3), dtype=torch.float64)[0]
    c2w = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0.006], [0, 0, -1, 2.861], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(cam[:16].reshape(4, 4), c2w, atol=1e-7, rtol=0)
    assert cam[16:].tolist() == [EG3D_FOCAL, 0, 0.5, 0, EG3D_FOCAL, 0.5, 0, 0, 1]
    assert eg3d_cameras(torch.zeros(2, 3), torch.zeros(2, 3)).dtype == torch.float32


def test_camera_to_pose_inverts_eg3d_cameras():
    t = torch.arange(40, dtype=torch.float64)
    euler = torch.stack([0.1 * torch.sin(t / 5), 0.05 + 0.4 * torch.sin(t / 7), 0.03 * torch.cos(t / 3)], 1)
    trans = torch.stack([0.1 * torch.sin(t / 4), 0.05 * torch.cos(t / 6), torch.full_like(t, 0.3)], 1)
    back_euler, back_trans = camera_to_pose(eg3d_cameras(euler, trans, dtype=torch.float64))
    assert back_euler.dtype == back_trans.dtype == torch.float64
    # eg3d_cameras computes in float32 (as the official code does): the round trip is exact to float32
    torch.testing.assert_close(back_euler, euler, atol=1e-6, rtol=0)
    torch.testing.assert_close(back_trans, trans, atol=1e-5, rtol=0)
    # the yaw and pitch of a camera path: the orbit's quarter period (frame 2 of 8) is 20 degrees of pure yaw
    path, _ = camera_to_pose(orbit_pose(torch.zeros(1, 3), torch.zeros(1, 3), 8, yaw_deg=20.0).cameras(None))
    assert math.degrees(float(path[2, 1])) == pytest.approx(20.0, abs=1e-4)
    assert float(path[:, 0].abs().max()) < 1e-6 and float(path[:, 2].abs().max()) < 1e-6


def test_camera_looks_at_the_head_from_the_posed_direction():
    euler = torch.tensor([[0.0, 0.3, 0.0]])  # yaw: the head turns, so the camera orbits the other way
    cam = eg3d_cameras(euler, torch.zeros(1, 3), dtype=torch.float64)[0]
    c2w = cam[:16].reshape(4, 4)
    centre = c2w[:3, 3] - OFFSET.double()
    assert centre.norm().item() == pytest.approx(2.7, abs=1e-6)
    forward = c2w[:3, 2]  # OpenCV +z: the viewing direction points back at the origin
    torch.testing.assert_close(forward, -centre / centre.norm(), atol=1e-6, rtol=0)
    assert torch.det(c2w[:3, :3]).item() == pytest.approx(1.0, abs=1e-6)
    assert centre[0].item() == pytest.approx(-2.7 * math.sin(0.3), abs=1e-6)


def test_mirror_index_ping_pongs():
    assert mirror_index(10, 4).tolist() == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1]
    assert mirror_index(5, 1).tolist() == [0] * 5
    assert mirror_index(3, 7).tolist() == [0, 1, 2]


def test_driving_pose_maps_onto_source_and_fixes_depth():
    g = torch.Generator().manual_seed(0)
    pose_euler, pose_trans = 0.2 * torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    pose = driving_pose(pose_euler, pose_trans, 13, SRC_EULER, SRC_TRANS)
    assert len(pose) == 13
    torch.testing.assert_close(pose.euler[0], SRC_EULER[0])
    torch.testing.assert_close(pose.trans[0], SRC_TRANS[0])
    assert (pose.trans[:, 2] == pose.trans[0, 2]).all()
    torch.testing.assert_close(pose.euler[1] - pose.euler[0], pose_euler[1] - pose_euler[0])
    torch.testing.assert_close(pose.euler[6], pose.euler[5])  # the ping-pong turn repeats the last frame
    raw = driving_pose(pose_euler, pose_trans, 13, map_to_init_pose=False)
    assert torch.equal(raw.euler, pose_euler[mirror_index(13, 6)])
    assert (raw.trans[:, 2] == pose_trans[0, 2]).all()
    with pytest.raises(ValueError, match="source pose"):
        driving_pose(pose_euler, pose_trans, 13)


def test_static_pose_holds_the_source():
    pose = static_pose(SRC_EULER, SRC_TRANS[0], 4)
    assert torch.equal(pose.euler, SRC_EULER.repeat(4, 1)) and torch.equal(pose.trans, SRC_TRANS.repeat(4, 1))
    cams = pose.cameras()
    assert cams.shape == (4, 25) and cams.dtype == torch.float32
    # smoothing a constant sequence changes nothing but float32 rounding of the re-orthonormalised rotation
    torch.testing.assert_close(cams, pose.cameras(None), atol=1e-7, rtol=0)


def _scipy_smooth(cameras: np.ndarray, k: int = 7) -> np.ndarray:
    """The official algorithm, written against scipy for comparison."""
    out = cameras.copy()
    n = len(cameras)
    for i in range(n):
        window = cameras[max(0, i - k // 2): min(n, i + k // 2 + 1)]
        pose = window[:, :12].reshape(-1, 3, 4)
        out[i, [3, 7, 11]] = pose[:, :, 3].mean(0)
        rot = Rotation.from_matrix(pose[:, :, :3]).mean().as_matrix()
        out[i, [0, 1, 2, 4, 5, 6, 8, 9, 10]] = rot.reshape(-1)
    return out


def test_smoothing_matches_scipy_rotation_mean():
    g = torch.Generator().manual_seed(1)
    euler = torch.cumsum(0.08 * torch.randn(11, 3, generator=g), 0)
    trans = torch.cumsum(0.05 * torch.randn(11, 3, generator=g), 0)
    raw = eg3d_cameras(euler, trans, dtype=torch.float64)
    ours = smooth_camera_sequence(raw)
    np.testing.assert_allclose(ours.numpy(), _scipy_smooth(raw.numpy()), atol=1e-12, rtol=0)
    assert torch.equal(ours[:, 12:], raw[:, 12:])
    short = smooth_camera_sequence(raw[:2], kernel_size=7)  # windows larger than the sequence
    np.testing.assert_allclose(short.numpy(), _scipy_smooth(raw[:2].numpy()), atol=1e-12, rtol=0)


def test_quaternion_conversions_match_scipy():
    rots = Rotation.random(20, random_state=3)
    matrices = torch.from_numpy(rots.as_matrix())
    quat = matrix_to_quaternion(matrices)
    expected = rots.as_quat()
    sign = np.sign((quat.numpy() * expected).sum(-1, keepdims=True))
    np.testing.assert_allclose(quat.numpy() * sign, expected, atol=1e-12)
    torch.testing.assert_close(quaternion_to_matrix(quat), matrices, atol=1e-12, rtol=0)


def test_orbit_endpoints_and_radius():
    pose = orbit_pose(SRC_EULER, SRC_TRANS, 40, yaw_deg=20, pitch_deg=10)
    assert torch.equal(pose.euler[0], SRC_EULER[0]) and (pose.trans == SRC_TRANS).all()
    yaw, pitch = math.radians(20), math.radians(10)
    torch.testing.assert_close(pose.euler[10], SRC_EULER[0] + torch.tensor([pitch / 2, yaw, 0]))
    torch.testing.assert_close(pose.euler[20], SRC_EULER[0] + torch.tensor([pitch, 0, 0]))
    torch.testing.assert_close(pose.euler[30], SRC_EULER[0] + torch.tensor([pitch / 2, -yaw, 0]))
    assert (pose.euler[:, 2] == SRC_EULER[0, 2]).all()
    assert pose.euler[:, 1].max().item() == pytest.approx(SRC_EULER[0, 1].item() + yaw, abs=1e-6)
    twice = orbit_pose(SRC_EULER, SRC_TRANS, 40, yaw_deg=20, loops=2)
    torch.testing.assert_close(twice.euler[:20], twice.euler[20:])
    # the camera stays on a sphere around the head while it orbits
    cams = pose.cameras(None)
    radius = (cams[:, [3, 7, 11]] - OFFSET).norm(dim=1)
    torch.testing.assert_close(radius, radius[:1].expand(40), atol=2e-6, rtol=0)
    assert cams.shape == (40, 25)


def _geodesic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    rel = compute_rotation(a.double()).transpose(1, 2) @ compute_rotation(b.double())
    return torch.acos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))


def test_keyframes_are_hit_exactly_and_slerped_between():
    key_euler = torch.tensor([[0.0, -0.3, 0.0], [0.1, 0.3, 0.05], [-0.05, 0.0, -0.1]])
    key_trans = torch.tensor([[0.0, 0.0, -1.5], [0.05, 0.0, -1.4], [0.0, 0.02, -1.5]])
    pose = keyframe_pose([2, 12, 20], key_euler, key_trans, 24)
    for j, f in enumerate([2, 12, 20]):
        assert torch.equal(pose.euler[f], key_euler[j]) and torch.equal(pose.trans[f], key_trans[j])
    assert torch.equal(pose.euler[:2], key_euler[:1].expand(2, 3))  # held before the first key
    assert torch.equal(pose.euler[21:], key_euler[2:].expand(3, 3))  # and after the last
    steps = _geodesic(pose.euler[2:12], pose.euler[3:13])  # slerp: constant angular speed
    torch.testing.assert_close(steps, steps[:1].expand(10), atol=1e-6, rtol=0)
    total = _geodesic(key_euler[:1], key_euler[1:2])
    torch.testing.assert_close(steps.sum(), total[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(pose.trans[7], (key_trans[0] + key_trans[1]) / 2)
    yaw_only = keyframe_pose([0, 10], torch.tensor([[0.0, -0.4, 0.0], [0.0, 0.4, 0.0]]), torch.zeros(2, 3), 11)
    torch.testing.assert_close(yaw_only.euler[:, 1], torch.linspace(-0.4, 0.4, 11), atol=1e-6, rtol=0)


def test_smooth_easing_starts_and_ends_at_rest():
    key_euler = torch.tensor([[0.0, -0.4, 0.0], [0.0, 0.4, 0.0]])
    pose = keyframe_pose([0, 20], key_euler, torch.zeros(2, 3), 21, easing="smooth")
    speed = (pose.euler[1:, 1] - pose.euler[:-1, 1]).abs()
    assert speed[0] < 0.2 * speed[10] and speed[-1] < 0.2 * speed[10]
    assert pose.euler[10, 1].abs().item() < 1e-6


def test_keyframe_arguments_are_checked():
    e = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        keyframe_pose([5, 5], e, e, 10)
    with pytest.raises(ValueError, match="shape"):
        keyframe_pose([0, 5, 9], e, e, 10)
    with pytest.raises(ValueError, match="easing"):
        keyframe_pose([0, 5], e, e, 10, easing="cubic")
    single = keyframe_pose([3], e[:1] + 0.1, e[:1], 6)
    assert torch.equal(single.euler, torch.full((6, 3), 0.1))


def test_head_pose_validates_shapes():
    with pytest.raises(ValueError, match=r"\[T,3\]"):
        HeadPose(torch.zeros(4, 3), torch.zeros(5, 3))


# ----------------------------------------------------------------------------------------------- pose recipes

def _portrait_and_motions(frames: int = 12):
    from r3dp_core.pipeline.types import Motion
    from r3dp_core.standins import synthetic_avatar

    avatar = dataclasses.replace(synthetic_avatar(32), euler=SRC_EULER, trans=SRC_TRANS)
    audio = Motion(exp=torch.zeros(frames, 64))
    euler = torch.stack([torch.linspace(0, 0.3, 5), torch.linspace(0.1, -0.2, 5), torch.zeros(5)], -1)
    trans = torch.stack([torch.zeros(5), torch.linspace(0, 0.05, 5), torch.linspace(-1.2, -1.0, 5)], -1)
    video = Motion(exp=torch.zeros(5, 64), euler=euler, trans=trans)
    return avatar, audio, video


def test_pose_recipes_resolve_every_mode_like_the_camera_paths():
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose

    avatar, audio, video = _portrait_and_motions()
    static = resolve_pose(PoseRecipe(mode="static"), avatar, audio)
    assert torch.equal(static.euler, SRC_EULER.expand(12, 3)) and static.smooth_kernel == 7
    # auto follows a pose when there is one (a pose video's, else the driving motion's own), else moves naturally
    assert torch.equal(resolve_pose(PoseRecipe(), avatar, audio).euler,
                       resolve_pose(PoseRecipe(mode="natural"), avatar, audio).euler)
    followed = resolve_pose(PoseRecipe(pose_motion=video), avatar, audio)
    expected = driving_pose(video.euler, video.trans, 12, SRC_EULER, SRC_TRANS)
    assert torch.equal(followed.euler, expected.euler) and torch.equal(followed.trans, expected.trans)
    own = resolve_pose(PoseRecipe(mode="driving", map_to_init_pose=False), avatar, video)
    unmapped = driving_pose(video.euler, video.trans, 5, map_to_init_pose=False)
    assert torch.equal(own.euler, unmapped.euler)
    orbit = resolve_pose(PoseRecipe(mode="orbit", orbit_yaw_degrees=10, orbit_pitch_degrees=4, orbit_loops=2),
                         avatar, audio)
    assert torch.equal(orbit.euler, orbit_pose(SRC_EULER, SRC_TRANS, 12, 10, 4, 2).euler)
    keyed = resolve_pose(PoseRecipe(mode="keyframes", keyframes="0: 0, 0; 0.2: 10, -4", easing="linear",
                                    pose_smoothing=1), avatar, audio)   # 0.2 s = frame 5 at 25 fps
    key = SRC_EULER[0] + torch.tensor([math.radians(-4), math.radians(10), 0.0])
    assert torch.allclose(keyed.euler[5], key, atol=1e-6) and torch.allclose(keyed.euler[11], key, atol=1e-6)
    assert keyed.smooth_kernel is None and torch.equal(keyed.cameras(), eg3d_cameras(keyed.euler, keyed.trans))
    no_keys = resolve_pose(PoseRecipe(mode="keyframes"), avatar, audio)
    assert torch.equal(no_keys.euler, static.euler)


def test_pose_recipes_refuse_what_they_cannot_do():
    from r3dp_core.errors import InputError
    from r3dp_core.pipeline.pose import PoseRecipe, parse_keyframes, resolve_pose

    avatar, audio, _ = _portrait_and_motions()
    with pytest.raises(InputError, match="this motion has none"):
        resolve_pose(PoseRecipe(mode="driving"), avatar, audio)
    with pytest.raises(InputError, match="Unknown head-pose mode 'spin'"):
        PoseRecipe(mode="spin")
    with pytest.raises(InputError, match="Unknown keyframe easing"):
        PoseRecipe(easing="cubic")
    with pytest.raises(InputError, match=r"Keyframe 2 \('1: x'\) is not 'seconds: yaw, pitch'"):
        PoseRecipe(mode="keyframes", keyframes="0: 0, 0; 1: x")
    with pytest.raises(InputError, match="same time"):
        parse_keyframes("1: 0, 0; 1.0: 5, 5")
    assert parse_keyframes(" 2: 20, -5; 0: 0, 0; ") == ((0.0, 0.0, 0.0), (2.0, 20.0, -5.0))


def test_a_pose_smooths_its_cameras_as_it_says():
    raw = HeadPose(SRC_EULER + torch.linspace(0, 0.4, 9)[:, None], SRC_TRANS.expand(9, 3), smooth_kernel=None)
    assert torch.equal(raw.cameras(), eg3d_cameras(raw.euler, raw.trans))
    smoothed = dataclasses.replace(raw, smooth_kernel=3)
    assert torch.equal(smoothed.cameras(), smooth_camera_sequence(raw.cameras(), 3))
    assert torch.equal(smoothed.cameras(None), raw.cameras())
