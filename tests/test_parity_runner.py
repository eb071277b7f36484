"""The generic parity machinery: reading cases, views, tolerances and verdicts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from r3dp_core.images import u8_image_to_tensor
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.compare import compare_tensor, parse_view
from r3dp_core.parity.runner import check_outputs


def test_views_follow_sidecar_descriptions():
    x = torch.arange(2 * 256 * 256, dtype=torch.float32).reshape(2, 256, 256)
    crop = parse_view("[..., 80:144, 112:176]")(x)
    assert crop.shape == (2, 64, 64) and crop[0, 0, 0] == 80 * 256 + 112
    lattice = parse_view("x.index_select(-2, L).index_select(-1, L) with L = [0, 8, 255]")(x)
    assert lattice.shape == (2, 3, 3) and lattice[1, 2, 1] == 65536 + 255 * 256 + 8
    assert parse_view("full")(x) is x
    with pytest.raises(ValueError):
        parse_view("something else")


def test_tolerance_is_elementwise_and_rms():
    ref = torch.zeros(100)
    tol = {"atol": 1e-3, "rtol": 0.0, "rms_max": 1e-4}
    ok = compare_tensor("t", "t", ref + 5e-5, ref, tol)
    assert ok.passed and ok.max_abs == pytest.approx(5e-5)
    one_outlier = ref.clone()
    one_outlier[3] = 2e-3
    bad = compare_tensor("t", "t", one_outlier, ref, tol)
    assert not bad.passed and bad.violations == 1
    broad = compare_tensor("t", "t", ref + 5e-4, ref, tol)  # within atol everywhere but rms too large
    assert broad.violations == 0 and not broad.passed
    nan = compare_tensor("t", "t", torch.full((4,), float("nan")), torch.zeros(4), tol)
    assert not nan.passed
    exact = compare_tensor("i", "i", torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), None)
    assert exact.exact and exact.violations == 1
    shape = compare_tensor("s", "s", torch.zeros(3), torch.zeros(4), tol)
    assert not shape.passed and "shape" in shape.note


def test_case_inputs_resolve_like_the_sidecar_says(parity_dir):
    render = ParityCase.load(parity_dir / "case_volume_render.safetensors")
    planes = render.tensor("planes")  # regenerated from synth_weights.smooth_uniform
    assert planes.shape == (1, 3, 32, 256, 256)
    assert hashlib.sha256(planes.numpy().tobytes()).hexdigest() == render.tensors_meta["planes"]["sha256_float32"]
    assert torch.equal(planes[..., 80:144, 112:176], render.stored["planes__crop"])
    htbsr = ParityCase.load(parity_dir / "case_htbsr.safetensors")
    assert htbsr.tensor("feature_image").shape == (1, 32, 128, 128)  # borrowed from case_full_forward
    i2p = ParityCase.load(parity_dir / "case_i2p.safetensors")
    img = i2p.tensor("img")
    assert hashlib.sha256(img.numpy().tobytes()).hexdigest() == i2p.tensors_meta["img"]["sha256_float32"]
    assert torch.equal(img, u8_image_to_tensor(i2p.tensor("img_u8")))


def test_check_outputs_flags_missing_and_wrong_outputs(parity_dir):
    case = ParityCase.load(parity_dir / "case_a2m_vae.safetensors")
    perfect = {name: case.stored[name] for name in case.names("output", "intermediate")}
    assert check_outputs(case, perfect).passed
    missing = dict(perfect)
    missing.pop("pred_t0")
    report = check_outputs(case, missing)
    assert not report.passed and report.missing_outputs == ["pred_t0"]
    off = dict(perfect)
    off["pred_t0p2"] = off["pred_t0p2"] + 1e-3
    report = check_outputs(case, off)
    assert not report.passed and "FAIL pred_t0p2" in report.summary()


def _plane_case(planes: torch.Tensor) -> ParityCase:
    """An in-memory case with one tri-plane output stored the official way: crop, lattice and, for every sample,
    the mean and std of each of its 3·C channels (sample after sample)."""
    crop, lattice = "[..., 4:12, 2:10]", "x.index_select(-2, L).index_select(-1, L) with L = [0, 5, 15]"
    per_sample = planes.double().reshape(-1, planes.shape[-2] * planes.shape[-1])
    info = {"role": "output", "shape": list(planes.shape),
            "stored": {"mode": "planes", "keys": ["planes__crop", "planes__lattice"],
                       "slices": {"planes__crop": crop, "planes__lattice": lattice}},
            "per_channel_mean": per_sample.mean(1).tolist(), "per_channel_std": per_sample.std(1).tolist(),
            "suggested_tolerance": {"atol": 1e-5, "rtol": 0.0, "rms_max": 1e-6}}
    stored = {"planes__crop": parse_view(crop)(planes), "planes__lattice": parse_view(lattice)(planes)}
    return ParityCase(path=Path("case_synthetic.safetensors"), meta={"case": "synthetic", "tensors": {"planes": info}},
                      stored=stored)


def test_plane_statistics_are_per_sample_in_batched_cases():
    planes = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    planes[1] = planes[1] * 3 + 1                        # two samples with different statistics
    case = _plane_case(planes)
    report = check_outputs(case, {"planes": planes})
    stats = [c for c in report.checks if "per_channel" in c.key]
    assert [c.shape for c in stats] == [(2 * 3 * 4,)] * 2 and report.passed, report.summary()
    # two channels of the second sample swapped: its own statistics, and only those, disagree
    swapped = planes.clone()
    swapped[1, 0, [0, 1]] = planes[1, 0, [1, 0]]
    bad = {c.key: c for c in check_outputs(case, {"planes": swapped}).checks}
    assert bad["planes.per_channel_mean"].violations == 2 and not bad["planes.per_channel_mean"].passed


def test_a_stored_reference_missing_from_the_case_file_fails(parity_dir):
    case = ParityCase.load(parity_dir / "case_a2m_vae.safetensors")
    perfect = {name: case.stored[name] for name in case.names("output", "intermediate")}
    case.stored.pop("pred_t0")                            # listed in the sidecar, gone from the file
    report = check_outputs(case, perfect)
    assert not report.passed and report.missing_references == ["pred_t0"]
    assert "FAIL pred_t0" in report.summary() and "not stored in the case file" in report.summary()
