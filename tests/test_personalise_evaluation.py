"""Held-out evaluation (``r3dp_core.talk3d.personalise.evaluation``) on the tiny generator and tiny networks, with a
stand-in prepared video (the attributes of ``PreparedVideo``) and stand-in loss networks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError
from r3dp_core.standins import standin_face_layout, standin_prepared, tiny_eg3d_generator
from r3dp_core.talk3d.model import Talk3DNetworks
from r3dp_core.talk3d.personalise import evaluation
from r3dp_core.talk3d.personalise.evaluation import (
    evaluate_heldout,
    heldout_frames,
    mouth_distance,
    psnr_per_frame,
)
from r3dp_core.talk3d.personalise.presets import get_preset
from r3dp_core.talk3d.personalise.training import frame_tokens, render_noise

N_FRAMES = 44          # 40 training frames, 4 held out
SIZE = 64


def make_prepared(crops: np.ndarray, seed: int = 0):
    return standin_prepared(crops, seed=seed)


@pytest.fixture(scope="module")
def models():
    generator = tiny_eg3d_generator(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        networks = Talk3DNetworks(get_preset("tiny").networks).eval()
        with torch.no_grad():       # a trained U-Net's ΔP is far from the untrained one's near-zero output
            for name, param in networks.deltaplane_predictor.named_parameters():
                if name.startswith("Upnet.Upnet3_") and ".bn1." in name:
                    param.mul_(30)
        w_person = generator.mapping(torch.randn(1, generator.config.z_dim))[:, 0].detach()
    yaw_pitch = torch.linspace(-0.1, 0.1, N_FRAMES)[:, None].repeat(1, 2) * torch.tensor([1.0, -0.5])
    return generator, networks, w_person, yaw_pitch


def reference_render(models, prepared, frames, use_delta=True, seed=0) -> torch.Tensor:
    """The frames rendered one by one here ([F,3,S,S] in [-1,1], clamped) with the evaluation's conditioning."""
    generator, networks, w_person, yaw_pitch = models
    with torch.no_grad():
        ws = w_person.reshape(1, 1, -1).expand(1, generator.num_ws, -1)
        planes = generator.synthesize_planes(ws)
        images = []
        for f in frames:
            delta = networks(planes, frame_tokens(networks, prepared, [f])) if use_delta else None
            out = generator.render(planes, ws, generator.cameras(yaw_pitch[f, 0], yaw_pitch[f, 1]), delta_planes=delta,
                                   noise=render_noise(generator, [f], seed))
            images.append(out.image.clamp(-1, 1))
    return torch.cat(images)


@pytest.fixture(scope="module")
def self_prepared(models):
    """A prepared video whose held-out crops are the model's own renders (uint8)."""
    prepared = make_prepared(np.zeros((N_FRAMES, SIZE, SIZE, 3), np.uint8))
    frames = list(range(prepared.train_frames, N_FRAMES))
    rendered = reference_render(models, prepared, frames)
    prepared.crops[frames] = evaluation.as_uint8(rendered)
    return prepared


def test_heldout_frames_spread_over_the_held_out_part():
    prepared = make_prepared(np.zeros((N_FRAMES, 4, 4, 3), np.uint8))
    assert heldout_frames(prepared, 10) == [40, 41, 42, 43]
    assert heldout_frames(prepared, 2) == [40, 43]
    longer = make_prepared(np.zeros((220, 4, 4, 3), np.uint8))
    picked = heldout_frames(longer, 8)
    assert len(picked) == 8 and picked[0] == 200 and picked[-1] == 219 and picked == sorted(set(picked))
    with pytest.raises(InputError):
        heldout_frames(make_prepared(np.zeros((0, 4, 4, 3), np.uint8)), 4)
    assert heldout_frames(make_prepared(np.zeros((1, 4, 4, 3), np.uint8)), 4) == [0]


def test_self_render_scores_high_and_delta_matters(models, self_prepared):
    generator, networks, w_person, yaw_pitch = models
    frames = heldout_frames(self_prepared, 8)
    first = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames, batch=3)
    assert evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames,
                            batch=3) == first                      # deterministic
    other_batch = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames, batch=4)
    assert other_batch["psnr"] == pytest.approx(first["psnr"], rel=1e-6)      # per-frame noise: batch-independent
    assert other_batch["ssim"] == pytest.approx(first["ssim"], rel=1e-6)
    assert first["psnr"] > 45 and first["ssim"] > 0.99            # only uint8 rounding separates them
    assert set(first) == {"psnr", "ssim", "mouth_landmark_distance", "frames", "mouth_landmark_frames", "notes"}
    assert first["mouth_landmark_distance"] is None and first["mouth_landmark_frames"] == 0
    assert any("no face landmarker" in note for note in first["notes"])
    assert first["frames"] == frames
    # ΔP of the untrained tiny U-Net is not zero, so rendering without it scores differently (and worse)
    planes = generator.synthesize_planes(w_person.reshape(1, 1, -1).expand(1, generator.num_ws, -1))
    with torch.no_grad():
        assert networks(planes, frame_tokens(networks, self_prepared, frames[:1])).abs().max() > 0
    without = evaluate_heldout(generator, None, w_person, self_prepared, yaw_pitch, frames=frames, use_delta=False)
    assert without["psnr"] < first["psnr"] - 1 and without["ssim"] < first["ssim"]


def test_psnr_agrees_with_an_independent_formula(models, self_prepared):
    generator, networks, w_person, yaw_pitch = models
    frames = heldout_frames(self_prepared, 8)
    prepared = make_prepared(self_prepared.crops.copy())
    rng = np.random.default_rng(3)
    noisy = prepared.crops[frames].astype(np.int16) + rng.integers(-20, 21, prepared.crops[frames].shape)
    prepared.crops[frames] = np.clip(noisy, 0, 255).astype(np.uint8)
    result = evaluate_heldout(generator, networks, w_person, prepared, yaw_pitch, frames=frames, seed=0)
    reference = ((reference_render(models, prepared, frames).double() + 1) / 2).permute(0, 2, 3, 1).numpy()
    target = prepared.crops[frames].astype(np.float64) / 255
    expected = np.mean([10 * math.log10(1 / np.mean((r - t) ** 2)) for r, t in zip(reference, target)])
    assert result["psnr"] == pytest.approx(expected, abs=1e-3)
    assert 10 < result["psnr"] < 40 and 0 < result["ssim"] < 0.99
    # another renderer-noise seed changes the renders, the same seed does not
    other = evaluate_heldout(generator, networks, w_person, prepared, yaw_pitch, frames=frames, seed=5)
    assert other["psnr"] != result["psnr"]


def test_psnr_per_frame_and_mouth_distance_formulas():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    assert psnr_per_frame(a, b).tolist() == pytest.approx([20.0, 20.0])
    assert psnr_per_frame(a, a).tolist() == [100.0, 100.0]             # floored: JSON-safe
    lips = np.random.default_rng(0).normal(size=(3, 40, 2))
    assert mouth_distance(lips, lips + [5.0, -2.0]) == pytest.approx(np.zeros(3))   # mean-centred
    wider = lips.copy()
    wider[:, :, 0] *= 2
    centred = lips - lips.mean(1, keepdims=True)
    assert mouth_distance(wider, lips) == pytest.approx(np.abs(centred[:, :, 0]).mean(1))


def test_mouth_landmarks_with_a_standin_landmarker(models, self_prepared, tmp_path):
    from r3dp_core.geometry.landmarks import write_standin_landmarker

    generator, networks, w_person, yaw_pitch = models
    landmarker = write_standin_landmarker(tmp_path / "standin.task", standin_face_layout())
    frames = heldout_frames(self_prepared, 2)
    result = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames,
                              landmarker_path=landmarker)
    # the stand-in reports the same face everywhere: every frame scored, distance 0
    assert result["mouth_landmark_distance"] == 0.0 and result["mouth_landmark_frames"] == len(frames)
    assert result["notes"] == []


def test_mouth_landmarks_none_when_mediapipe_finds_no_face(models, self_prepared, landmarker_model):
    if not landmarker_model.is_file():
        pytest.skip("MediaPipe's face_landmarker.task is not in the shared folder")
    generator, networks, w_person, yaw_pitch = models
    frames = heldout_frames(self_prepared, 2)
    result = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames,
                              landmarker_path=landmarker_model)
    assert result["mouth_landmark_distance"] is None and result["mouth_landmark_frames"] == 0
    assert any("MediaPipe found no face" in note for note in result["notes"])


class StandinIdentity(torch.nn.Module):
    """[B,3,H,W] → [B,16] L2-normalised (pooled colours): ArcFace's stand-in."""

    def forward(self, x):
        return torch.nn.functional.normalize(torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)[:, :16] + 0.5,
                                             dim=-1)


class StandinSync(torch.nn.Module):
    """(mel [B,1,80,16], faces [B,15,48,96]) → (a, v) [B,8] normalised: SyncNet's stand-in."""

    def forward(self, mel, faces):
        assert mel.shape[1:] == (1, 80, 16) and faces.shape[1:] == (15, 48, 96)
        assert faces.min() >= 0 and faces.max() <= 1
        a = torch.nn.functional.normalize(mel.flatten(1)[:, :8] + 1.0, dim=-1)
        v = torch.nn.functional.normalize(faces.flatten(1)[:, ::faces[0].numel() // 8][:, :8] + 0.1, dim=-1)
        return a, v


def test_optional_terms_with_standin_loss_networks(models, self_prepared, monkeypatch):
    generator, networks, w_person, yaw_pitch = models
    mels = []

    def fake_mel(wav):
        mels.append(wav.shape)
        return np.ones((80, int(len(wav) / 200) + 1), np.float32)

    def probability(a, v):
        return torch.nn.functional.cosine_similarity(a, v).clamp(1e-7, 1 - 1e-7)

    monkeypatch.setattr(evaluation, "_sync_functions", lambda: (fake_mel, probability))
    lpips_calls = []

    def lpips(x, y):
        lpips_calls.append(x.shape)
        return (x - y).abs().mean((1, 2, 3))

    losses = SimpleNamespace(lpips=lpips, identity=StandinIdentity(), sync=StandinSync())
    frames = heldout_frames(self_prepared, 8)
    result = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames,
                              loss_networks=losses)
    assert {"lpips", "sync", "identity"} <= set(result)
    assert 0 <= result["lpips"] < 0.01                                   # uint8 rounding only
    assert result["identity"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < result["sync"] < 1 and mels == [self_prepared.audio.shape]
    assert all(shape[1:] == (3, SIZE, SIZE) for shape in lpips_calls)
    # every value is a plain float / int / str / None / list (JSON-ready)
    import json
    json.dumps(result, allow_nan=False)
    # a missing network leaves its key out
    partial = evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=frames,
                               loss_networks=SimpleNamespace(lpips=None, identity=StandinIdentity(), sync=None))
    assert "identity" in partial and "lpips" not in partial and "sync" not in partial
    assert partial["psnr"] == result["psnr"]


def test_bad_frames_and_sizes_are_refused(models, self_prepared):
    generator, networks, w_person, yaw_pitch = models
    with pytest.raises(InputError):
        evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=[])
    with pytest.raises(InputError):
        evaluate_heldout(generator, networks, w_person, self_prepared, yaw_pitch, frames=[N_FRAMES])
    small = make_prepared(np.zeros((N_FRAMES, 32, 32, 3), np.uint8))
    with pytest.raises(InputError, match="32"):
        evaluate_heldout(generator, networks, w_person, small, yaw_pitch, frames=[41])
