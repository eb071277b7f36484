"""Motion adapter (SECC maps → tri-plane residual): official keys, parity, batching over frames."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r3dp_core.errors import ModelFileError
from r3dp_core.models.motion_adapter import MotionAdapter, MotionAdapterConfig, fuse_planes
from r3dp_core.parity import run_case

PREFIX = "secc_img2plane_backbone."

SMALL = MotionAdapterConfig(triplane_channels=4, embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                            depths=(1, 1, 1, 1), head_channels=16, plane_cnn_channels=8)


def test_official_keys_load_strictly_with_spec_parameter_counts(synth_state_dict):
    weights = {k[len(PREFIX):]: v for k, v in synth_state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    model = MotionAdapter()
    model.load_state_dict(weights, strict=True)
    assert len(model.state_dict()) == len(weights) == 201
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert counts == {"prenet": 30, "mix_vit": 3_319_392, "fuse_head": 394_752, "to_plane_cnn": 1_991_520}
    assert sum(counts.values()) == 5_705_694


def test_mit_layer_norm_eps_follow_the_official_code():
    # The parity case cannot see a 1e-5/1e-6 slip here (README §8), so pin the values directly.
    mit = MotionAdapter(SMALL).mix_vit
    eps = {name: m.eps for name, m in mit.named_modules() if isinstance(m, nn.LayerNorm)}
    assert eps["norm1"] == eps["block2.0.norm1"] == eps["block4.0.norm2"] == 1e-6
    assert eps["patch_embed1.norm"] == eps["block1.0.attn.norm"] == 1e-5


def test_parity_with_official_motion_adapter(parity_dir):
    report = run_case(parity_dir / "case_motion_adapter.safetensors")
    assert report.passed, report.summary()
    checked = {check.name for check in report.checks}
    assert checked == {"secc_planes", "dbg_prenet", "dbg_fuse_head", "dbg_to_plane_cnn",
                       *(f"dbg_mix_vit_{i}" for i in range(4))}, report.summary()


def test_frames_batch_independently_and_shared_conditions_broadcast():
    torch.manual_seed(0)
    model = MotionAdapter(SMALL).eval()
    cano, src = torch.rand(1, 3, 64, 96) * 2 - 1, torch.rand(1, 3, 64, 96) * 2 - 1
    tgt = torch.rand(3, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        batched = model(cano, src, tgt)
        expanded = model(cano.expand(3, -1, -1, -1), src.expand(3, -1, -1, -1), tgt)
        per_frame = torch.cat([model(cano, src, tgt[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 3, 4, 32, 48)
    torch.testing.assert_close(batched, expanded, rtol=0, atol=0)
    torch.testing.assert_close(batched, per_frame, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)
    cano_planes = torch.randn(1, 3, 4, 32, 48)
    fused = fuse_planes(cano_planes, batched)
    assert fused.shape == batched.shape
    torch.testing.assert_close(fused[2], cano_planes[0] + batched[2], rtol=0, atol=0)


def test_input_and_config_validation():
    model = MotionAdapter(SMALL)
    frame = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"one B; got cond_cano \(2, 3, 64, 64\), cond_src \(3, 3, 64, 64\)"):
        model(frame, torch.zeros(3, 3, 64, 64), frame)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(*(torch.zeros(1, 3, 48, 64),) * 3)
    assert MotionAdapterConfig.from_hparams({"secc_segformer_scale": "b0", "pncc_cond_mode": "cano_src_tgt",
                                             "triplane_hid_dim": 32}) == MotionAdapterConfig()
    with pytest.raises(ModelFileError, match="secc_segformer_scale='b2'"):
        MotionAdapterConfig.from_hparams({"secc_segformer_scale": "b2"})
