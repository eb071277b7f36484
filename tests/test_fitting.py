"""Landmark 3DMM fits: official parity (image and video), recovery where well-posed, loss structure."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from r3dp_core.geometry.bfm import MP468_UNMATCHED, FaceModel3DMM, fit_space_to_pixels
from r3dp_core.geometry.fitting import (
    EYE_IDS,
    IMAGE_FIT,
    INNER_LIP_IDS,
    OUTER_LIP_IDS,
    UPPER_EYELID_IDS,
    VIDEO_FIT,
    fit_image,
    fit_video,
    landmark_weights,
    temporal_laplacian_loss,
)
from r3dp_core.parity import run_case
from r3dp_core.parity.synth_bfm import synth_face_model

EULER = torch.tensor([[0.1, -0.2, 0.05]])
TRANS = torch.tensor([[0.02, -0.03, -1.0]])
POSE_ONLY = dataclasses.replace(IMAGE_FIT, joint_steps=0)


@pytest.fixture(scope="module")
def model(parity_dir, parity_cache) -> FaceModel3DMM:
    return synth_face_model(parity_dir)


def landmarks_px(model, id_coeff, exp, euler, trans, size=512):
    """MediaPipe-like 468 landmarks (pixels, y down) rendered from known coefficients."""
    return fit_space_to_pixels(model.lm468(id_coeff, exp, euler, trans), size)


@pytest.mark.parametrize("case", ["fit_image", "fit_video"])
def test_parity_fits(parity_dir, parity_cache, case):
    report = run_case(parity_dir / f"case_geom_{case}.safetensors")
    assert report.passed, report.summary()


def test_pose_is_recovered_when_the_shape_is_known(model):
    lms = landmarks_px(model, torch.zeros(1, 80), torch.zeros(1, 64), EULER, TRANS)
    fitted = fit_image(model, lms, 512, POSE_ONLY)
    torch.testing.assert_close(fitted.euler, EULER, atol=1e-4, rtol=0)
    torch.testing.assert_close(fitted.trans, TRANS, atol=2e-4, rtol=0)
    assert not fitted.id.any() and not fitted.exp.any()


def test_full_fit_explains_the_landmarks(model):
    g = torch.Generator().manual_seed(0)
    id_true, exp_true = 0.5 * torch.randn(1, 80, generator=g), 0.5 * torch.randn(1, 64, generator=g)
    lms = landmarks_px(model, id_true, exp_true, EULER, TRANS)
    fitted = fit_image(model, lms, 512)
    # landmark-only fitting is ill-posed (identity scale trades with depth), so the coefficients are not
    # the generating ones, but the fitted face reproduces the used landmarks to about a pixel at 512 px
    reproj = landmarks_px(model, fitted.id, fitted.exp, fitted.euler, fitted.trans)
    used = landmark_weights(IMAGE_FIT) > 0
    err = (reproj - lms)[:, used].norm(dim=-1)
    assert err.max() < 3.0 and err.mean() < 0.6
    assert (fitted.euler - EULER).abs().max() < 0.1


def test_unweighted_landmarks_do_not_matter_and_fits_are_deterministic(model):
    lms = landmarks_px(model, torch.zeros(1, 80), torch.zeros(1, 64), EULER, TRANS)[0]
    noisy = torch.cat([lms, torch.full((10, 2), 256.0)])  # + 10 iris points, ignored
    noisy[list(MP468_UNMATCHED)] += 40.0
    short = dataclasses.replace(IMAGE_FIT, pose_steps=30, joint_steps=30)
    a, b = fit_image(model, lms, 512, short), fit_image(model, noisy, 512, short)
    for name in ("id", "exp", "euler", "trans"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_batched_images_are_independent_fits(model):
    euler2 = torch.tensor([[-0.05, 0.25, 0.0]])
    lms = torch.cat([landmarks_px(model, torch.zeros(1, 80), torch.zeros(1, 64), e, TRANS) for e in (EULER, euler2)])
    short = dataclasses.replace(IMAGE_FIT, pose_steps=40, joint_steps=40)
    both = fit_image(model, lms, 512, short)
    assert both.id.shape == (2, 80) and both.euler.shape == (2, 3)
    for i in range(2):
        single = fit_image(model, lms[i], 512, short)
        for name in ("id", "exp", "euler", "trans"):
            torch.testing.assert_close(getattr(both, name)[i:i + 1], getattr(single, name), atol=1e-5, rtol=1e-5)


def test_video_fit_shares_identity_and_recovers_pose(model):
    t = torch.arange(8, dtype=torch.float32)[:, None]
    euler = EULER + torch.sin(t / 3) * torch.tensor([[0.04, 0.15, 0.03]])
    trans = TRANS + torch.sin(t / 4) * torch.tensor([[0.03, 0.02, 0.1]])
    lms = landmarks_px(model, torch.zeros(8, 80), torch.zeros(8, 64), euler, trans)
    pose_only = fit_video(model, lms, 512, dataclasses.replace(VIDEO_FIT, joint_steps=0))
    torch.testing.assert_close(pose_only.euler, euler, atol=1e-4, rtol=0)
    torch.testing.assert_close(pose_only.trans, trans, atol=3e-4, rtol=0)
    fitted = fit_video(model, lms, 512, dataclasses.replace(VIDEO_FIT, pose_steps=50, joint_steps=50))
    assert fitted.id.shape == (1, 80) and fitted.exp.shape == (8, 64) and fitted.trans.shape == (8, 3)


def test_landmark_weights_follow_the_official_groups():
    image, video = landmark_weights(IMAGE_FIT), landmark_weights(VIDEO_FIT)
    assert image[list(EYE_IDS)].eq(5).all() and image[list(INNER_LIP_IDS + OUTER_LIP_IDS)].eq(2).all()
    assert video[list(UPPER_EYELID_IDS)].eq(20).all() and video[list(INNER_LIP_IDS)].eq(5).all()
    assert video[[i for i in EYE_IDS if i not in UPPER_EYELID_IDS]].eq(3).all()
    assert image[list(MP468_UNMATCHED)].eq(0).all() and int((image == 1).sum()) == 468 - 32 - 40 - 8


def test_temporal_laplacian_replicates_the_edges():
    ramp = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2)
    # interior second differences of a ramp vanish; each replicated edge leaves a half step
    assert temporal_laplacian_loss(ramp).item() == pytest.approx(2 * 2 * 0.25 / 10)
    assert temporal_laplacian_loss(torch.ones(1, 80)).item() == 0.0


def test_landmark_shape_is_checked(model):
    with pytest.raises(ValueError, match=r"\[T, 468 or 478, 2\]"):
        fit_video(model, torch.zeros(4, 400, 2), 512)


def test_fits_run_under_inference_mode(model):
    # ComfyUI executes nodes under torch.inference_mode(); the fit needs autograd internally
    short = dataclasses.replace(IMAGE_FIT, pose_steps=5, joint_steps=5)
    lms = landmarks_px(model, torch.zeros(1, 80), torch.zeros(1, 64), EULER, TRANS)
    expected = fit_image(model, lms, 512, short)
    with torch.inference_mode():
        got = fit_image(model, lms.clone(), 512, short)
    assert torch.equal(got.euler, expected.euler) and torch.equal(got.id, expected.id)
