"""HTB-SR (head/torso/background super-resolution): official keys, parity, folding, batching, spectral norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from r3dp_core.errors import ModelFileError
from r3dp_core.models.htbsr import HTBSR, HTBSRConfig
from r3dp_core.models.layers.facev2v import SpectralNormConv2d
from r3dp_core.models.layers.stylegan2 import SynthesisLayer, upfirdn2d, upsample2d, upsampling_conv2d
from r3dp_core.models.torso import TorsoConfig
from r3dp_core.parity import run_case

PREFIX = "superresolution."

SMALL_TORSO = TorsoConfig(resolution=64, appearance_channels=(8, 8, 16), num_appearance_res_blocks=1,
                          feature_channels=4, feature_depth=4, compressed_channels=2, hourglass_channels=(8, 8, 8),
                          hourglass_out_channels=4, head_channels=4, num_head_res_blocks=1, fuser_channels=4,
                          generator_channels=8, num_generator_res_blocks=1, generator_up_channels=(8, 6),
                          occlusion_hidden_channels=4)
SMALL = HTBSRConfig(feature_channels=8, input_resolution=32, output_resolution=128, w_dim=16, channels=12,
                    final_channels=8, encoder_channels=6, torso=SMALL_TORSO)


@pytest.fixture(scope="module")
def official_sr(synth_state_dict) -> HTBSR:
    weights = {k[len(PREFIX):]: v for k, v in synth_state_dict("secc2plane_torso").items() if k.startswith(PREFIX)}
    model = HTBSR()
    model.load_state_dict(weights, strict=True)
    return model.eval()


def small_model(seed: int = 0) -> HTBSR:
    torch.manual_seed(seed)
    return HTBSR(SMALL).eval()


def small_inputs(frames: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A portrait (batch 1) and ``frames`` driving frames; weights cross the 0.9 head threshold."""
    gen = torch.Generator().manual_seed(seed)
    segmap_idx = torch.randint(0, 6, (1, 96, 96), generator=gen)
    segmap_idx[:, 60:, 20:76] = 4  # a clothes block, so the torso mask is not empty
    weights = torch.rand(frames, 1, 32, 32, generator=gen) * 0.6
    weights[:, :, 8:24, 10:22] = 1.0
    kp_source = torch.rand(1, 68, 3, generator=gen) * 1.6 - 0.8
    kp_source[..., 2] = 0
    kp_driving = kp_source + 0.05 * torch.randn(frames, 68, 3, generator=gen)
    kp_driving[..., 2] = 0
    return {"feature_image": torch.randn(frames, 8, 32, 32, generator=gen).tanh(), "weights_img": weights,
            "ref_torso_img": torch.rand(1, 3, 96, 96, generator=gen) * 2 - 1,
            "bg_img": torch.rand(1, 3, 96, 96, generator=gen) * 2 - 1,
            "segmap": F.one_hot(segmap_idx, 6).permute(0, 3, 1, 2).float(),
            "kp_source": kp_source, "kp_driving": kp_driving}


def test_official_keys_load_strictly_with_spec_parameter_counts(official_sr, synth_state_dict):
    official = {k for k in synth_state_dict("secc2plane_torso") if k.startswith(PREFIX)}
    assert {PREFIX + k for k in official_sr.state_dict()} == official
    assert len(official) == 462
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in official_sr.named_children()}
    assert counts["block0"] == 943_909 and counts["block1"] == 705_669 and counts["head_torso_block"] == 1_574_917
    assert counts["head_torso_alpha_predictor"] == 11_585
    assert sum(counts.values()) == 54_976_359
    torso = {name: sum(p.numel() for p in child.parameters())
             for name, child in official_sr.torso_model.named_children()}
    assert torso == {"appearance_extractor": 850_176, "motion_field_estimator": 38_853_043,
                     "deform_based_generator": 8_711_939, "occlusion_2_predictor": 28_289}


def test_parity_with_official_htbsr(parity_dir):
    report = run_case(parity_dir / "case_htbsr.safetensors")
    assert report.passed, report.summary()
    checked = {check.name for check in report.checks}
    assert {"image", "occlusion", "occlusion_2", "deformed_torso_hid", "dbg_torso_deformation",
            "dbg_head_torso_block_rgb", "dbg_fuse_fg_bg"} <= checked
    assert not report.unchecked, report.summary()


def test_official_blocks_folded_equal_modulated_with_ones_styles(official_sr):
    torch.manual_seed(0)
    blocks = {"block0": (official_sr.block0, 32), "head_torso_block": (official_sr.head_torso_block, 256),
              "block1": (official_sr.block1, 256)}
    for name, (block, channels) in blocks.items():
        x, img = torch.randn(2, channels, 12, 12), torch.randn(2, 3, 12, 12)
        with torch.no_grad():
            modulated = block(x, img, torch.ones(2, 3, 512))  # the official fused per-sample modconv
            block.fold_constant_styles()
            assert block.conv0.folded_weight is not None
            folded = block(x, img)
        for got, ref in zip(folded, modulated):
            assert (got - ref).abs().max() <= 1e-5, name
    assert not any("folded" in key for key in official_sr.state_dict())


def test_small_model_folded_equals_unfolded_and_reload_drops_the_fold():
    model, inputs = small_model(), small_inputs(2)
    ones = torch.ones(2, 14, SMALL.w_dim)
    with torch.no_grad():
        unfolded = model(**inputs, ws=ones)
        model.fold_constant_styles()
        folded = model(**inputs)
    assert (folded.image - unfolded.image).abs().max() <= 1e-5
    torch.testing.assert_close(folded.person_mask, unfolded.person_mask, rtol=0, atol=1e-6)
    # Other style vectors change the image, so ws does reach every modulated layer.
    with torch.no_grad():
        assert (model(**inputs, ws=ones * 0.5).image - unfolded.image).abs().max() > 1e-3
    model.load_state_dict(model.state_dict())
    assert model.block0.conv1.folded_weight is None


def test_reference_once_and_batched_frames_equal_the_per_frame_official_call():
    model, inputs = small_model(), small_inputs(3)
    with torch.no_grad():
        reference = model.prepare_reference(inputs["ref_torso_img"], inputs["bg_img"], inputs["segmap"],
                                            inputs["kp_source"])
        batched = model.render_frames(inputs["feature_image"], inputs["weights_img"], inputs["kp_driving"], reference)
        single = [model(inputs["feature_image"][i:i + 1], inputs["weights_img"][i:i + 1], inputs["ref_torso_img"],
                        inputs["bg_img"], inputs["segmap"], inputs["kp_source"], inputs["kp_driving"][i:i + 1])
                  for i in range(3)]
    for field in ("image", "head_mask", "torso_mask", "person_mask", "occlusion", "occlusion_2"):
        per_frame = torch.cat([getattr(s, field) for s in single])
        torch.testing.assert_close(getattr(batched, field), per_frame, rtol=1e-5, atol=1e-5, msg=field)
    assert batched.image.shape == (3, 3, 128, 128)
    assert (batched.image[0] - batched.image[1]).abs().max() > 1e-3  # frames really differ


def test_masks_follow_the_fusion_alphas_and_threshold():
    model, inputs = small_model(), small_inputs(2)
    with torch.no_grad():
        out = model(**inputs)
    assert out.image.min() >= -1 and out.image.max() <= 1
    for mask in (out.head_mask, out.torso_mask, out.person_mask):
        assert mask.shape == (2, 1, 128, 128) and mask.min() >= 0 and mask.max() <= 1
    torch.testing.assert_close(out.head_mask + out.torso_mask, out.person_mask)
    # weights == 1 over rows 8..23, cols 10..21 of the 32² input -> head alpha 1 well inside that box at 128²
    assert torch.equal(out.head_mask[..., 40:88, 48:80], torch.ones_like(out.head_mask[..., 40:88, 48:80]))
    # elsewhere alpha <= 0.6 stays soft (not forced to 1) ...
    assert out.head_mask[..., :20, :].max() <= 0.6 + 1e-6
    # ... and the threshold is what forces values in (0.9, 1) to 1: with threshold 1 they stay soft. A small
    # torso alpha keeps person = clamp(torso + head) from saturating, so the image sees the difference.
    with torch.no_grad():
        model.torso_model.occlusion_2_predictor[4].bias.fill_(-4.0)
    reference = model.prepare_reference(inputs["ref_torso_img"], inputs["bg_img"], inputs["segmap"],
                                        inputs["kp_source"])
    weights = inputs["weights_img"].clone()
    weights[:, :, 8:24, 10:22] = 0.95
    with torch.no_grad():
        forced = model.render_frames(inputs["feature_image"], weights, inputs["kp_driving"], reference)
        soft = model.render_frames(inputs["feature_image"], weights, inputs["kp_driving"], reference,
                                   head_threshold=1.0)
    assert forced.head_mask[..., 64, 64].eq(1).all() and soft.head_mask[..., 64, 64].sub(0.95).abs().max() < 1e-6
    assert (forced.image - soft.image).abs().max() > 1e-4


def test_runs_in_float64_without_hard_coded_dtypes():
    model, inputs = small_model().double(), {k: v.double() for k, v in small_inputs(1).items()}
    with torch.no_grad():
        out = model(**inputs)
    assert out.image.dtype == out.person_mask.dtype == torch.float64
    assert torch.isfinite(out.image).all()


def test_upsampling_conv_matches_the_upfirdn_then_convolution_reference():
    # EG3D's generic conv2d_resample path: upsample with the FIR first, then a true convolution (flipped
    # weight). The fast path (transposed conv, then FIR) must compute the same function.
    torch.manual_seed(0)
    x, weight = torch.randn(2, 5, 9, 7), torch.randn(6, 5, 3, 3)
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    reference = F.conv2d(upfirdn2d(x, f, up=2, padding=(3, 2, 3, 2), gain=4.0), weight.flip(2, 3))
    fast = upsampling_conv2d(x, weight, f)
    assert fast.shape == (2, 6, 18, 14)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    # ×2 FIR upsampling keeps a constant image constant away from the zero-padded border.
    up = upsample2d(torch.full((1, 1, 8, 8), 0.7), f)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 1, 12, 12), 0.7))


def test_modulated_layer_demodulates_each_output_filter():
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 3, w_dim=8, resolution=8)
    weight = layer.effective_weight(torch.randn(2, 8))
    norms = weight.square().sum(dim=(2, 3, 4))
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-5, atol=1e-5)


def test_spectral_norm_uses_the_stored_vectors_like_torch_eval(official_sr):
    convs = [m for m in official_sr.torso_model.modules() if isinstance(m, SpectralNormConv2d)]
    assert len(convs) == 15
    conv = official_sr.torso_model.deform_based_generator.up[1].layers[1].layers[0]
    reference = torch.nn.utils.spectral_norm(torch.nn.Conv2d(128, 64, 3, padding=1))
    reference.load_state_dict(conv.state_dict())
    reference.eval()
    x = torch.randn(1, 128, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), reference(x), rtol=1e-5, atol=1e-5)
        w = conv.weight_orig.double().flatten(1)
        sigma = conv.weight_u.double() @ w @ conv.weight_v.double()
        torch.testing.assert_close(conv.sigma().double(), sigma, rtol=1e-6, atol=0)
        # Three power iterations (synthetic u, v) stop short of the top singular value: the stored vectors,
        # not a converged sigma, define the layer.
        assert torch.linalg.matrix_norm(w, ord=2) - sigma > 1e-3 * sigma
        assert torch.equal(conv.weight_u, reference.weight_u)  # no power iteration in forward


def test_config_from_official_hparams_and_rejected_variants():
    cfg = HTBSRConfig.from_hparams({"triplane_hid_dim": 32, "neural_rendering_resolution": 128,
                                    "final_resolution": 512, "w_dim": 512, "htbsr_head_threshold": 0.8,
                                    "torso_model_version": "v2", "weight_fuse": True})
    assert cfg == HTBSRConfig(head_threshold=0.8)
    with pytest.raises(ModelFileError, match="htbsr_head_weight_fuse_mode='v3'"):
        HTBSRConfig.from_hparams({"htbsr_head_weight_fuse_mode": "v3"})
    with pytest.raises(ModelFileError, match="torso_model_version='v1'"):
        HTBSRConfig.from_hparams({"torso_model_version": "v1"})
    with pytest.raises(ValueError, match="half the output resolution"):
        HTBSRConfig(output_resolution=256)


def test_wrong_feature_image_shape_is_reported():
    model, inputs = small_model(), small_inputs(1)
    inputs["feature_image"] = inputs["feature_image"][..., :16, :16]
    with pytest.raises(ValueError, match=r"feature_image must be \[B,8,32,32\], got \[1, 8, 16, 16\]"):
        model(**inputs)
