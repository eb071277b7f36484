"""Talk3D Deltaplane U-Net: plane exchange, FIR resampling, position embedding, BN modes, batching, parity."""

from __future__ import annotations

import pytest
import torch

from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.stage_t3d_deltaplane import call_planes
from r3dp_core.talk3d import DeltaplanePredictor, Talk3DConfig, aware3d, triplane_position_embedding
from r3dp_core.talk3d.deltaplane import downsample2d, merge_planes, split_planes
from r3dp_core.talk3d.model import Talk3DNetworks

SMALL = Talk3DConfig(triplane_channels=4, plane_resolution=32, down_channels=(8, 16, 32), up_channels=(16, 8, 4),
                     attention_heads=2, attention_head_dim=16, norm_groups=4)


def test_aware3d_follows_the_spec_table():
    torch.manual_seed(0)
    b, c, n = 2, 3, 5
    x = torch.randn(b, 3 * c, n, n)
    p = x.reshape(b, 3, c, n, n)
    outputs = aware3d(x)

    def col_mean_at(plane, h, w):      # mean_{h'} P[h', h]
        return p[:, plane, :, :, h].mean(-1)

    def row_mean_at(plane, h, w):      # mean_{w'} P[w, w']
        return p[:, plane, :, w, :].mean(-1)

    table = {0: (None, col_mean_at, row_mean_at), 1: (row_mean_at, None, col_mean_at),
             2: (col_mean_at, row_mean_at, None)}
    for own, entries in table.items():
        out = outputs[own].reshape(b, 3, c, n, n)
        for h in range(n):
            for w in range(n):
                for slot, fn in enumerate(entries):
                    want = p[:, own, :, h, w] if fn is None else fn(slot, h, w)
                    torch.testing.assert_close(out[:, slot, :, h, w], want)


def test_fir_resampling_is_eg3d_upfirdn2d():
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    x = torch.randn(1, 2, 8, 8)
    # reference: pad 1, correlate with the (symmetric) filter, keep every second sample
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), f.expand(2, 1, 4, 4), groups=2)
    torch.testing.assert_close(downsample2d(x, f), ref[:, :, ::2, ::2])
    assert downsample2d(torch.ones(1, 1, 8, 8), f)[0, 0, 1:-1, 1:-1].eq(1).all()    # gain 1 inside


def test_position_embedding_is_the_official_sinusoid_and_is_loaded_not_recomputed(synth_state_dict):
    weights = synth_state_dict("talk3d")
    key = "deltaplane_predictor.transformer.0.pos_emb"
    torch.testing.assert_close(triplane_position_embedding(32, 256), weights[key], rtol=0, atol=0)
    model = Talk3DNetworks()
    trained = {k: v.clone() for k, v in weights.items()}
    trained[key] = trained[key] + 0.5
    model.load_state_dict(trained, strict=True)
    assert torch.equal(model.deltaplane_predictor.transformer[0].pos_emb, trained[key])
    assert model.deltaplane_predictor.transformer[0].pos_emb.requires_grad     # trained, as the trainer does


def test_plane_token_split_is_plane_major():
    x = torch.arange(2 * 4 * 6.0).reshape(2, 4, 6)
    split = split_planes(x)
    assert split.shape == (2, 12, 2)
    torch.testing.assert_close(split[:, 4:8], x[..., 2:4])
    torch.testing.assert_close(merge_planes(split), x)


def test_eval_is_batch_independent_and_train_mode_uses_and_updates_batch_statistics():
    torch.manual_seed(0)
    model = DeltaplanePredictor(SMALL)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    planes, tokens = torch.randn(3, 12, 32, 32), torch.randn(3, 5, 64)
    with torch.no_grad():
        model.eval()
        batched = model(planes, tokens)
        single = torch.cat([model(planes[i:i + 1], tokens[i:i + 1]) for i in range(3)])
        shared = model(planes, tokens[:1])
        model.train()
        bn = model.Downnet.Downnet1_xy.bn0
        before = bn.running_mean.clone()
        trained = model(planes, tokens)
    assert batched.shape == (3, 12, 32, 32)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared[0], batched[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(trained, batched, atol=1e-3)
    assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, before)
    with pytest.raises(ValueError, match="expects planes"):
        model(torch.randn(1, 12, 16, 16), tokens[:1])


def test_deltaplane_keys_and_parameter_counts_follow_the_spec(synth_state_dict):
    prefix = "deltaplane_predictor."
    weights = {k[len(prefix):]: v for k, v in synth_state_dict("talk3d").items() if k.startswith(prefix)}
    model = DeltaplanePredictor()
    model.load_state_dict(weights, strict=True)
    assert len(model.state_dict()) == 383
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert counts == {"Downnet": 5_814_144, "transformer": 7_629_568, "Upnet": 4_068_288}


def test_call_planes_follow_the_output_meaning(parity_dir):
    case = ParityCase.load(parity_dir / "case_t3d_deltaplane.safetensors")
    train = call_planes(case, "delta_train", 2)
    assert train.dtype == torch.float32 and train.shape == (2, 96, 256, 256)
    assert torch.equal(train[1], case.stored["plane_B"][0].float())
    assert torch.equal(call_planes(case, "delta_eval", 1), case.stored["plane_A"].float())


def test_parity_with_official_deltaplane_eval_and_train(parity_dir):
    report = run_case(parity_dir / "case_t3d_deltaplane.safetensors")
    assert report.passed, report.summary()
    checked = {c.key for c in report.checks}
    assert {"delta_eval", "delta_train__crop", "delta_train__lattice", "delta_train.per_channel_std",
            "dbg_transformer_eval", "dbg_downnet_eval__crop", "dbg_transformer_train__crop",
            "bn_after_train.Upnet.Upnet3_zx.bn1.running_var"} <= checked, report.summary()
    assert not report.unchecked
