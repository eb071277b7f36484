"""Talk3D conditioning tokens: audio windows, batched AudioNet/AudioAttNet, positional encoding, token order, parity."""

from __future__ import annotations

import math

import pytest
import torch

from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.stage_t3d_tokens import run as run_tokens
from r3dp_core.talk3d import Talk3DConfig, Talk3DNetworks
from r3dp_core.talk3d.audio_features import frame_windows, unfold_windows
from r3dp_core.talk3d.tokens import (
    AudioAttNet,
    AudioNet,
    Embedder,
    aud_eo_to_features,
    audio_windows,
    positional_encoding,
)


def official_get_audio_features(features: torch.Tensor, index: int) -> torch.Tensor:
    """RAD-NeRF ``get_audio_features(features, att_mode=2, index)`` written out: rows [i-4, i+4), zero padded."""
    left, right = index - 4, index + 4
    pad_left = pad_right = 0
    if left < 0:
        pad_left, left = -left, 0
    if right > features.shape[0]:
        pad_right, right = right - features.shape[0], features.shape[0]
    auds = features[left:right]
    if pad_left:
        auds = torch.cat([torch.zeros(pad_left, *features.shape[1:]), auds])
    if pad_right:
        auds = torch.cat([auds, torch.zeros(pad_right, *features.shape[1:])])
    return auds


def test_audio_windows_match_the_official_per_frame_selection_with_zero_padding():
    aud_eo = torch.randn(12, 16, 44)
    features = aud_eo_to_features(aud_eo)
    assert features.shape == (12, 44, 16)
    frames = torch.tensor([0, 1, 3, 4, 5, 8, 9, 11])
    got = audio_windows(features, frames)
    assert got.shape == (8, 8, 44, 16)
    for row, index in enumerate(frames.tolist()):
        assert torch.equal(got[row], official_get_audio_features(features, index))
    assert torch.equal(got[0, :4], torch.zeros(4, 44, 16)) and torch.equal(got[-1, 5:], torch.zeros(3, 44, 16))


def test_aud_eo_windows_agree_with_windows_cut_from_the_logits():
    logits = torch.randn(57, 44)
    aud_eo = unfold_windows(logits)
    frames = torch.arange(aud_eo.shape[0])
    torch.testing.assert_close(audio_windows(aud_eo_to_features(aud_eo), frames), frame_windows(logits, frames),
                               rtol=0, atol=0)


def test_positional_encoding_order_is_frequency_then_sin_cos_then_dimension():
    x = torch.tensor([[0.3, -1.2]])
    got = positional_encoding(x, 3)
    expected = [0.3, -1.2]
    for k in range(3):
        expected += [math.sin(0.3 * 2 ** k), math.sin(-1.2 * 2 ** k), math.cos(0.3 * 2 ** k), math.cos(-1.2 * 2 ** k)]
    torch.testing.assert_close(got, torch.tensor([expected]))
    assert Embedder(1, 16).out_dim == 33 and Embedder(3, 10).out_dim == 63 and Embedder(6, 6).out_dim == 78


def _submodule_weights(weights: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}


def test_batched_audio_att_net_equals_the_official_per_item_loop(synth_state_dict):
    # the synthetic weights give a peaked softmax, as trained weights do (default init is nearly flat)
    weights = synth_state_dict("talk3d")
    audio_net, att_net = AudioNet().eval(), AudioAttNet().eval()
    audio_net.load_state_dict(_submodule_weights(weights, "audio_net"))
    att_net.load_state_dict(_submodule_weights(weights, "audio_att_net"))
    torch.manual_seed(0)
    windows = torch.rand(5, 8, 44, 16) * 4 - 2
    with torch.no_grad():
        batched_features = audio_net(windows)
        batched, weights = att_net.forward_with_weights(batched_features)
        # the trainer: for each item, audio_att_net(audio_net(windows[i]).unsqueeze(0)) -> [1,64]; stack -> [B,1,64]
        loop_features = torch.stack([audio_net(w) for w in windows])
        loop = torch.stack([att_net(audio_net(w).unsqueeze(0)) for w in windows], dim=0)
    assert loop.shape == (5, 1, 64) and batched.shape == (5, 64) and weights.shape == (5, 8)
    torch.testing.assert_close(batched_features, loop_features, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(batched.unsqueeze(1), loop, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    # not a flat 1/8 and not the same for every item: the loop comparison sees each item's own weighting
    assert weights.max() > 0.3 and (weights[0] - weights[1]).abs().max() > 0.01
    with pytest.raises(ValueError, match="AudioAttNet expects"):
        att_net(torch.randn(2, 7, 64))
    with pytest.raises(ValueError, match="AudioNet expects"):
        audio_net(torch.randn(2, 44, 8))


def test_tokens_are_in_the_official_order():
    torch.manual_seed(0)
    model = Talk3DNetworks(Talk3DConfig(triplane_channels=4, plane_resolution=32, down_channels=(8, 16, 32),
                                        up_channels=(16, 8, 4), attention_heads=2, attention_head_dim=16,
                                        norm_groups=4)).eval()
    windows, eye = torch.randn(2, 8, 44, 16), torch.rand(2, 1) * 2
    angle, landmark = torch.randn(2, 3) * 5, torch.rand(2, 3, 2) * 2 - 1
    with torch.no_grad():
        out = model.tokens_with_intermediates(windows, eye, angle, landmark)
        rotation, landmarks = model.camera_encoder(angle, landmark.flatten(1))
        parts = [model.audio_att_net(model.audio_net(windows)).unsqueeze(1), model.blink_encoder(eye),
                 model.null_vector.repeat(2, 1, 1), rotation, landmarks]
    assert out["tokens"].shape == (2, 5, 64)
    torch.testing.assert_close(out["tokens"], torch.cat(parts, dim=1), rtol=0, atol=0)


def test_parity_with_official_tokens(parity_dir):
    report = run_case(parity_dir / "case_t3d_tokens.safetensors")
    assert report.passed, report.summary()
    assert {c.name for c in report.checks} == {"aud_windows", "audio_net_out", "audio_att_weights", "tok_audio",
                                               "tok_eye", "tok_rot", "tok_ldm", "tokens"}, report.summary()


def test_tokens_stage_takes_any_batch(parity_dir):
    """A case with other frames (in another order, batch 2) gives the same rows: nothing assumes B = 3."""
    case = ParityCase.load(parity_dir / "case_t3d_tokens.safetensors")
    with torch.no_grad():
        full = run_tokens(case)
        pick = torch.tensor([2, 0])
        sub = ParityCase(path=case.path, meta=case.meta, stored=dict(case.stored))
        for name in ("frame_idx", "eye", "angle", "landmark"):
            sub.stored[name] = case.stored[name][pick]
        part = run_tokens(sub)
    assert part["tokens"].shape == (2, 5, 64)
    for name in ("aud_windows", "tokens", "audio_att_weights"):
        torch.testing.assert_close(part[name], full[name][pick], rtol=1e-6, atol=1e-6)
