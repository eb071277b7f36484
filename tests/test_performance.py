"""The fast inference path (folded styles, cached portrait work, batched frames, channels-last, autocast) against
the straightforward float32 frame-by-frame path, and the pipeline benchmark's JSON."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from r3dp_core.device import cpu_has_native_bfloat16
from r3dp_core.errors import R3DPError
from r3dp_core.metrics import psnr
from r3dp_core.models.htbsr import HTBSRReference
from r3dp_core.models.layers.eg3d import bias_act
from r3dp_core.models.layers.stylegan2 import SynthesisLayer, upsampling_conv2d
from r3dp_core.models.torso import TorsoReference
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.synthetic_clip import model_factory, synthetic_clip
from r3dp_core.performance import (
    COMPILED_STAGES,
    LOW_PRECISION_STAGES,
    compile_forward,
    map_tensors,
    optimize_for_inference,
)
from r3dp_core.pipeline.frame_chain import composite_source, plane_source, render_source
from r3dp_core.pipeline.stages import make_avatar
from r3dp_core.pipeline.stream import iterate_chunks
from r3dp_core.render.noise import frame_noise

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = REPO_ROOT / "benchmarks" / "bench_pipeline.py"


def stream_images(model, clip, batch: int, cano_planes: torch.Tensor | None = None) -> torch.Tensor:
    """Every frame of ``clip`` through the frame chain's stage sources, ``batch`` frames per chunk."""
    with torch.inference_mode():
        avatar = clip.avatar(cano_planes) if cano_planes is not None else make_avatar(model, clip.avatar())
        planes = plane_source(model, avatar, clip.secc_frames())
        renders = render_source(model, planes, clip.cameras, seed=7)
        frames = composite_source(model, avatar, renders, clip.keypoints())
        return torch.cat([out.image for _, _, out in iterate_chunks(frames, batch)])


def frame_by_frame_images(model, clip) -> torch.Tensor:
    """The official loop: ``model.forward`` per frame, canonical planes cached, everything else recomputed."""
    config = model.config.render
    images = []
    with torch.inference_mode():
        cano_planes = model.canonical_planes(clip.head)
        for i in range(clip.num_frames):
            noise = frame_noise(range(i, i + 1), config.resolution ** 2, config.num_coarse_samples,
                                config.num_fine_samples, seed=7)
            out = model(clip.head, clip.cameras[i:i + 1], clip.cano_secc, clip.src_secc, clip.secc[i:i + 1],
                        clip.torso, clip.background, clip.segmap, clip.kp_source, clip.kp_driving[i:i + 1],
                        cano_planes=cano_planes, noise=noise)
            images.append(out.image)
    return torch.cat(images)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_float32_stream_equals_the_frame_by_frame_reference(channels_last):
    build = model_factory("small", None)
    clip = synthetic_clip("small", 3, None)
    reference = frame_by_frame_images(build(torch.device("cpu")), clip)
    model = optimize_for_inference(build(torch.device("cpu")), torch.float32, channels_last=channels_last)
    # Folded styles, SR reference computed once, frames in chunks of 2 (one full chunk, one partial).
    fast = stream_images(model, clip, batch=2)
    assert fast.shape == reference.shape == (3, 3, 64, 64)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=0)
    if channels_last:
        weight = model.htbsr.fuse_head_torso_convs[0].weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        conv3d = model.htbsr.torso_model.motion_field_estimator.tgt_head_fuser.weight
        assert conv3d.is_contiguous(memory_format=torch.channels_last_3d) and not conv3d.is_contiguous()


def test_optimize_keeps_the_state_dict_folds_styles_and_refuses_a_second_pass():
    build = model_factory("small", None)
    plain = build(torch.device("cpu"))
    model = optimize_for_inference(build(torch.device("cpu")), torch.bfloat16, channels_last=True)
    before, after = plain.state_dict(), model.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.htbsr.block1.conv1.folded_weight is not None
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with pytest.raises(R3DPError, match="already optimized"):
        optimize_for_inference(model, torch.bfloat16)
    with pytest.raises(R3DPError, match="float32, bfloat16 or float16"):
        optimize_for_inference(build(torch.device("cpu")), torch.float64)


def test_low_precision_stages_compute_in_bfloat16_and_hand_on_float32():
    build = model_factory("small", None)
    clip = synthetic_clip("small", 2, None)
    model = optimize_for_inference(build(torch.device("cpu")), torch.bfloat16)
    seen = {}

    def record(name):
        return lambda _module, _inputs, out: seen.__setitem__(name, out.dtype)

    # Hooks on modules inside the stages see the autocast dtype; the stages themselves return float32.
    model.motion_adapter.to_plane_cnn.register_forward_hook(record("inside"))
    with torch.inference_mode():
        residual = model.motion_adapter(clip.cano_secc, clip.src_secc, clip.secc)
    assert seen["inside"] == torch.bfloat16 and residual.dtype == torch.float32
    # The renderer between MA and SR stays float32: its output is float32 without any cast.
    images = stream_images(model, clip, batch=2)
    assert images.dtype == torch.float32
    assert set(LOW_PRECISION_STAGES) >= {"secc_img2plane_backbone", "superresolution.block1"}


def test_compile_falls_back_to_eager_with_a_warning_where_torch_compile_is_unavailable(monkeypatch, caplog):
    def unavailable(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    build = model_factory("small", None)
    clip = synthetic_clip("small", 2, None)
    eager = stream_images(optimize_for_inference(build(torch.device("cpu")), torch.float32), clip, batch=2)
    monkeypatch.setattr(torch, "compile", unavailable)
    with caplog.at_level(logging.WARNING, logger="r3dp_core.performance"):
        model = optimize_for_inference(build(torch.device("cpu")), torch.float32, compile=True)
    assert len(caplog.records) == len(COMPILED_STAGES)
    assert "torch.compile is not available here (torch.compile is not supported" in caplog.text
    assert torch.equal(stream_images(model, clip, batch=2), eager)
    with pytest.raises(R3DPError, match="Unknown torch.compile mode 'fast'"):
        optimize_for_inference(build(torch.device("cpu")), torch.float32, compile="fast")


def test_a_compilation_that_fails_at_the_first_call_falls_back_to_eager(monkeypatch, caplog):
    """torch.compile compiles lazily: a backend failure (no C++ compiler, no Triton) surfaces in the first call."""
    calls = []

    def broken_backend(graph, example_inputs):
        calls.append(len(example_inputs))
        raise RuntimeError("no working C++ compiler")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode: real_compile(fn, backend=broken_backend))
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    expected = layer(x)
    with caplog.at_level(logging.WARNING, logger="r3dp_core.performance"):
        compile_forward(layer, "layer", "default")
        first, second = layer(x), layer(x)
    assert len(calls) == 1 and torch.equal(first, expected) and torch.equal(second, expected)
    assert len(caplog.records) == 1 and "torch.compile failed for layer" in caplog.text
    torch._dynamo.reset()


@pytest.mark.parametrize("up", [1, 2])
def test_synthesis_layer_fuses_its_bias_and_activates_in_place_only_without_autograd(up):
    torch.manual_seed(0)
    layer = SynthesisLayer(5, 4, w_dim=6, resolution=8, up=up)
    with torch.no_grad():
        layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 8, 8)
    weight = layer.constant_style_weight()
    plain = upsampling_conv2d(x, weight, layer.resample_filter) if up == 2 else F.conv2d(x, weight, padding=1)
    expected = bias_act(plain, layer.bias, act="lrelu")               # separate bias, lrelu, gain
    with torch.inference_mode():
        fast = layer(x)                                               # bias in the convolution, in-place lrelu
        per_sample = layer(x, torch.ones(2, 6))                       # grouped path, bias after the reshape
    torch.testing.assert_close(fast, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(per_sample, expected, rtol=1e-5, atol=1e-5)
    # With autograd recording, the activation is out of place and gradients reach the input.
    x.requires_grad_(True)
    traced = layer(x)
    traced.sum().backward()
    torch.testing.assert_close(traced.detach(), expected, rtol=1e-6, atol=1e-6)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_map_tensors_reaches_tensors_in_nested_results_and_keeps_their_containers():
    class Pair(NamedTuple):
        a: torch.Tensor
        b: torch.Tensor

    half, index = torch.ones(2, dtype=torch.bfloat16), torch.arange(3)
    reference = HTBSRReference(TorsoReference(half, half, torch.zeros(1, 4, 3)), half, half)
    out = map_tensors({"pair": Pair(half, index), "list": [half], "ref": reference, "n": 3},
                      lambda t: t.float() if t.dtype == torch.bfloat16 else t)
    assert out["n"] == 3
    assert isinstance(out["pair"], Pair) and out["pair"].a.dtype == torch.float32
    assert out["pair"].b.dtype == torch.int64 and out["list"][0].dtype == torch.float32
    assert isinstance(out["ref"], HTBSRReference) and out["ref"].torso.features.dtype == torch.float32
    assert out["ref"].torso.keypoints.dtype == torch.float32 and out["ref"].bg_features.dtype == torch.float32


@pytest.mark.skipif(not cpu_has_native_bfloat16(),
                    reason="this CPU has no native bf16 (AVX512-BF16/AMX): emulated, the full-size model runs for "
                           "tens of minutes; the small-model bf16 tests still run")
def test_bfloat16_fast_path_stays_above_40_db_of_float32_on_the_parity_frame(parity_dir, synth_state_dict):
    """The full-size model on the parity frame (MA → render → HTB-SR, canonical planes from the volume-render
    case): CPU bfloat16 autocast against float32."""
    synth_state_dict("secc2plane_torso")                    # the session's cached weights
    build = model_factory("full", parity_dir)
    clip = synthetic_clip("full", 1, parity_dir)
    cano_planes = ParityCase.load(parity_dir / "case_volume_render.safetensors").tensor("planes")
    full = stream_images(optimize_for_inference(build(torch.device("cpu")), torch.float32), clip, 1, cano_planes)
    fast = stream_images(optimize_for_inference(build(torch.device("cpu")), torch.bfloat16), clip, 1, cano_planes)
    assert fast.shape == (1, 3, 512, 512) and fast.dtype == torch.float32
    value = psnr(fast, full)
    assert 40 <= value < 90, f"bf16 vs fp32 PSNR {value:.1f} dB"    # < 90: bf16 really ran


def test_benchmark_prints_one_json_object_per_configuration():
    result = subprocess.run([sys.executable, str(BENCHMARK), "--model", "small", "--frames", "2", "--batch", "2",
                             "--dtype", "fp32,bf16", "--threads", "1", "--json"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["path"], r["dtype"], r["batch"]) for r in rows] == [("reference", "fp32", 1), ("fast", "fp32", 2),
                                                                 ("fast", "bf16", 2)]
    for row in rows:
        assert row["device"] == "cpu" and row["frames"] == 2 and row["fps"] > 0
        assert set(row["ms_per_frame"]) == {"ma", "render", "sr", "output", "total"}
        assert row["ms_per_frame"]["total"] == pytest.approx(1000 / row["fps"], rel=1e-2)
        assert row["peak_vram_mb"] is None and row["peak_rss_mb"] > 0
        assert row["speedup_vs_reference"] > 0 and row["cpu_time_speedup_vs_reference"] > 0
        assert row["cpu_ms_per_frame"] > 0
    assert rows[0]["speedup_vs_reference"] == 1.0
    assert all(row["ttff_s"] > 0 for row in rows[1:])
