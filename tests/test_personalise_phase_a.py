"""Phase A of ``r3dp personalise`` (VIVE3D): anchor choice, joint inversion, PTI tuning, per-frame cameras.

The "video" is rendered by a tiny EG3D generator at known yaw/pitch, so the cameras phase A finds can be compared
with the truth. A stand-in object with the attributes of ``PreparedVideo`` carries the crops, masks and tracks.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError
from r3dp_core.host import Host
from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator, tiny_config
from r3dp_core.talk3d.losses import BicubicDownSample
from r3dp_core.talk3d.personalise import phase_a
from r3dp_core.talk3d.personalise.presets import get_preset

SIZE = 64  # the tiny generator's output side
TARGET_SEED, PRIOR_SEED = 1, 0


def tiny_generator(seed: int) -> TriPlaneGenerator:
    """A seeded tiny generator whose images stay inside [-1, 1] like a trained one's: the random SR output layers
    overshoot (about ±2), and crops clipped at ±1 would pull the camera towards whatever matches the clipping, so
    they are scaled down."""
    torch.manual_seed(seed)
    generator = TriPlaneGenerator(tiny_config())
    with torch.no_grad():
        for name, parameter in generator.superresolution.named_parameters():
            if "torgb" in name:
                parameter.mul_(0.3)
    return generator.requires_grad_(False)


def stand_in_prepared(crops: np.ndarray, *, train_frames: int | None = None, head_angles=None, lips=None,
                      masks: np.ndarray | None = None) -> types.SimpleNamespace:
    """An object with the attributes of ``PreparedVideo`` that phase A reads."""
    count = len(crops)
    if masks is None:
        masks = np.zeros((count, 4, SIZE, SIZE), np.uint8)
        masks[:, 0, 12:56, 16:48] = 1   # face
        masks[:, 1, 40:48, 24:40] = 1   # mouth
        masks[:, 2, 8:64, 8:56] = 1     # body
    tracks = {"head_angles": torch.zeros(count, 3) if head_angles is None else head_angles,
              "lips": torch.rand(count, 40, 2, generator=torch.Generator().manual_seed(3)) if lips is None else lips}
    train = train_frames if train_frames is not None else count * 10 // 11
    return types.SimpleNamespace(crops=crops, masks=masks, tracks=tracks, num_frames=count, train_frames=train,
                                 info={"fps": 25})


def render_video(generator: TriPlaneGenerator, w: torch.Tensor, yaw, pitch) -> np.ndarray:
    """uint8 crops ``[N,64,64,3]`` of ``w [1,w_dim]`` at the given cameras."""
    yaw, pitch = torch.as_tensor(yaw, dtype=torch.float32), torch.as_tensor(pitch, dtype=torch.float32)
    ws = phase_a.broadcast_ws(w, generator.num_ws).expand(len(yaw), -1, -1)
    with torch.no_grad():
        out = generator.render(generator.synthesize_planes(ws), ws, generator.cameras(yaw, pitch),
                               generator=torch.Generator().manual_seed(0))
    return ((out.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def target():
    """A 12-frame video of one latent of the target generator: yaw +0.2 / −0.2 / +0.2 in blocks of 4, pitch 0."""
    generator = tiny_generator(TARGET_SEED)
    with torch.no_grad():
        w = generator.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(7)))[:, 0]
    yaw = [0.2] * 4 + [-0.2] * 4 + [0.2] * 4
    crops = render_video(generator, w, yaw, [0.0] * 12)
    return types.SimpleNamespace(generator=generator, w=w, yaw=torch.tensor(yaw), crops=crops,
                                 prepared=stand_in_prepared(crops))


def anchor_error(generator, ws: torch.Tensor, angles: torch.Tensor, images: torch.Tensor) -> tuple[float, float]:
    """Mean |render − target| of the SR image and of the raw image (vs the bicubic ×4 target), fixed noise."""
    full = phase_a.broadcast_ws(ws, generator.num_ws)
    with torch.no_grad():
        out = generator.render(generator.synthesize_planes(full), full, generator.cameras(angles[:, 0], angles[:, 1]),
                               generator=torch.Generator().manual_seed(11))
        raw_target = BicubicDownSample(4)(images)
    return float((out.image - images).abs().mean()), float((out.image_raw - raw_target).abs().mean())


# ---------------------------------------------------------------------------------------------- building blocks --

def test_differentiable_cameras_match_the_official_cameras_and_carry_gradients():
    yaw = torch.tensor([0.1, -0.25, 0.0], requires_grad=True)
    pitch = torch.tensor([-0.05, 0.1, 0.0], requires_grad=True)
    cameras = phase_a.differentiable_cameras(yaw, pitch)
    generator = TriPlaneGenerator(tiny_config())
    assert cameras.shape == (3, 25)
    torch.testing.assert_close(cameras, generator.cameras(yaw.detach(), pitch.detach()), atol=1e-6, rtol=0)
    cameras[:, 3].sum().backward()   # origin x moves with the yaw
    assert yaw.grad.abs().min() > 0 and torch.isfinite(pitch.grad).all()


def test_schedules_follow_the_stylegan_projector_and_vive3d():
    assert phase_a.projector_learning_rate(0.01, 0.0) == 1e-4            # ramp-up starts at 0 → the floor
    assert phase_a.projector_learning_rate(0.01, 0.025) == pytest.approx(0.005)
    assert phase_a.projector_learning_rate(0.01, 0.5) == pytest.approx(0.01)
    assert phase_a.projector_learning_rate(0.01, 0.875) == pytest.approx(0.005)
    assert phase_a.latent_noise_std(2.0, 0.0) == pytest.approx(0.04)
    assert phase_a.latent_noise_std(2.0, 0.75) == 0.0 and phase_a.latent_noise_std(2.0, 0.9) == 0.0
    assert phase_a.offset_weight(0) == phase_a.offset_weight(100) == 0.05
    assert phase_a.offset_weight(101) == pytest.approx(0.0495)
    assert phase_a.offset_weight(10_000) == 0.005


def test_average_latent_is_the_mean_of_mapped_samples():
    generator = TriPlaneGenerator(tiny_config())
    mean, spread = phase_a.average_latent(generator, samples=500, seed=4)
    with torch.no_grad():
        ws = generator.mapping(torch.randn(500, 16, generator=torch.Generator().manual_seed(4)))[:, 0]
    torch.testing.assert_close(mean, ws.mean(0, keepdim=True))
    assert spread == pytest.approx(float(((ws - ws.mean(0)) ** 2).sum(1).mean().sqrt()), rel=1e-5)


# ------------------------------------------------------------------------------------------------ anchor frames --

def anchor_video(count=300, train=272):
    """Tracks only (no pixels needed): frames 30–59 turned 25° away, mouth opening = a slow sine."""
    angles = torch.zeros(count, 3)
    angles[:, 1] = 5.0                    # a constant bias (the official formula's quirk) is not "non-frontal"
    angles[30:60, 1] = 30.0
    opening = 0.1 + 0.4 * (1 + np.sin(np.arange(count) / 7.0)) / 2
    lips = torch.zeros(count, 40, 2)
    lips[:, :, 0] = torch.linspace(0, 40, 40)                                   # 40 px wide
    lips[:, :, 1] = torch.linspace(0, 1, 40)[None] * torch.tensor(opening * 40, dtype=torch.float32)[:, None]
    prepared = stand_in_prepared(np.zeros((count, 1, 1, 3), np.uint8), train_frames=train, head_angles=angles,
                                 lips=lips, masks=np.zeros((count, 4, 8, 8), np.uint8))
    return prepared, opening


def test_anchor_choice_spreads_over_the_first_seconds_frontal_with_the_mouth_closed_and_open():
    prepared, opening = anchor_video()
    anchors = phase_a.choose_anchor_frames(prepared, 3, seconds=4.0)     # 100 candidate frames
    assert anchors == sorted(anchors) and len(set(anchors)) == 3
    segments = np.array_split(np.arange(100), 3)
    assert [int(np.searchsorted([s[0] for s in segments], a, side="right")) - 1 for a in anchors] == [0, 1, 2]
    assert not any(30 <= a < 60 for a in anchors)                       # never the turned-away frames
    # even segments: a closed mouth, odd: an open one (relative to the segment's frontal frames)
    assert opening[anchors[0]] < 0.15 and opening[anchors[2]] < 0.15
    assert opening[anchors[1]] > 0.4


def test_anchor_choice_stays_in_the_training_frames_of_short_videos():
    prepared, _ = anchor_video(count=11, train=10)
    assert phase_a.choose_anchor_frames(prepared, 3, seconds=10.0) == sorted(
        phase_a.choose_anchor_frames(prepared, 3, seconds=10.0))
    assert max(phase_a.choose_anchor_frames(prepared, 3, seconds=10.0)) < 10
    assert phase_a.choose_anchor_frames(prepared, 20, seconds=10.0) == list(range(10))


def test_mouth_opening_falls_back_to_the_mouth_mask():
    masks = np.zeros((2, 4, 16, 16), np.uint8)
    masks[0, 1, 7:9, 4:12] = 1      # closed: 2 rows × 8 columns
    masks[1, 1, 4:12, 4:12] = 1     # open: 8 × 8
    prepared = types.SimpleNamespace(masks=masks, tracks={}, num_frames=2)
    np.testing.assert_allclose(phase_a.mouth_opening(prepared), [0.25, 1.0])


def test_anchor_override_is_validated():
    prepared, _ = anchor_video(count=22, train=20)
    assert phase_a.validate_anchor_frames([12, 3, np.int64(7)], prepared) == [3, 7, 12]
    for bad in ([], [3, 3], [0, 20], [-1], [1.5], ["x"]):
        with pytest.raises(InputError):
            phase_a.validate_anchor_frames(bad, prepared)


def test_feature_mask_unites_the_mouth_and_the_central_face_band():
    masks = np.zeros((2, 4, 64, 64), np.uint8)
    masks[:, 0, 10:60, 10:50] = 1
    masks[0, 1, 44:50, 24:36] = 1
    masks[1, 1, 46:54, 24:36] = 1
    mask = phase_a.feature_mask(types.SimpleNamespace(masks=masks), [0, 1])
    assert mask.shape == (1, 1, 64, 64)
    assert mask[0, 0, 53, 30] == 1 and mask[0, 0, 45, 30] == 1     # both mouths (the union)
    assert mask[0, 0, 30, 30] == 1                                  # eyes / nose band
    assert mask[0, 0, 12, 30] == 0 and mask[0, 0, 30, 11] == 0      # forehead top, cheek edge stay out
    assert mask[0, 0, 58, 30] == 0                                  # chin below the mouth
    empty = phase_a.feature_mask(types.SimpleNamespace(masks=np.zeros((1, 4, 8, 8), np.uint8)), [0])
    assert bool((empty == 1).all())


# ------------------------------------------------------------------------------------------------------ stages --

def test_joint_inversion_fits_the_anchors(target):
    prior = tiny_generator(PRIOR_SEED)
    anchors = [1, 5]
    targets = phase_a._targets(target.prepared, anchors, BicubicDownSample(4), prior.device)
    mask = phase_a.feature_mask(target.prepared, anchors)
    w_mean, w_std = phase_a.average_latent(prior, samples=1000)
    before = anchor_error(prior, w_mean.expand(2, -1), torch.zeros(2, 2), targets.images)
    w, offsets, angles, loss = phase_a.invert_anchors(
        prior, targets, mask, 40, 0.01, None, phase_a._Renderer(prior, 1), torch.Generator().manual_seed(2),
        w_mean=w_mean, w_std=w_std)
    after = anchor_error(prior, w + offsets, angles, targets.images)
    assert w.shape == (1, 16) and offsets.shape == (2, 16) and angles.shape == (2, 2) and np.isfinite(loss)
    assert after[0] < 0.8 * before[0] and after[1] < before[1]
    assert not any(p.requires_grad for p in prior.parameters())


def test_tuning_reduces_the_reconstruction_error_and_leaves_the_sr_alone(target):
    prior = tiny_generator(PRIOR_SEED)
    anchors = [1, 5]
    targets = phase_a._targets(target.prepared, anchors, BicubicDownSample(4), prior.device)
    ws = target.w.expand(2, -1) + 0.05            # near the truth, but from the wrong generator
    angles = target.yaw[anchors, None] * torch.tensor([1.0, 0.0])
    sr_before = copy.deepcopy(prior.superresolution.state_dict())
    before = anchor_error(prior, ws, angles, targets.images)
    loss, steps = phase_a.tune_generator(prior, targets, ws, angles, 20, 1e-3, 0.006, 1e-4, None,
                                         phase_a._Renderer(prior, 1), torch.Generator().manual_seed(2))
    after = anchor_error(prior, ws, angles, targets.images)
    assert steps == 20 and np.isfinite(loss)
    assert after[1] < 0.9 * before[1]                  # the tuned raw image (the term without LPIPS)
    assert after[0] < before[0]
    for key, value in prior.superresolution.state_dict().items():
        torch.testing.assert_close(value, sr_before[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in prior.parameters())
    assert all(p.grad is None for p in prior.parameters())


def test_camera_inversion_follows_a_known_yaw_and_pitch(target):
    """With the true generator and latent, warm-started inversion tracks the yaw blocks (+, −, +) frame by frame,
    and single frames recover the sign of a pitch."""
    subset = stand_in_prepared(target.crops[2:10])          # yaw +0.2, +0.2, −0.2 ×4, +0.2, +0.2
    ones = torch.ones(1, 1, SIZE, SIZE)
    yaw_pitch, losses, steps = phase_a.invert_cameras(
        target.generator, subset, target.w, torch.zeros(1, 16), torch.zeros(2), ones, first_steps=30, steps=20,
        lr=0.01, threshold=0.0, lpips=None, renderer=phase_a._Renderer(target.generator, 5))
    yaw = yaw_pitch[:, 0]
    assert yaw_pitch.shape == (8, 2) and steps == [30] + [20] * 7
    assert yaw[1] > 0.1 and yaw[5] < -0.1 and yaw[7] > yaw[5] + 0.1
    for pitch in (0.15, -0.15):
        crops = render_video(target.generator, target.w, [0.0], [pitch])
        found, _, _ = phase_a.invert_cameras(
            target.generator, stand_in_prepared(crops, train_frames=1), target.w, torch.zeros(1, 16), torch.zeros(2),
            ones, first_steps=25, steps=0, lr=0.01, threshold=0.0, lpips=None,
            renderer=phase_a._Renderer(target.generator, 5))
        assert found[0, 1] * pitch > 0 and abs(found[0, 1]) > 0.08


def test_camera_inversion_warm_starts_from_the_previous_frame(target):
    start = torch.tensor([0.07, -0.03])
    yaw_pitch, losses, steps = phase_a.invert_cameras(
        target.generator, target.prepared, target.w, torch.zeros(1, 16), start, torch.ones(1, 1, SIZE, SIZE),
        first_steps=3, steps=0, lr=0.01, threshold=0.0, lpips=None, renderer=phase_a._Renderer(target.generator, 5))
    assert steps == [3] + [0] * 11
    assert not torch.allclose(yaw_pitch[0], start)                    # frame 0 moved ...
    assert torch.equal(yaw_pitch, yaw_pitch[:1].expand(12, -1))        # ... and every later frame starts there
    # a loss under the threshold stops a frame before any step
    _, _, steps = phase_a.invert_cameras(
        target.generator, target.prepared, target.w, torch.zeros(1, 16), start, torch.ones(1, 1, SIZE, SIZE),
        first_steps=3, steps=2, lr=0.01, threshold=1e9, lpips=None, renderer=phase_a._Renderer(target.generator, 5))
    assert steps == [0] * 12


# ------------------------------------------------------------------------------------------------------ phase A --

def test_run_phase_a_without_lpips(target):
    generator = tiny_generator(PRIOR_SEED)
    said, reports = [], []
    host = Host(progress=lambda done, total, preview: reports.append((done, total)))
    result = phase_a.run_phase_a(generator, target.prepared, get_preset("tiny"), None, host=host, say=said.append)
    assert result.w_person.shape == (1, 16) and result.w_person.device.type == "cpu"
    assert result.yaw_pitch.shape == (12, 2) and result.yaw_pitch.dtype == torch.float32
    assert len(result.anchors) == 2 and max(result.anchors) < target.prepared.train_frames
    assert set(result.losses) == {"inversion", "tuning", "tuning_steps", "camera_mean", "camera_steps_mean"}
    assert all(np.isfinite(v) for v in result.losses.values())
    assert result.losses["tuning_steps"] == 8                           # no LPIPS → no early stop
    assert sum("LPIPS" in line for line in said) == 1 and result.notes
    assert reports == [(i, 12) for i in range(1, 13)]
    assert not any(p.requires_grad for p in generator.parameters())
    assert phase_a.DEVIATIONS and all(isinstance(line, str) for line in phase_a.DEVIATIONS)


def test_run_phase_a_with_an_lpips_stand_in_stops_tuning_early(target):
    calls = []

    def fake_lpips(x, y):   # [B,3,H,W] in [-1,1] → [B]; zero distance so the tuning's early stop triggers
        calls.append(tuple(x.shape))
        return (x - y).abs().mean(dim=(1, 2, 3)) * 0.0

    generator = tiny_generator(PRIOR_SEED)
    result = phase_a.run_phase_a(generator, target.prepared, get_preset("tiny"), fake_lpips, anchors=[0, 6],
                                 say=lambda line: None)
    assert result.anchors == [0, 6] and result.notes == []
    assert result.losses["tuning_steps"] == 1
    # the 16² raw renders reach LPIPS enlarged to 32² (AlexNet's smallest input)
    assert (2, 3, 32, 32) in calls and (2, 3, SIZE, SIZE) in calls and (1, 3, SIZE, SIZE) in calls


def test_run_phase_a_with_the_alexnet_lpips(target):
    lpips_module = pytest.importorskip("r3dp_core.talk3d.loss_networks.lpips")
    torch.manual_seed(0)
    lpips = lpips_module.LPIPS().requires_grad_(False)
    with torch.no_grad():
        for head in lpips.heads:          # random heads, made non-negative like the trained ones
            head.model[1].weight.abs_()
    result = phase_a.run_phase_a(tiny_generator(PRIOR_SEED), target.prepared,
                                 get_preset("tiny", camera_first_steps=1, camera_steps=1), lpips,
                                 say=lambda line: None)
    assert all(np.isfinite(v) for v in result.losses.values()) and result.notes == []


def test_run_phase_a_is_reproducible_with_a_seed(target):
    preset = get_preset("tiny", camera_first_steps=2, camera_steps=1)
    quiet = {"say": lambda line: None}
    first = phase_a.run_phase_a(tiny_generator(PRIOR_SEED), target.prepared, preset, None, seed=3, **quiet)
    second = phase_a.run_phase_a(tiny_generator(PRIOR_SEED), target.prepared, preset, None, seed=3, **quiet)
    torch.testing.assert_close(first.w_person, second.w_person, rtol=0, atol=0)
    torch.testing.assert_close(first.yaw_pitch, second.yaw_pitch, rtol=0, atol=0)
    other = phase_a.run_phase_a(tiny_generator(PRIOR_SEED), target.prepared, preset, None, seed=4, **quiet)
    assert not torch.equal(first.w_person, other.w_person)


def test_an_interrupt_propagates_and_leaves_the_generator_frozen(target):
    class Stop(Exception):
        pass

    checks = []

    def should_stop():
        checks.append(1)
        if len(checks) == 15:    # during the tuning (12 inversion steps first)
            raise Stop

    generator = tiny_generator(PRIOR_SEED)
    with pytest.raises(Stop):
        phase_a.run_phase_a(generator, target.prepared, get_preset("tiny"), None, host=Host(should_stop=should_stop),
                            say=lambda line: None)
    assert not any(p.requires_grad for p in generator.parameters())


def test_crops_that_do_not_fit_the_generator_are_refused(target):
    small = stand_in_prepared(np.zeros((4, 32, 32, 3), np.uint8), masks=np.zeros((4, 4, 32, 32), np.uint8))
    with pytest.raises(InputError, match="64"):
        phase_a.run_phase_a(tiny_generator(PRIOR_SEED), small, get_preset("tiny"), None, say=lambda line: None)
    with pytest.raises(InputError, match="outside the training frames"):
        phase_a.run_phase_a(tiny_generator(PRIOR_SEED), target.prepared, get_preset("tiny"), None, anchors=[11],
                            say=lambda line: None)
