"""Run an r3dp stage on a parity case and compare it with the official reference."""

from __future__ import annotations

import importlib
import re
import time
from pathlib import Path

import torch

from .case import ParityCase
from .compare import Report, channel_stats_checks, compare_tensor, mask_agreement, parse_view, pixel_agreement

#: The stages the shared parity format defines; each has ``r3dp_core.parity.stage_<name>.run``.
STAGES = ("i2p", "motion_adapter", "volume_render", "htbsr", "full_forward", "a2m_vae",
          "geom_3dmm_forward", "geom_camera", "geom_fit_image", "geom_fit_video", "geom_secc",
          "t3d_audio_features", "t3d_tokens", "t3d_deltaplane", "t3d_bicubic", "t3d_eg3d")
_EXCUSE_IN_RULE = re.compile(r"excuse_tol\s+([\d.eE+-]+)")


def stage_module(stage: str):
    """The module implementing ``run(case) -> {name: full tensor}`` for ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown parity stage {stage!r}; known stages: {', '.join(STAGES)}")
    return importlib.import_module(f"{__package__}.stage_{stage}")


def _variants(name: str, outputs: dict[str, torch.Tensor]) -> list[str]:
    """The stage's outputs for reference ``name``: ``name`` itself and ``name@path``, one per code path checked."""
    return [key for key in outputs if key == name or key.startswith(name + "@")]


def _compare(case: ParityCase, name: str, key: str, got: torch.Tensor, ref: torch.Tensor, tolerance: dict | None):
    """Elementwise check, or the per-image pixel metric where the sidecar gives ``n_bad_max`` (rasterised maps)."""
    if tolerance is None or "n_bad_max" not in tolerance:
        return compare_tensor(name, key, got, ref, tolerance)
    quirks = case.quirk_pixels(name)
    if "atol" not in tolerance:
        return mask_agreement(name, key, got, ref, int(tolerance["n_bad_max"]), quirks)
    if "excuse_tol" not in tolerance and (m := _EXCUSE_IN_RULE.search(tolerance.get("rule", ""))):
        tolerance = {**tolerance, "excuse_tol": float(m.group(1))}
    return pixel_agreement(name, key, got, ref, tolerance, quirks)


def check_outputs(case: ParityCase, outputs: dict[str, torch.Tensor]) -> Report:
    """Compare every stored output/intermediate that has a reference with the stage's full tensors.

    A stage may produce one reference from several code paths, as ``name@path`` outputs; each is checked.
    """
    report = Report(case=case.path.name)
    for name, info in case.tensors_meta.items():
        role = info.get("role")
        if role not in ("output", "intermediate"):
            continue
        stored = info.get("stored", {})
        if not stored.get("keys"):
            continue  # documented as derivable from another checked tensor; nothing stored to compare
        keys = [k for k in stored["keys"] if k in case.stored]
        # a reference the sidecar lists but the file lacks is a broken case, not a pass
        report.missing_references += [k for k in stored["keys"] if k not in case.stored]
        variants = _variants(name, outputs)
        if not variants:
            (report.missing_outputs if role == "output" else report.unchecked).append(name)
            continue
        tolerance = info.get("suggested_tolerance")
        slices = stored.get("slices", {})
        for variant in variants:
            got = outputs[variant]
            path = variant[len(name):]
            for key in keys:
                view = parse_view(slices.get(key, stored.get("crop", "full")))
                report.checks.append(_compare(case, name, key + path, view(got), case.stored[key], tolerance))
            if stored.get("mode") == "planes":
                report.checks.extend(channel_stats_checks(name, got, info, tolerance))
    return report


def run_case(path: str | Path) -> Report:
    """Load a case, run the matching r3dp stage on its inputs (float32, CPU) and compare."""
    case = ParityCase.load(path)
    module = stage_module(case.stage)
    start = time.perf_counter()
    # Stages that optimise (the 3DMM fits) declare NEEDS_GRAD; everything else runs without autograd.
    with torch.inference_mode(not getattr(module, "NEEDS_GRAD", False)):
        outputs = module.run(case)
    report = check_outputs(case, outputs)
    report.seconds = time.perf_counter() - start
    return report
