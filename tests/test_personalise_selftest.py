"""`r3dp doctor --selftest`'s personalise part: ``personalise --preset tiny`` (cut to a few steps a stage) on the
Talk3D stand-ins and a talking video of the example photo, on the CPU, with no models folder (the stand-in
landmarker) — nothing downloaded, nothing written outside a temporary folder."""

from __future__ import annotations

import math
import time

from r3dp_core.pipeline.personalise_selftest import SELFTEST_SECONDS, SELFTEST_STEPS, run_personalise_selftest


def test_the_personalise_selftest_trains_and_reads_back_a_tiny_persona(tmp_path, capsys):
    empty = tmp_path / "no_models"
    empty.mkdir()
    lines: list[str] = []
    started = time.perf_counter()
    result = run_personalise_selftest(device="cpu", models_dir=empty, log=lines.append)
    wall = time.perf_counter() - started
    with capsys.disabled():
        print(f"\npersonalise self-test: {wall:.1f} s wall ({result.summary()})")

    assert result.frames == round(25 * SELFTEST_SECONDS) == 150        # the persona read back, its tracks
    assert result.steps == SELFTEST_STEPS
    assert math.isfinite(result.psnr) and math.isfinite(result.psnr_at_start)
    assert result.landmarks == "stand-in" and result.device == "cpu"
    assert any("blink track is 0" in note for note in result.notes)    # the stand-in landmarker has no blend shapes
    assert any("writing the Talk3D stand-ins" in line for line in lines)
    summary = result.summary()
    assert f"{SELFTEST_STEPS} U-Net steps" in summary and "held-out PSNR" in summary
    assert list(empty.iterdir()) == []
