"""I2P (image → canonical tri-plane): official keys, parity with the official model, building blocks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from r3dp_core.errors import ModelFileError
from r3dp_core.models.i2p import I2PConfig, Img2PlaneModel, append_coordinate_channels
from r3dp_core.models.layers.triplane_layout import channels_to_triplanes
from r3dp_core.models.layers.vit import SpatialReductionAttention
from r3dp_core.parity import run_case

PREFIX = "cano_img2plane_backbone."

SMALL = I2PConfig(triplane_channels=4, encoder_blocks=(1, 1, 2, 1), encoder_widths=(8, 8, 16, 16), aspp_channels=16,
                  aspp_rates=(2, 3, 4), vit_dim=32, vit_heads=2, low_reso_vit_depth=2, low_reso_vit_conv_channels=8,
                  branch_channels=6, high_reso_channels=(8, 6), high_reso_num_convs=2,
                  predictor_conv_channels=(8, 8), predictor_after_cat_channels=(8, 8, 8))


def test_official_keys_load_strictly_with_spec_parameter_counts(synth_state_dict):
    weights = {k[len(PREFIX):]: v for k, v in synth_state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    model = Img2PlaneModel()
    model.load_state_dict(weights, strict=True)
    assert len(model.state_dict()) == len(weights) == 361
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert counts == {"low_reso_encoder": 26_009_536, "low_reso_vit": 45_017_440,
                      "high_reso_encoder": 403_296, "triplane_predictor_vit": 15_902_688}
    assert sum(counts.values()) == 87_332_960
    assert torch.equal(model.low_reso_vit.block5.attn.kv.weight, weights["low_reso_vit.block5.attn.kv.weight"])


def test_parity_with_official_i2p(parity_dir):
    report = run_case(parity_dir / "case_i2p.safetensors")
    assert report.passed, report.summary()
    checked = {check.name for check in report.checks}
    assert checked == {"cano_planes", "dbg_low_reso_encoder", "dbg_low_reso_vit", "dbg_high_reso_encoder",
                       "dbg_triplane_predictor_vit"}, report.summary()
    assert not report.unchecked


def test_coordinate_channels_are_row_and_column_over_height():
    img = torch.rand(2, 3, 4, 6, dtype=torch.float64)
    x = append_coordinate_channels(img)
    assert x.shape == (2, 5, 4, 6) and x.dtype == torch.float64
    assert torch.equal(x[:, :3], img)
    assert x[1, 3, 2, 5] == 2 / 4  # channel 3: row index / H
    assert x[1, 4, 2, 5] == 5 / 4  # channel 4: column index / H (not / W)
    assert torch.equal(x[0, 3, :, 0], torch.arange(4, dtype=torch.float64) / 4)


def test_triplane_layout_splits_channels_and_flips_each_plane():
    x = torch.randn(2, 3 * 5, 7, 9)
    planes = channels_to_triplanes(x)
    assert planes.shape == (2, 3, 5, 7, 9)
    row, col = 1, 2
    for c in range(5):
        assert planes[1, 0, c, row, col] == x[1, c, 7 - 1 - row, col]  # xy: flipped along H
        assert planes[1, 1, c, row, col] == x[1, 5 + c, 7 - 1 - row, col]  # xz: flipped along H
        assert planes[1, 2, c, row, col] == x[1, 10 + c, 7 - 1 - row, 9 - 1 - col]  # zy: flipped along H and W
    with pytest.raises(ValueError, match="multiple of 3"):
        channels_to_triplanes(torch.zeros(1, 8, 4, 4))


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_attention_is_softmax_attention_with_k_before_v_in_kv(sr_ratio):
    torch.manual_seed(0)
    dim, heads, height, width = 8, 2, 4, 6
    attn = SpatialReductionAttention(dim, heads, sr_ratio=sr_ratio).eval()
    x = torch.randn(3, height * width, dim)
    with torch.no_grad():
        got = attn(x, height, width)
        source = x
        if sr_ratio > 1:
            reduced = attn.sr(x.transpose(1, 2).reshape(3, dim, height, width))
            source = attn.norm(reduced.flatten(2).transpose(1, 2))
        k, v = attn.kv(source).split(dim, dim=-1)
        split = lambda t: t.reshape(3, -1, heads, dim // heads).transpose(1, 2)  # noqa: E731
        weights = (split(attn.q(x)) @ split(k).transpose(-1, -2) / math.sqrt(dim // heads)).softmax(-1)
        expected = attn.proj((weights @ split(v)).transpose(1, 2).reshape(3, -1, dim))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_small_model_batches_images_independently():
    torch.manual_seed(0)
    model = Img2PlaneModel(SMALL).eval()
    img = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        batched = model(img)
        single = torch.cat([model(img[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 3, 4, 32, 24)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    with torch.no_grad():
        out64 = model.double()(img.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), batched, rtol=1e-4, atol=1e-4)


def test_input_and_config_validation():
    model = Img2PlaneModel(SMALL)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model(torch.zeros(1, 4, 64, 64))
    assert I2PConfig.from_hparams({"triplane_hid_dim": 32, "triplane_feature_type": "triplane",
                                   "img2plane_backbone_scale": "standard"}) == I2PConfig()
    assert dataclasses.replace(I2PConfig(), triplane_channels=16) == I2PConfig.from_hparams({"triplane_hid_dim": 16})
    with pytest.raises(ModelFileError, match="triplane_feature_type='trigrid_v2'"):
        I2PConfig.from_hparams({"triplane_feature_type": "trigrid_v2", "triplane_depth": 3})
