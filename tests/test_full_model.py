"""The complete video model (secc2plane_torso): official checkpoint layout, full-forward parity, staged batching."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from r3dp_core.errors import ModelFileError
from r3dp_core.models.secc2plane_torso import Secc2PlaneTorso, Secc2PlaneTorsoConfig, tiny_config
from r3dp_core.parity import run_case
from r3dp_core.render import RenderConfig, RenderNoise

SMALL = tiny_config()


def test_official_checkpoint_loads_strictly_with_every_key(synth_state_dict, shared_dir):
    weights = synth_state_dict("secc2plane_torso")
    model = Secc2PlaneTorso()
    model.load_state_dict(weights, strict=True)
    state = model.state_dict()
    rows = [line.split("\t") for line in (shared_dir / "spec" / "official_keys_secc2plane_torso.tsv").read_text()
            .splitlines() if line and not line.startswith("#")][1:]
    assert {key: json.loads(shape) for key, shape, _ in rows} == {k: list(v.shape) for k, v in state.items()}
    assert len(state) == 1030 and len(list(model.buffers())) == 298
    assert sum(p.numel() for p in model.parameters()) == 148_019_272


def test_parity_with_official_full_forward(parity_dir):
    report = run_case(parity_dir / "case_full_forward.safetensors")
    assert report.passed, report.summary()
    checked = {check.name for check in report.checks}
    assert checked == {"image", "image_raw", "image_depth", "weights_img", "feature_image", "plane", "occlusion",
                       "occlusion_2"}, report.summary()


def small_batch(frames: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    segmap = torch.randint(0, 6, (1, 64, 64), generator=gen)
    segmap[:, 40:, 12:52] = 4
    kp_s = torch.rand(1, 68, 3, generator=gen) * 1.6 - 0.8
    kp_s[..., 2] = 0
    kp_d = kp_s + 0.05 * torch.randn(frames, 68, 3, generator=gen)
    kp_d[..., 2] = 0
    camera = torch.tensor([1, 0, 0, 0, 0, -1, 0, 0.006, 0, 0, -1, 2.861, 0, 0, 0, 1,
                           4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]).repeat(frames, 1)
    camera[:, 3] = torch.linspace(-0.05, 0.05, frames)  # the frames look from slightly different places

    def image(batch: int) -> torch.Tensor:
        return torch.rand(batch, 3, 64, 64, generator=gen) * 2 - 1

    return {"img": image(1), "camera": camera, "cond_cano": image(1), "cond_src": image(1),
            "cond_tgt": image(frames), "ref_torso_img": image(1), "bg_img": image(1),
            "segmap": F.one_hot(segmap, 6).permute(0, 3, 1, 2).float(), "kp_s": kp_s, "kp_d": kp_d}


def test_batched_frames_with_cached_canonical_planes_equal_per_frame_official_calls():
    torch.manual_seed(0)
    model = Secc2PlaneTorso(SMALL).eval()
    inputs, frames, rays = small_batch(3), 3, 16 * 16
    noise = RenderNoise.draw(frames, rays, SMALL.render, torch.Generator().manual_seed(5))
    with torch.no_grad():
        cano_planes = model.canonical_planes(inputs["img"])
        model.fold_constant_styles()
        batched = model(**inputs, cano_planes=cano_planes, noise=noise)
        single = []
        for i in range(frames):
            frame = dict(inputs, camera=inputs["camera"][i:i + 1], cond_tgt=inputs["cond_tgt"][i:i + 1],
                         kp_d=inputs["kp_d"][i:i + 1])
            frame_noise = RenderNoise(noise.stratified[i:i + 1], noise.importance[i * rays:(i + 1) * rays])
            single.append(model(**frame, noise=frame_noise))
    assert batched.image.shape == (3, 3, 64, 64) and batched.plane.shape == (3, 3, 4, 32, 32)
    for name in ("image", "feature_image", "image_depth", "weights_img", "plane", "occlusion_2", "person_mask"):
        per_frame = torch.cat([getattr(s, name) for s in single])
        torch.testing.assert_close(getattr(batched, name), per_frame, rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(batched.image_raw, batched.feature_image[:, :3].clamp(-1, 1))
    assert (batched.image[0] - batched.image[2]).abs().max() > 1e-3


def test_config_from_official_hparams_and_consistency_checks(parity_dir):
    hparams = json.loads((parity_dir / "config_secc2plane_torso.json").read_text())
    assert Secc2PlaneTorsoConfig.from_hparams(hparams) == Secc2PlaneTorsoConfig()
    with pytest.raises(ModelFileError, match="phase1_plane_fusion_mode='concat'"):
        Secc2PlaneTorsoConfig.from_hparams(dict(hparams, phase1_plane_fusion_mode="concat"))
    with pytest.raises(ValueError, match="expects 128² renders, the renderer makes 64²"):
        Secc2PlaneTorsoConfig(render=RenderConfig(resolution=64))
