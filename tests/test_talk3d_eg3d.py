"""Talk3D's EG3D fixed-tri-plane generator: official keys, parity, cameras, StyleGAN2 extensions (constant input,
noise, clamp, mapping/truncation, style routing), the renderer seam (plane axes, fixed near/far, raw clamp),
the styled SR, batching, dtypes, and the parity stage on a variant case."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from r3dp_core.errors import InputError, R3DPError
from r3dp_core.models.layers.stylegan2 import (
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    modulated_weight,
    normalize_2nd_moment,
)
from r3dp_core.models.layers.triplane_layout import NO_FLIPS, REAL3D_PORTRAIT_FLIPS, channels_to_triplanes
from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.runner import check_outputs
from r3dp_core.render import RenderConfig, RenderNoise, render_triplanes
from r3dp_core.render.renderer import stratified_depths
from r3dp_core.render.triplane import project_onto_planes
from r3dp_core.talk3d.eg3d_camera import LookAtCameraConfig, lookat_cameras
from r3dp_core.talk3d.eg3d_generator import (
    EG3DGeneratorConfig,
    TriPlaneGenerator,
    prepare_for_inference,
    tiny_config,
)
from r3dp_core.talk3d.eg3d_superresolution import EG3DSuperresolutionConfig, SuperresolutionHybrid8XDC

MANIFEST = "eg3d_fixed_triplane"


def tiny_model(seed: int = 0) -> TriPlaneGenerator:
    torch.manual_seed(seed)
    model = TriPlaneGenerator(tiny_config()).eval()
    with torch.no_grad():  # non-zero noise strengths and a non-trivial w_avg, as in a trained checkpoint
        for module in model.modules():
            if isinstance(module, SynthesisLayer):
                module.noise_strength.fill_(0.3)
        model.backbone.mapping.w_avg.normal_()
    return model


# --- weights and parity -----------------------------------------------------------------------------------------


def test_official_keys_load_strictly_with_manifest_parameter_counts(parity_dir, synth_state_dict):
    manifest = json.loads((parity_dir / f"manifest_{MANIFEST}.json").read_text())
    model = TriPlaneGenerator()
    model.load_state_dict(synth_state_dict(MANIFEST), strict=True)
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"] == 30_662_136
    assert sum(b.numel() for b in model.buffers()) == manifest["total_buffer_elements"]
    for child, count in manifest["parameters_per_top_level_child"].items():
        module = getattr(model, child, None)
        assert (0 if module is None else sum(p.numel() for p in module.parameters())) == count, child
    for part, count in manifest["parameters_backbone_parts"].items():
        assert sum(p.numel() for p in model.get_submodule(part).parameters()) == count, part
    assert model.num_ws == 14
    # the buffer VIVE3D registers after construction is part of the state dict (strict loading needs it)
    assert "dataset_label_std" in model.state_dict()


def test_parity_with_official_eg3d_generator(parity_dir):
    report = run_case(parity_dir / "case_t3d_eg3d.safetensors")
    assert report.passed, report.summary()
    checked = {check.key for check in report.checks}
    assert {"ws_psi1p0", "ws_psi0p5", "cameras", "planes", "image", "image@own_planes"} <= checked


# --- cameras ----------------------------------------------------------------------------------------------------


def _lookat_reference(yaw: float, pitch: float, config: LookAtCameraConfig) -> np.ndarray:
    """Independent float64 LookAt camera (talk3d_spec §4.2)."""
    theta = math.pi / 2 + yaw
    phi = math.acos(1 - 2 * min(max(math.pi / 2 + pitch, 1e-5), math.pi - 1e-5) / math.pi)
    origin = config.radius * np.array([math.sin(phi) * math.cos(math.pi - theta), math.cos(phi),
                                       math.sin(phi) * math.sin(math.pi - theta)])
    forward = np.asarray(config.pivot) - origin
    forward /= np.linalg.norm(forward)
    right = -np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    up /= np.linalg.norm(up)
    cam2world = np.eye(4)
    cam2world[:3, :3] = np.stack([right, up, forward], axis=1)
    cam2world[:3, 3] = origin
    f = config.focal_length
    return np.concatenate([cam2world.reshape(16), [f, 0, 0.5, 0, f, 0.5, 0, 0, 1]])


def test_lookat_cameras_match_the_documented_rig():
    config = LookAtCameraConfig()
    yaws, pitches = [0.0, 0.1, -0.6, 0.4], [0.0, -0.05, -0.35, 0.3]
    cameras = lookat_cameras(yaws, pitches)
    assert cameras.shape == (4, 25) and cameras.dtype == torch.float32
    for row, (yaw, pitch) in enumerate(zip(yaws, pitches)):
        np.testing.assert_allclose(cameras[row].double().numpy(), _lookat_reference(yaw, pitch, config), atol=2e-6)
    # talk3d_spec §4.2 example: (yaw 0.1, pitch -0.05) sits at about (0.269, 0.086, 2.685)
    torch.testing.assert_close(cameras[1, [3, 7, 11]], torch.tensor([0.269, 0.086, 2.685]), atol=1e-3, rtol=0)
    # rotation orthonormal with det +1, and the optical axis (z) points at the pivot
    rotation = cameras[:, :16].reshape(-1, 4, 4)[:, :3, :3].double()
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, torch.eye(3, dtype=torch.float64).expand(4, 3, 3),
                               atol=1e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(4, dtype=torch.float64), atol=1e-6)
    to_pivot = F.normalize(torch.tensor(config.pivot, dtype=torch.float64) - cameras[:, [3, 7, 11]].double(), dim=1)
    torch.testing.assert_close(rotation[:, :, 2], to_pivot, atol=1e-6, rtol=0)
    # a scalar broadcasts against a list; tensors and float64 inputs give the same cameras
    torch.testing.assert_close(lookat_cameras([0.1, 0.2], 0.0), lookat_cameras(torch.tensor([0.1, 0.2]), [0.0, 0.0]))
    with pytest.raises(InputError):
        lookat_cameras(torch.zeros(2, 2), 0.0)


def test_conditioning_camera_is_the_frontal_camera_on_the_model_device():
    model = tiny_model()
    torch.testing.assert_close(model.conditioning_camera(), lookat_cameras(0.0, 0.0), rtol=0, atol=0)
    assert model.cameras([0.1, 0.2], [0.0, 0.1]).device == model.device


# --- renderer seam ----------------------------------------------------------------------------------------------


def test_render_config_defaults_are_real3d_portraits_and_bad_settings_are_refused():
    config = RenderConfig()
    assert (config.plane_axes, config.ray_range, config.clamp_raw_rgb) == ("eg3d", None, True)
    with pytest.raises(ValueError, match="plane_axes"):
        RenderConfig(plane_axes="zx")
    with pytest.raises(ValueError, match="ray_range"):
        RenderConfig(ray_range=(3.3, 2.25))
    assert RenderConfig(ray_range=(2, 3)).ray_range == (2.0, 3.0)


def test_fixed_plane_axes_put_z_y_on_the_third_plane():
    point = torch.tensor([[0.1, 0.2, 0.3]])
    original, fixed = project_onto_planes(point), project_onto_planes(point, "eg3d_fixed")
    torch.testing.assert_close(original[:, 0], torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.1]]))
    torch.testing.assert_close(fixed[:, 0], torch.tensor([[0.1, 0.2], [0.1, 0.3], [0.3, 0.2]]))
    with pytest.raises(InputError):
        project_onto_planes(point, "unknown")


def test_fixed_ray_range_samples_official_linspace_depths_and_every_ray_is_valid():
    jitter = torch.rand(2, 5, 48, 1, generator=torch.Generator().manual_seed(0))
    depths = stratified_depths(None, None, jitter, fixed_range=(2.25, 3.3))
    expected = torch.linspace(2.25, 3.3, 48)[:, None] + jitter * ((3.3 - 2.25) / 47)
    torch.testing.assert_close(depths, expected, rtol=0, atol=0)

    torch.manual_seed(0)
    model = tiny_model()
    planes = torch.randn(1, 3, 4, 16, 16)
    camera = lookat_cameras([0.0, 0.3], 0.0)
    fixed = RenderConfig(resolution=8, num_coarse_samples=6, num_fine_samples=6, ray_range=(2.25, 3.3))
    out = render_triplanes(planes, model.decoder, camera, fixed, generator=torch.Generator().manual_seed(1))
    assert out.is_ray_valid.all()
    assert (out.depth >= 2.25).all() and (out.depth <= 3.3 + 1.05 / 5).all()
    # the box slab test gives other depths for the same noise: the setting is live
    auto = render_triplanes(planes, model.decoder, camera, RenderConfig(resolution=8, num_coarse_samples=6,
                                                                        num_fine_samples=6),
                            generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(auto.depth, out.depth)


def test_raw_rgb_is_clamped_only_where_the_config_says_so():
    model = tiny_model()
    with torch.no_grad():
        model.decoder.net[2].bias.fill_(20.0)  # opaque, saturated colours: rgb ~ 1.002 after x*2-1
    config = RenderConfig(resolution=4, num_coarse_samples=4, num_fine_samples=4)
    out = render_triplanes(torch.zeros(1, 3, 4, 8, 8), model.decoder, lookat_cameras(), config,
                           generator=torch.Generator().manual_seed(0))
    assert out.rgb.max() > 1
    assert out.raw_rgb().max() <= 1 and out.raw_rgb(RenderConfig(clamp_raw_rgb=False)).max() > 1
    torch.testing.assert_close(out.raw_rgb(RenderConfig(clamp_raw_rgb=False)), out.rgb)


def test_plane_layout_flips_are_configurable_and_default_unchanged():
    x = torch.randn(2, 12, 5, 6)
    planes = x.reshape(2, 3, 4, 5, 6)
    default = channels_to_triplanes(x)
    torch.testing.assert_close(default, channels_to_triplanes(x, REAL3D_PORTRAIT_FLIPS))
    torch.testing.assert_close(default[:, 0], planes[:, 0].flip(-2))
    torch.testing.assert_close(default[:, 2], planes[:, 2].flip(-2, -1))
    plain = channels_to_triplanes(x, NO_FLIPS)
    assert plain.data_ptr() == x.data_ptr() and torch.equal(plain, planes)  # EG3D: a view, as officially
    with pytest.raises(ValueError):
        channels_to_triplanes(x, ((), ()))


# --- StyleGAN2 extensions ---------------------------------------------------------------------------------------


def _layer(seed: int = 0, **kwargs) -> SynthesisLayer:
    torch.manual_seed(seed)
    layer = SynthesisLayer(6, 5, 8, resolution=7, **kwargs).eval()
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
    return layer


def test_synthesis_layer_noise_is_added_before_bias_and_activation():
    layer = _layer()
    x, w = torch.randn(2, 6, 7, 7), torch.randn(2, 8)
    weight = modulated_weight(layer.weight, layer.affine(w), demodulate=True)
    conv = torch.stack([F.conv2d(x[i:i + 1], weight[i], padding=1)[0] for i in range(2)])
    noise = layer.noise_const * layer.noise_strength
    expected = F.leaky_relu(conv + noise + layer.bias[:, None, None], 0.2) * math.sqrt(2)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, w, noise_mode="const"), expected, atol=1e-5, rtol=1e-5)
        no_noise = F.leaky_relu(conv + layer.bias[:, None, None], 0.2) * math.sqrt(2)
        torch.testing.assert_close(layer(x, w), no_noise, atol=1e-5, rtol=1e-5)  # 'none' is the default
        # the all-ones style path (w=None) adds the same noise
        ones = layer(x, torch.ones(2, 8), noise_mode="const")
        torch.testing.assert_close(layer(x, None, noise_mode="const"), ones, atol=1e-5, rtol=1e-5)
        # 'random': per-sample Gaussian maps, reproducible with a generator
        a = layer(x, w, noise_mode="random", generator=torch.Generator().manual_seed(3))
        b = layer(x, w, noise_mode="random", generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and not torch.allclose(a, layer(x, w))
    with pytest.raises(ValueError, match="noise_mode"):
        layer(x, w, noise_mode="fixed")


def test_conv_clamp_bounds_layer_and_torgb_outputs():
    layer = _layer(conv_clamp=0.25)
    torgb = ToRGBLayer(5, 3, 8, conv_clamp=0.1)
    x, w = 10 * torch.randn(2, 6, 7, 7), torch.randn(2, 8)
    with torch.no_grad():
        y = layer(x, w, noise_mode="const")
        assert y.abs().max() <= 0.25 and (y.abs() == 0.25).any()
        assert torgb(y * 100, w).abs().max() <= 0.1
        assert _layer()(x, w).abs().max() > 0.25  # unclamped by default (Real3D-Portrait's SR)


def test_first_block_starts_from_the_constant_with_two_style_rows():
    torch.manual_seed(0)
    block = SynthesisBlock(0, 6, 8, resolution=4).eval()
    assert (block.num_conv, block.num_torgb) == (1, 1) and not hasattr(block, "conv0")
    ws = torch.randn(3, 2, 8)
    with torch.no_grad():
        x, img = block(None, None, ws, noise_mode="const")
        const = block.const.unsqueeze(0).expand(3, -1, -1, -1)
        x_ref = block.conv1(const, ws[:, 0], noise_mode="const")
        torch.testing.assert_close(x, x_ref)
        torch.testing.assert_close(img, block.torgb(x_ref, ws[:, 1]))
    with pytest.raises(ValueError, match="ws"):
        block(None, None, torch.randn(3, 3, 8))


def test_synthesis_network_shares_each_torgb_row_with_the_next_conv0():
    torch.manual_seed(0)
    net = SynthesisNetwork(8, img_resolution=16, img_channels=6, channel_base=64, channel_max=8).eval()
    assert net.num_ws == 6 and [b.num_conv for b in net.blocks()] == [1, 2, 2]
    assert (net.b4.conv1.weight.shape[0], net.b16.conv1.weight.shape[0]) == (8, 4)  # min(64 // res, 8)
    ws = torch.randn(2, 6, 8)
    with torch.no_grad():
        x, img = net.b4(None, None, ws[:, 0:2], "const")
        x, img = net.b8(x, img, ws[:, 1:4], "const")
        _, img = net.b16(x, img, ws[:, 3:6], "const")
        torch.testing.assert_close(net(ws), img)  # noise 'const' is the network's default
    with pytest.raises(ValueError, match="ws"):
        net(torch.randn(2, 5, 8))


def test_mapping_normalises_inputs_and_truncates_towards_w_avg():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=8, c_dim=5, w_dim=8, num_ws=4, num_layers=2).eval()
    with torch.no_grad():
        mapping.w_avg.normal_()
        z, c = torch.randn(3, 8), torch.randn(3, 5)
        ws = mapping(z, c)
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(mapping.embed(c))], dim=1)
        w = mapping.fc1(mapping.fc0(x))
        torch.testing.assert_close(ws, w[:, None].expand(-1, 4, -1))
        torch.testing.assert_close(mapping(z.double(), c), ws)  # float64 z is cast, as officially
        half = mapping(z, c, truncation_psi=0.5)
        torch.testing.assert_close(half, mapping.w_avg + 0.5 * (ws - mapping.w_avg))
        cut = mapping(z, c, truncation_psi=0.0, truncation_cutoff=2)
        torch.testing.assert_close(cut[:, :2], mapping.w_avg.expand(3, 2, -1))
        torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
    torch.testing.assert_close(normalize_2nd_moment(torch.tensor([[3.0, 4.0]])).square().mean(), torch.tensor(1.0))


def test_generator_mapping_uses_the_scaled_frontal_condition():
    model = tiny_model()
    z = torch.randn(2, 16)
    with torch.no_grad():
        frontal = model.conditioning_camera()
        torch.testing.assert_close(model.mapping(z), model.backbone.mapping(z, frontal.expand(2, -1)))
        model.config.c_scale = 0.5
        torch.testing.assert_close(model.mapping(z), model.backbone.mapping(z, 0.5 * frontal.expand(2, -1)))
        model.config.c_gen_conditioning_zero = True
        torch.testing.assert_close(model.mapping(z), model.backbone.mapping(z, torch.zeros(2, 25)))


# --- super-resolution -------------------------------------------------------------------------------------------


def test_sr_is_driven_by_the_last_style_row_and_clamps_like_fp16_configs():
    assert EG3DSuperresolutionConfig().conv_clamp == 256
    assert EG3DSuperresolutionConfig(sr_num_fp16_res=0).conv_clamp is None
    torch.manual_seed(0)
    sr = SuperresolutionHybrid8XDC(tiny_config().superresolution).eval()
    assert sr.block0.conv0.conv_clamp == sr.block1.torgb.conv_clamp == 256
    x = torch.randn(2, 8, 16, 16)
    ws = torch.randn(2, 6, 16)
    other = ws.clone()
    other[:, :-1] = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = sr(x[:, :3], x, ws)
        assert out.shape == (2, 3, 64, 64)
        torch.testing.assert_close(sr(x[:, :3], x, other), out)
        torch.testing.assert_close(sr(x[:, :3], x, ws[:, -1]), out)
        torch.testing.assert_close(sr(x[:, :3], x, ws[:, -1:].expand(-1, 3, -1)), out)
        assert not torch.allclose(sr(x[:, :3], x, torch.randn(2, 16)), out)
        # a 2x smaller feature image is resized to the SR's input size first
        assert sr(x[:, :3, ::2, ::2], x[..., ::2, ::2], ws).shape == (2, 3, 64, 64)
    with pytest.raises(InputError):
        sr(x[:, :3], x[:, :4], ws)


# --- render, batching, dtypes -----------------------------------------------------------------------------------


def _noise(model: TriPlaneGenerator, frames: int, seed: int = 0) -> RenderNoise:
    return RenderNoise.draw(frames, model.config.render.resolution ** 2, model.config.render,
                            torch.Generator().manual_seed(seed))


def test_render_of_a_batch_equals_per_frame_renders_of_the_shared_identity():
    model = tiny_model()
    with torch.no_grad():
        ws = model.mapping(torch.randn(1, 16), truncation_psi=0.7)
        p_id = model.synthesize_planes(ws)
        assert p_id.shape == (1, 12, 16, 16)
        delta = 0.1 * torch.randn(2, 12, 16, 16)
        camera = model.cameras([0.1, -0.2], [0.0, 0.05])
        noise = _noise(model, 2)
        both = model.render(p_id, ws, camera, delta_planes=delta, noise=noise)
        assert both.image.shape == (2, 3, 64, 64) and both.feature_image.shape == (2, 8, 16, 16)
        torch.testing.assert_close(both.image_raw, both.feature_image[:, :3])  # Talk3D: no clamp
        rays = 16 * 16
        for i in range(2):
            frame_noise = RenderNoise(noise.stratified[i:i + 1], noise.importance[i * rays:(i + 1) * rays])
            single = model.render(p_id, ws, camera[i:i + 1], delta_planes=delta[i:i + 1], noise=frame_noise)
            for name in ("image", "feature_image", "image_depth", "weights_image"):
                torch.testing.assert_close(getattr(both, name)[i:i + 1], getattr(single, name), atol=1e-5, rtol=1e-5)
        # ΔP is added to every channel of the identity plane (no mask, no scale)
        summed = model.render(p_id + delta, ws, camera, noise=noise)
        torch.testing.assert_close(summed.image, both.image)
        # the fixed axes are live: the original layout renders another image
        model.config.render.plane_axes = "eg3d"
        assert not torch.allclose(model.render(p_id + delta, ws, camera, noise=noise).image, both.image)
    with pytest.raises(InputError):
        model.render(p_id[:, :9], ws, camera)


def test_runs_in_float64_without_hard_coded_dtypes():
    model = tiny_model().double()
    with torch.no_grad():
        ws = model.mapping(torch.randn(1, 16))
        planes = model.synthesize_planes(ws)
        out = model.render(planes, ws, model.cameras(0.1, 0.0).double(), noise=_noise(model, 1))
    assert ws.dtype == planes.dtype == out.image.dtype == out.image_depth.dtype == torch.float64
    assert torch.isfinite(out.image).all()


def test_low_precision_sr_keeps_float32_outputs_and_a_float32_renderer():
    reference, fast = tiny_model(), prepare_for_inference(tiny_model(), torch.bfloat16)
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        ws = reference.mapping(torch.randn(1, 16))
        planes = reference.synthesize_planes(ws)
        camera = reference.cameras(0.1, 0.0)
        ref = reference.render(planes, ws, camera, noise=_noise(reference, 1))
        out = fast.render(planes, ws, camera, noise=_noise(fast, 1))
    assert out.image.dtype == torch.float32
    torch.testing.assert_close(out.feature_image, ref.feature_image)  # the renderer is not autocast
    assert (out.image - ref.image).abs().max() < 0.1 * ref.image.abs().max()
    assert not torch.equal(out.image, ref.image)
    with pytest.raises(R3DPError, match="already prepared"):
        prepare_for_inference(fast)


def test_config_checks_the_decoder_against_planes_and_sr():
    with pytest.raises(ValueError, match="decoder"):
        EG3DGeneratorConfig(plane_channels=16)
    with pytest.raises(ValueError, match="SR"):
        EG3DGeneratorConfig(superresolution=EG3DSuperresolutionConfig(channels=16))


# --- the parity stage on another case of the documented format --------------------------------------------------


def test_stage_runs_on_a_variant_case_with_two_frames_other_cameras_and_psi(parity_dir, tmp_path, synth_state_dict):
    """A variant of the documented format (B = 2 frames at 16², 6 + 6 samples; psi 0.7; three other cameras).
    References that need no official run are checked: ``ws_psi0p7`` from the official psi-1 ``ws`` and
    ``w_avg``, cameras from an independent float64 LookAt, ``planes`` from the official case."""
    shared = ParityCase.load(parity_dir / "case_t3d_eg3d.safetensors")
    for name in ("synth_weights.py", f"manifest_{MANIFEST}.json"):
        os.symlink(parity_dir / name, tmp_path / name)
    frames, rays, samples = 2, 16 * 16, 6
    gen = torch.Generator().manual_seed(0)
    yaw_pitch = torch.tensor([[0.2, 0.1], [-0.3, -0.2], [0.05, 0.4]], dtype=torch.float64)
    render_yaw_pitch = torch.tensor([[0.15, 0.05], [-0.1, -0.1]], dtype=torch.float64)
    w_avg = synth_state_dict(MANIFEST)["backbone.mapping.w_avg"].double()
    ws_psi1 = shared.tensor("ws_psi1p0")[:2].double()
    config = LookAtCameraConfig()

    def cams(angles: torch.Tensor) -> torch.Tensor:
        return torch.tensor(np.stack([_lookat_reference(y, p, config) for y, p in angles.tolist()])).float()

    tensors = {
        "z": shared.tensor("z")[:2], "yaw_pitch": yaw_pitch, "render_yaw_pitch": render_yaw_pitch,
        "ws_synth": shared.tensor("ws_synth"),
        "delta_planes": torch.cat([shared.tensor("delta_planes"), -shared.tensor("delta_planes")]),
        "noise_stratified": torch.rand(frames, rays, samples, 1, generator=gen),
        "noise_importance_u": torch.rand(frames * rays, samples, generator=gen),
        "ws_psi0p7": (w_avg + 0.7 * (ws_psi1 - w_avg)).float(), "cameras": cams(yaw_pitch),
        "render_camera": cams(render_yaw_pitch), "planes": shared.tensor("planes"),
    }
    tolerance = {"atol": 2e-5, "rtol": 1e-5, "rms_max": 4e-6}
    meta = {"case": "t3d_eg3d", "call": {"truncation_cutoff": 14}, "tensors": {
        name: {"role": "output" if name in ("ws_psi0p7", "cameras", "render_camera", "planes") else "input",
               "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
               "stored": {"mode": "full", "keys": [name]}, "suggested_tolerance": tolerance}
        for name, t in tensors.items()}}
    meta["tensors"]["planes"]["suggested_tolerance"] = {"atol": 5e-5, "rtol": 1e-5, "rms_max": 8e-6}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "case_t3d_eg3d.safetensors"))
    (tmp_path / "case_t3d_eg3d.json").write_text(json.dumps(meta))

    from r3dp_core.parity import stage_t3d_eg3d

    case = ParityCase.load(tmp_path / "case_t3d_eg3d.safetensors")
    with torch.inference_mode():
        outputs = stage_t3d_eg3d.run(case)
    report = check_outputs(case, outputs)
    assert report.passed and not report.missing_outputs, report.summary()
    for suffix in ("", "@own_planes"):
        assert outputs["feature_image" + suffix].shape == (frames, 32, 16, 16)
        assert outputs["image" + suffix].shape == (frames, 3, 512, 512)
        assert torch.isfinite(outputs["image" + suffix]).all()
    assert outputs["cameras"].shape == (3, 25) and outputs["ws_psi0p7"].shape == (2, 14, 512)
