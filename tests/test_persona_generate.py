"""``r3dp generate --persona`` and ``r3dp_core.talk3d.animate`` (issue #27) on a stand-in tiny persona: frame count
and AAC audio of both outputs, deterministic chunk-independent frames, ping-pong source frames, blink and head-token
modes, the yaw sign shared with the one-shot path, paste-back exact outside its mask, the source-video hash check,
dry-run and the refusals."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from r3dp_core.audio.io import load_sound
from r3dp_core.cli import main
from r3dp_core.errors import InputError
from r3dp_core.standins import write_tiny_wav2vec2, write_wav
from r3dp_core.talk3d import animate
from r3dp_core.talk3d.audio_features import load_wav2vec2_folder
from r3dp_core.talk3d.standin_persona import standin_sound, write_source_video, write_standin_persona
from r3dp_core.video_io import probe_video

SPEECH_SECONDS = 3.3          # 82 frames: the 50-frame training video forward, then backward
FRAMES = round(25 * SPEECH_SECONDS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("persona_generate")
    models = folder / "models"
    wav2vec2 = write_tiny_wav2vec2(models)
    persona_dir = write_standin_persona(folder / "anna", seconds=2.0)
    speech = folder / "speech.wav"
    write_wav(speech, standin_sound(SPEECH_SECONDS), 16000)
    persona = animate.load_persona_model(persona_dir, "cpu")
    model = load_wav2vec2_folder(wav2vec2)
    drive = animate.drive_from_speech(persona, load_sound(speech), model, head_tokens="replay")
    return {"folder": folder, "models": models, "persona_dir": persona_dir, "speech": speech, "persona": persona,
            "wav2vec2": model, "drive": drive}


def _generate(setup, out: Path, *extra: str) -> int:
    return main(["generate", "--persona", str(setup["persona_dir"]), "--audio", str(setup["speech"]), "--out",
                 str(out), "--models-dir", str(setup["models"]), "--device", "cpu", *extra])


def _audio_codec(path: Path) -> str:
    import av

    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.name


@pytest.mark.parametrize(("output", "size"), [("crop", (64, 64)), ("video", (128, 96))])
def test_generate_persona_writes_the_speech_length_with_aac(setup, capsys, output, size):
    out = setup["folder"] / f"{output}.mp4"
    assert _generate(setup, out, "--output", output, "--chunk-size", "16") == 0
    assert f"wrote {out}: {FRAMES} frames" in capsys.readouterr().out
    info = probe_video(out)
    assert info["frames"] == FRAMES and info["fps"] == 25 and (info["width"], info["height"]) == size
    assert abs(info["audio_seconds"] - SPEECH_SECONDS) < 0.05 and _audio_codec(out) == "aac"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{output}.")]   # atomic: no partial left


def test_frames_are_deterministic_per_seed_and_independent_of_the_chunk_size(setup):
    persona, drive = setup["persona"], setup["drive"]
    cameras = animate.persona_cameras(persona, drive, "replay")
    frames = list(range(0, 24))

    def render(chunk, seed):
        return torch.cat(list(animate.persona_frames(persona, drive, cameras, seed=seed, chunk=chunk, frames=frames)))

    first = render(8, 3)
    assert first.shape == (24, 3, 64, 64) and first.abs().max() <= 1
    assert torch.equal(first, render(8, 3))
    torch.testing.assert_close(render(5, 3), first, atol=1e-5, rtol=0)
    assert (render(8, 4) - first).abs().max() > 1e-4        # the renderer noise follows the seed


def test_source_frames_play_forward_then_backward(setup):
    assert animate.ping_pong(10, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert animate.ping_pong(3, 1).tolist() == [0, 0, 0]
    drive = setup["drive"]
    assert drive.num_frames == FRAMES and drive.audio_features.shape == (FRAMES, 16, 44)
    assert drive.source_frames[:50].tolist() == list(range(50))
    assert drive.source_frames[50:].tolist() == list(range(48, 48 - (FRAMES - 50), -1))


def test_blink_and_head_token_modes(setup):
    from r3dp_core.geometry.blink import blink_schedule

    persona, sound, model = setup["persona"], load_sound(setup["speech"]), setup["wav2vec2"]
    drives = {mode: animate.drive_from_speech(persona, sound, model, blink=mode, seed=7)
              for mode in animate.BLINK_MODES}
    torch.testing.assert_close(drives["schedule"].eye, 2 * blink_schedule(FRAMES, seed=7).closure)
    assert drives["schedule"].eye.max() > 1.9
    torch.testing.assert_close(drives["replay"].eye, persona.tracks["blink"][drives["replay"].source_frames])
    assert not drives["none"].eye.any()
    neutral = drives["none"]
    assert torch.allclose(neutral.head_angles, persona.tracks["head_angles"].mean(0).expand(FRAMES, 3))
    replay = setup["drive"]
    torch.testing.assert_close(replay.landmarks, persona.tracks["landmarks"][replay.source_frames])
    with pytest.raises(InputError, match="Unknown blink mode"):
        animate.drive_from_speech(persona, sound, model, blink="sometimes")


def test_a_yaw_keyframe_turns_both_families_the_same_way(setup):
    """+15° yaw keyframe: the one-shot camera (geometry.camera) and the persona's LookAt camera move to the same
    side, by the same angle (the camera position's x sign and size)."""
    from types import SimpleNamespace

    from r3dp_core.pipeline.persona import persona_head_pose
    from r3dp_core.pipeline.pose import PoseRecipe, resolve_pose
    from r3dp_core.talk3d.eg3d_camera import lookat_cameras

    persona, drive = setup["persona"], setup["drive"]
    recipe = PoseRecipe(mode="keyframes", keyframes="0: 0, 0; 1: 15, 0", easing="linear", pose_smoothing=1)
    motion = SimpleNamespace(num_frames=FRAMES, fps=25.0, audio=None, duration_s=FRAMES / 25, euler=None, trans=None)
    photo = SimpleNamespace(euler=torch.zeros(1, 3), trans=torch.zeros(1, 3), face_index=None)
    one_shot = resolve_pose(recipe, photo, motion).cameras()
    x_one_shot = one_shot[:, 3] / one_shot[:, [3, 7, 11]].norm(dim=1)
    cameras = animate.persona_cameras(persona, drive, persona_head_pose(recipe, persona, drive))
    lookat = lookat_cameras(cameras[:, 0], cameras[:, 1])
    x_persona = lookat[:, 3] / lookat[:, [3, 7, 11]].norm(dim=1)
    turn_one_shot, turn_persona = x_one_shot[25] - x_one_shot[0], x_persona[25] - x_persona[0]
    assert turn_one_shot.abs() > 0.2 and torch.sign(turn_one_shot) == torch.sign(turn_persona)
    yaw_offset = cameras[25, 0] - cameras[0, 0]
    assert math.isclose(abs(float(yaw_offset)), math.radians(15), rel_tol=0.02)
    # the raw mapping: a one-shot camera and the persona camera of the same pose look from the same direction
    euler = torch.tensor([[0.0, math.radians(15), 0.0], [math.radians(-10), math.radians(-20), 0.3]])
    from r3dp_core.geometry.camera import eg3d_cameras

    centre = eg3d_cameras(euler, torch.zeros(2, 3))[:, [3, 7, 11]] - torch.tensor([0.0, 0.006, 0.161])
    yaw_pitch = animate.euler_to_yaw_pitch(euler)
    origin = lookat_cameras(yaw_pitch[:, 0], yaw_pitch[:, 1])[:, [3, 7, 11]]
    no_roll = eg3d_cameras(euler * torch.tensor([1.0, 1.0, 0.0]), torch.zeros(2, 3))[:, [3, 7, 11]]
    no_roll = no_roll - torch.tensor([0.0, 0.006, 0.161])
    torch.testing.assert_close(origin / origin.norm(dim=1, keepdim=True), no_roll / no_roll.norm(dim=1, keepdim=True),
                               atol=1e-5, rtol=0)
    assert centre[0, 0] < 0 and origin[0, 0] < 0
    torch.testing.assert_close(animate.yaw_pitch_to_euler(yaw_pitch), euler * torch.tensor([1.0, 1.0, 0.0]),
                               atol=1e-5, rtol=0)


def test_paste_back_changes_only_the_masked_face(setup):
    import cv2

    from r3dp_core.talk3d.personalise.video_frames import frames_25fps

    persona, drive = setup["persona"], setup["drive"]
    count = 60                                           # 50 forward, then 10 backward
    sub = animate.PersonaDrive(drive.audio_features[:count], drive.eye[:count], drive.head_angles[:count],
                               drive.landmarks[:count], drive.source_frames[:count], drive.sound)
    cameras = animate.persona_cameras(persona, sub, "replay")
    pasted = np.concatenate(list(animate.paste_into_source(
        persona, sub, animate.persona_frames(persona, sub, cameras, chunk=16))))
    video = persona.source_video()
    source = np.concatenate(list(frames_25fps(video)))
    mask = animate.face_mask(persona.image_size)
    assert pasted.shape == (count, 96, 128, 3)
    for i in (0, 30, 49, 50, 59):
        frame = int(sub.source_frames[i])
        inverse = cv2.invertAffineTransform(persona.tracks["similarity"][frame].numpy().astype(np.float64))
        alpha = cv2.warpAffine(mask, inverse, (128, 96), flags=cv2.INTER_LINEAR, borderValue=0)
        outside = alpha == 0
        assert outside.mean() > 0.2 and (~outside).mean() > 0.1
        assert np.array_equal(pasted[i][outside], source[frame][outside]), i
        assert np.abs(pasted[i][~outside].astype(int) - source[frame][~outside]).mean() > 1


def test_the_source_video_is_checked_by_its_hash(setup, tmp_path):
    info = setup["persona"].info
    stored = Path(info["source_video"]["path"])
    copy = tmp_path / "copy.mp4"
    shutil.copy(stored, copy)
    assert animate.find_source_video(info, copy) == copy
    other = tmp_path / "other.mp4"
    write_source_video(other, 2.0, seed=5)
    with pytest.raises(InputError, match="is not the video persona anna was trained from"):
        animate.find_source_video(info, other)
    moved = {**info, "source_video": {**info["source_video"], "path": str(tmp_path / "gone.mp4")}}
    with pytest.raises(InputError, match="not there any more.*Pass the training video with --video"):
        animate.find_source_video(moved, None)
    with pytest.raises(InputError, match="has no source video.*--output crop"):
        animate.find_source_video({"name": "x"}, None)


def test_wrong_or_missing_source_video_is_refused_before_rendering(setup, tmp_path, capsys):
    other = write_source_video(tmp_path / "other.mp4", 2.0, seed=5)
    out = tmp_path / "o.mp4"
    assert _generate(setup, out, "--output", "video", "--video", str(other)) == 2
    assert "is not the video persona anna was trained from" in capsys.readouterr().err and not out.exists()
    moved = tmp_path / "moved"
    shutil.copytree(setup["persona_dir"], moved)
    text = (moved / "persona.json").read_text().replace(str(Path(setup["persona"].info["source_video"]["path"])),
                                                        str(tmp_path / "gone.mp4"))
    (moved / "persona.json").write_text(text)
    code = main(["generate", "--persona", str(moved), "--audio", str(setup["speech"]), "--out", str(out),
                 "--output", "video", "--models-dir", str(setup["models"]), "--dry-run"])
    assert code == 2 and "Pass the training video with --video" in capsys.readouterr().err


def test_dry_run_describes_without_loading(setup, capsys, monkeypatch):
    monkeypatch.setattr(animate, "load_persona_model", lambda *a, **k: pytest.fail("dry-run loaded the persona"))
    out = setup["folder"] / "dry.mp4"
    assert _generate(setup, out, "--output", "video", "--dry-run", "--blink-source", "replay") == 0
    printed = capsys.readouterr().out
    assert f"-> {FRAMES} frames at 25 fps" in printed and "tiny architecture, 50 training frames" in printed
    assert "camera     replay" in printed and "blink replay" in printed and "hash checked" in printed
    assert "dry run: inputs are valid" in printed and not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--image", "photo.png"], "--persona and --image are exclusive"),
    (["--output", "video", "--camera", "orbit"], "--camera orbit would not line up"),
    (["--output", "photo"], "--output photo is not a persona output"),
    (["--camera", "driving"], "cannot follow a driving head pose"),
    (["--pose-video", "v.mp4"], "--pose-video is a driving head pose"),
])
def test_refusals(setup, capsys, extra, message):
    assert _generate(setup, setup["folder"] / "refused.mp4", "--dry-run", *extra) == 2
    assert message in capsys.readouterr().err


def test_a_photo_job_refuses_persona_only_modes(setup, capsys):
    assert main(["generate", "--out", "x.mp4", "--audio", "a.wav"]) == 2
    assert "Give --image (a portrait photo to animate) or --persona" in capsys.readouterr().err
    from r3dp_core.pipeline.admission import needed_models
    from r3dp_core.pipeline.request import GenerateRequest
    from r3dp_core.pipeline.validation import _check_options

    assert needed_models(GenerateRequest(persona=Path("p"), out=Path("o.mp4"))) == ["wav2vec2"]
    for change, message in (({"output": "video"}, "--output video pastes a persona"),
                            ({"camera": "replay"}, "--camera replay replays a persona")):
        with pytest.raises(InputError, match=message):
            _check_options(GenerateRequest(image=Path("p.png"), out=Path("o.mp4"), audio=Path("a.wav"), **change))


def test_batch_rows_may_name_a_persona(setup, tmp_path, capsys):
    import json

    jobs = tmp_path / "jobs.csv"
    jobs.write_text("persona,audio,out,output,seed\n"
                    f"{setup['persona_dir']},{setup['speech']},crop.mp4,crop,1\n"
                    f"{setup['persona_dir']},{setup['speech']},video.mp4,video,2\n"
                    f"{setup['persona_dir']},{setup['speech']},bad.mp4,photo,3\n")
    code = main(["batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--models-dir", str(setup["models"]),
                 "--device", "cpu"])
    assert "2 done, 1 failed" in capsys.readouterr().out
    results = {Path(r["output"]).name: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text()
                                                      .splitlines()) if r.get("output")}
    assert code != 0 and results["crop.mp4"]["status"] == "done" and results["video.mp4"]["status"] == "done"
    assert results["bad.mp4"]["status"] == "failed" and "not a persona output" in results["bad.mp4"]["error"]
    assert probe_video(tmp_path / "out" / "video.mp4")["frames"] == FRAMES
