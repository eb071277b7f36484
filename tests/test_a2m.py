"""Audio-to-motion VAE: official keys, variant detection, parity with the official model, padding, windows."""

from __future__ import annotations

import csv

import pytest
import torch

from r3dp_core.checkpoint import load_into
from r3dp_core.errors import InputError, ModelFileError
from r3dp_core.models.a2m_vae import A2MConfig, AudioToMotionVAE, f0_to_coarse, iter_windows
from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase


@pytest.fixture(scope="module")
def model(parity_dir) -> AudioToMotionVAE:
    from r3dp_core.parity.case import synth_state_dict

    weights = synth_state_dict(parity_dir, "audio2secc_vae")
    net = AudioToMotionVAE(A2MConfig.from_state_dict(weights))
    load_into(net, weights)
    return net.eval()


@pytest.fixture(scope="module")
def case(parity_dir) -> ParityCase:
    return ParityCase.load(parity_dir / "case_a2m_vae.safetensors")


def test_state_dict_matches_official_keys_and_shapes(shared_dir):
    with open(shared_dir / "spec" / "official_keys_audio2secc_vae.tsv") as fh:
        rows = [r for r in csv.reader((line for line in fh if not line.startswith("#")), delimiter="\t")][1:]
    official = {key: [int(s) for s in shape.strip("[]").split(",") if s.strip()] for key, shape, _ in rows}
    ours = {k: list(v.shape) for k, v in AudioToMotionVAE().state_dict().items()}
    assert len(official) == 231
    assert ours == official
    buffers = {k for k, _ in AudioToMotionVAE().named_buffers()}
    assert buffers == {k for k, _, kind in rows if kind == "buffer"}


def test_config_is_detected_from_keys(synth_state_dict):
    assert A2MConfig.from_state_dict(synth_state_dict("audio2secc_vae")) == A2MConfig()
    plain = AudioToMotionVAE(A2MConfig.plain())
    keys = set(plain.state_dict())
    assert not {"pitch_embed.weight", "cond_proj.weight", "mouth_amp_embed", "blink_embed.weight"} & keys
    assert plain.state_dict()["mel_encoder.0.weight"].shape == (64, 1024, 3)
    assert A2MConfig.from_state_dict(plain.state_dict()) == A2MConfig.plain()
    with pytest.raises(ModelFileError, match="not an audio2secc VAE"):
        A2MConfig.from_state_dict({"decoder.net.0.weight": torch.zeros(1)})


def test_parity_case_passes_through_the_runner(parity_dir):
    report = run_case(parity_dir / "case_a2m_vae.safetensors")
    assert report.passed, report.summary()
    names = {c.name for c in report.checks}
    assert {"pred_t0p2", "pred_t0", "dbg_z_p_t0p2", "dbg_cond_proj", "dbg_g_sqz", "dbg_f0_coarse"} <= names


def test_predict_expression_matches_official_outputs(model, case):
    """The public entry point (padding, noise scaling, windows) gives the official ``pred`` at both temperatures."""
    for temperature, name in ((0.2, "pred_t0p2"), (0.0, "pred_t0")):
        ref = case.stored[name]
        tol = case.tensors_meta[name]["suggested_tolerance"]
        out = model.predict_expression(case.tensor("hubert"), case.tensor("f0"), mouth_amp=case.tensor("mouth_amp"),
                                       temperature=temperature, eps=case.tensor("eps"), chunk_frames=None)
        assert out.shape == ref.shape == (1, 52, 64)
        assert (out - ref).abs().max() <= tol["atol"]
        assert (out - ref).pow(2).mean().sqrt() <= tol["rms_max"]


def test_unpadded_input_is_zero_padded_to_a_multiple_of_8(model, case):
    """100 real frames (the case's content before its padding) give the 104-frame official result."""
    hubert, f0 = case.tensor("hubert"), case.tensor("f0")
    assert hubert[:, 100:].abs().max() == 0
    out = model.predict_expression(hubert[:, :100], f0[:, :100], mouth_amp=0.45, temperature=0.2,
                                   eps=case.tensor("eps"), chunk_frames=None)
    assert out.shape == (1, 52, 64)
    assert (out - case.stored["pred_t0p2"]).abs().max() <= 3e-5
    with pytest.raises(InputError, match=r"\[1, 16, 13\]"):
        model.predict_expression(hubert[:, :100], f0[:, :100], eps=torch.zeros(1, 16, 12))


def test_latent_noise_is_the_official_cpu_draw(model):
    torch.manual_seed(1234)
    official = torch.distributions.Normal(0.0, 1.0).sample([1, 16, 13])
    assert torch.equal(model.latent_noise(1, 100, seed=1234), official)
    h, f0 = torch.randn(1, 100, 1024) * 0.5, torch.full((1, 100), 150.0)
    a = model.predict_expression(h, f0, seed=7)
    assert torch.equal(a, model.predict_expression(h, f0, seed=7))
    assert not torch.allclose(a, model.predict_expression(h, f0, seed=8))
    # temperature 0 ignores the noise entirely
    assert torch.equal(model.predict_expression(h, f0, temperature=0.0, seed=1),
                       model.predict_expression(h, f0, temperature=0.0, seed=2))


def test_conditioning_inputs_change_the_output(model):
    h, f0 = torch.randn(1, 64, 1024) * 0.5, torch.full((1, 64), 150.0)
    base = model.predict_expression(h, f0, mouth_amp=0.45, temperature=0.0)
    assert (model.predict_expression(h, f0, mouth_amp=0.8, temperature=0.0) - base).abs().max() > 1e-3
    assert (model.predict_expression(h, f0 * 2, mouth_amp=0.45, temperature=0.0) - base).abs().max() > 1e-3
    blink = torch.ones(1, 64, dtype=torch.long)
    assert (model.predict_expression(h, f0, blink=blink, temperature=0.0) - base).abs().max() > 1e-3
    default_amp = model.predict_expression(h, f0, mouth_amp=None, temperature=0.0)
    assert torch.equal(default_amp, model.predict_expression(h, f0, mouth_amp=0.4, temperature=0.0))


def test_windows_reproduce_the_whole_sequence(model):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(1, 1000, 1024, generator=gen) * 0.5
    f0 = torch.rand(1, 1000, generator=gen) * 300
    whole = model.predict_expression(h, f0, seed=3, chunk_frames=None)
    windowed = model.predict_expression(h, f0, seed=3, chunk_frames=128)
    assert windowed.shape == whole.shape == (1, 500, 64)
    assert (windowed - whole).abs().max() < 2e-5


def test_receptive_field_bounds_the_influence_of_one_frame(model):
    """A change at one input frame only moves outputs within ``receptive_field`` motion frames, so windows
    with that much context are exact."""
    rf = model.config.receptive_field
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(1, 800, 1024, generator=gen) * 0.5
    f0 = torch.rand(1, 800, generator=gen) * 300
    base = model.predict_expression(h, f0, seed=0, chunk_frames=None)[0]
    h2 = h.clone()
    h2[:, 400] += 1.0          # motion frame 200
    moved = (model.predict_expression(h2, f0, seed=0, chunk_frames=None)[0] - base).abs().amax(1) > 0
    frames = moved.nonzero().squeeze(1)
    assert frames.numel() > 0
    assert frames.min() >= 200 - rf and frames.max() <= 200 + rf
    assert frames.max() - frames.min() > rf   # the bound is not loose by more than a factor ~2


def test_iter_windows_tiles_the_sequence():
    windows = list(iter_windows(500, 128, 90))
    assert [(w.start, w.end) for w in windows] == [(0, 128), (128, 256), (256, 384), (384, 500)]
    assert all(w.lo % 4 == 0 and w.hi % 4 == 0 or w.hi == 500 for w in windows)
    assert windows[1].lo == 128 - 92 and windows[1].hi == 256 + 92 and windows[-1].hi == 500


def test_f0_to_coarse_bins():
    f0 = torch.tensor([0.0, 30.0, 50.0, 100.0, 440.0, 1100.0, 5000.0])
    coarse = f0_to_coarse(f0)
    assert coarse.dtype == torch.int64
    assert coarse.tolist()[:3] == [1, 1, 1] and coarse[-2:].tolist() == [255, 255]
    assert 1 < coarse[3] < coarse[4] < 255
    sweep = f0_to_coarse(torch.linspace(50, 1100, 5000))
    assert (sweep.diff() >= 0).all() and set(sweep.unique().tolist()) == set(range(1, 256))


def test_input_validation_messages(model):
    with pytest.raises(InputError, match=r"\[B,T,1024\]"):
        model.predict_expression(torch.zeros(1, 10, 768), torch.zeros(1, 10))
    with pytest.raises(InputError, match="needs f0"):
        model.predict_expression(torch.zeros(1, 10, 1024))
    with pytest.raises(InputError, match="empty"):
        model.predict_expression(torch.zeros(1, 0, 1024), torch.zeros(1, 0))


def test_plain_variant_runs_with_pair_mean_downsampling():
    torch.manual_seed(0)
    plain = AudioToMotionVAE(A2MConfig.plain()).eval()
    h = torch.randn(1, 40, 1024)
    out = plain.predict_expression(h, temperature=0.0)
    assert out.shape == (1, 20, 64)
    # swapping the two frames of every pair leaves the pair means, hence the output, unchanged
    swapped = h.view(1, 20, 2, 1024).flip(2).reshape(1, 40, 1024)
    assert torch.allclose(plain.predict_expression(swapped, temperature=0.0), out, atol=1e-6)
