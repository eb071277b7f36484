"""``r3dp personalise`` end to end on the tiny preset: a synthetic talking video made from a real face photo, the
stand-in Talk3D models (tiny generator, tiny wav2vec2) and the real MediaPipe landmarker, on the CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from r3dp_core.cli import main
from r3dp_core.standins import write_talk3d_models
from r3dp_core.talk3d.persona import read_persona
from r3dp_core.talk3d.personalise.training import read_loss_log
from tests.fakes.talking_video import make_talking_video

SHARED = Path(__file__).resolve().parents[2] / "shared"
LANDMARKER = SHARED / "models" / "face_landmarker.task"
pytestmark = pytest.mark.skipif(not LANDMARKER.exists(), reason="needs ../shared/models/face_landmarker.task")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("personalise")
    models = folder / "models"
    write_talk3d_models(models)
    shutil.copy(LANDMARKER, models / "face_landmarker.task")
    video = folder / "person.mp4"
    make_talking_video(video, 7.0)
    other = folder / "other.mp4"
    make_talking_video(other, 6.0, seed=1)
    return {"models": models, "video": video, "other": other, "folder": folder}


def _personalise(inputs, out: Path, *extra: str, video: Path | None = None) -> int:
    return main(["personalise", "--video", str(video or inputs["video"]), "--out", str(out), "--preset", "tiny",
                 "--models-dir", str(inputs["models"]), "--device", "cpu", *extra])


def test_tiny_persona_trains_improves_on_held_out_frames_and_resumes(inputs, capsys):
    out = inputs["folder"] / "persona"
    assert _personalise(inputs, out, "--steps", "40") == 0
    printed = capsys.readouterr()
    assert "A persona is a person's likeness" in printed.err                  # the consent note
    assert "wrote persona" in printed.out and "U-Net step 40" in printed.out

    metrics = json.loads((out / "metrics.json").read_text())
    heldout = metrics["heldout"]
    assert metrics["step"] == 40
    assert {"psnr", "ssim", "psnr_at_start", "ssim_at_start", "psnr_without_delta",
            "mouth_landmark_distance"} <= set(heldout)
    assert heldout["psnr"] > heldout["psnr_at_start"], heldout
    assert not {"lpips", "sync", "identity"} & set(heldout)                   # no loss networks installed

    persona = read_persona(out)
    info = persona.info
    assert info["preset"] == "tiny" and info["architecture"] == "tiny" and info["steps"]["unet"] == 40
    assert info["source_video"]["sha256"] and info["source_video"]["path"].endswith("person.mp4")
    assert info["split"]["train_frames"] == 175 * 10 // 11 and info["loss_terms"] == ["l1", "mouth_l2"]
    assert any("GFPGAN" in d for d in info["deviations"]) and any("MediaPipe" in d for d in info["deviations"])
    frames = persona.num_frames
    assert frames == 175
    assert persona.tracks["similarity"].shape == (frames, 2, 3) and persona.tracks["head_angles"].shape == (frames, 3)
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_000020.png", "step_000040.png"]
    with safe_open(str(out / "training" / "checkpoint.safetensors"), "pt") as handle:
        assert json.loads(handle.metadata()["state"])["step"] == 40
        assert "rng_state" in handle.keys() and any(k.startswith("optimizer.") for k in handle.keys())

    assert _personalise(inputs, out, "--steps", "60") == 0
    printed = capsys.readouterr()
    assert "resumed from the checkpoint at U-Net step 40 (continuing to 60)" in printed.err
    assert "phase A: reusing" in printed.err
    assert "U-Net step 60 (resumed from step 40)" in printed.out
    assert json.loads((out / "metrics.json").read_text())["step"] == 60
    assert [entry["step"] for entry in read_loss_log(out / "training")] == list(range(1, 61))
    assert read_persona(out).info["steps"]["unet"] == 60


def test_a_folder_of_another_video_or_preset_is_refused_unless_restart(inputs, capsys):
    out = inputs["folder"] / "persona"
    if not (out / "personalise.json").exists():
        pytest.skip("runs after the training test")
    before = (out / "talk3d.safetensors").stat().st_mtime_ns
    assert _personalise(inputs, out, "--steps", "2", video=inputs["other"]) == 2
    error = capsys.readouterr().err
    assert "holds a persona trained from other input" in error and "--restart" in error
    assert (out / "talk3d.safetensors").stat().st_mtime_ns == before                # nothing touched

    assert main(["personalise", "--video", str(inputs["video"]), "--out", str(out), "--preset", "fast",
                 "--models-dir", str(inputs["models"])]) == 2
    assert "preset 'tiny' → 'fast'" in capsys.readouterr().err


def test_bad_options_are_refused_before_any_work(inputs, capsys, tmp_path):
    assert _personalise(inputs, tmp_path / "p", "--steps", "0") == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert _personalise(inputs, tmp_path / "p", video=tmp_path / "missing.mp4") == 2
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
