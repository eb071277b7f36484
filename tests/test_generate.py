"""The main job end to end: `r3dp generate` on a models folder of synthetic stand-ins for every official file.

The full-size video model renders one short clip through the CLI (the product's exact path); faster checks of
the same ``run_job`` swap in the tiny configuration of the video model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from r3dp_core import cli
from r3dp_core.device import Precision, resident_mb
from r3dp_core.geometry.blink import blink_schedule
from r3dp_core.geometry.secc import SECCMesh
from r3dp_core.models.secc2plane_torso import Secc2PlaneTorso, tiny_config
from r3dp_core.parity.synthetic_job import face_masks, short_speech, write_models_folder
from r3dp_core.pipeline.admission import admit, load_masks
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.generate import load_job_models, run_job
from r3dp_core.pipeline.request import GenerateRequest
from r3dp_core.pipeline.stages import with_blinks
from r3dp_core.pipeline.validation import validate
from r3dp_core.standins import synthetic_face_model, write_wav
from r3dp_core.video_io import probe_video, read_video_frames

SECONDS = 0.32  # 8 frames at 25 fps


@pytest.fixture(scope="module")
def job(tmp_path_factory, shared_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("generate")
    models = write_models_folder(root / "models", shared_dir)
    portrait = cv2.cvtColor(cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)
    cv2.imwrite(str(root / "portrait.png"), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    samples, rate = short_speech(shared_dir, SECONDS)
    write_wav(root / "speech.wav", samples, rate)
    head, body = face_masks(portrait, models / "face_landmarker.task")
    cv2.imwrite(str(root / "head.png"), head)
    cv2.imwrite(str(root / "body.png"), body)
    return {"root": root, "models": models, "seconds": len(samples) / rate}


def _args(job: dict, out: Path, *extra: str) -> list[str]:
    root = job["root"]
    return ["generate", "--image", str(root / "portrait.png"), "--audio", str(root / "speech.wav"), "--out", str(out),
            "--models-dir", str(job["models"]), "--head-mask", str(root / "head.png"), "--body-mask",
            str(root / "body.png"), "--seed", "3", "--device", "cpu", *extra]


def test_generate_writes_a_playable_mp4_with_the_audio(job, tmp_path, capsys):
    out = tmp_path / "talking.mp4"
    assert cli.main(_args(job, out)) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}: 8 frames" in printed.out and "peak RSS" in printed.out
    assert "rendering 8 frames" in printed.err and "8/8 frames" in printed.err
    info = probe_video(out)
    assert info["frames"] == round(job["seconds"] * 25) == 8
    assert (info["width"], info["height"], info["fps"]) == (512, 512, 25.0)
    # AAC pads to whole 1024-sample frames: the track may be up to one frame (64 ms at 16 kHz) longer
    assert job["seconds"] <= info["audio_seconds"] <= job["seconds"] + 0.07
    frames = np.concatenate([chunk for chunk, _ in read_video_frames(out)])
    assert frames.shape == (8, 512, 512, 3) and frames.std() > 5  # a picture, not a blank frame
    assert np.abs(frames[1:].astype(int) - frames[:-1]).mean() > 0.1  # the face moves
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talking.mp4"]  # no partial files left


@pytest.fixture(scope="module")
def tiny_job(job) -> dict:
    """The job's models with the tiny video model in place of the full-size one (64² frames)."""
    request = GenerateRequest(image=job["root"] / "portrait.png", audio=job["root"] / "speech.wav",
                              out=job["root"] / "unused.mp4", head_mask=job["root"] / "head.png",
                              body_mask=job["root"] / "body.png", seed=3, device="cpu")
    torch.manual_seed(0)
    tiny = Secc2PlaneTorso(tiny_config()).eval().requires_grad_(False)
    models = load_job_models(request, job["models"], Precision.resolve("cpu", "fp32"), video_model=tiny)
    return {"request": request, "models": models, "models_dir": job["models"],
            "inputs": validate(request, job["models"]), "masks": load_masks(request)}


def _run(tiny_job: dict, out: Path, **changes):
    request = dataclasses.replace(tiny_job["request"], out=out, **{k: v for k, v in changes.items()
                                                                  if k not in ("progress", "should_stop")})
    return run_job(request, tiny_job["inputs"], tiny_job["models"], masks=tiny_job["masks"], log=lambda _: None,
                   progress=changes.get("progress"), should_stop=changes.get("should_stop"))


def test_debug_panels_show_source_secc_render_depth_and_final_side_by_side(tiny_job, tmp_path):
    plain = _run(tiny_job, tmp_path / "plain.mp4", chunk_size=3)
    panels = _run(tiny_job, tmp_path / "panels.mp4", chunk_size=3, debug_panels=True)
    assert plain.frames == panels.frames == 8
    final = np.concatenate([chunk for chunk, _ in read_video_frames(plain.path)])
    strip = np.concatenate([chunk for chunk, _ in read_video_frames(panels.path)])
    assert final.shape == (8, 64, 64, 3) and strip.shape == (8, 64, 320, 3)
    # the last panel is the final frame (up to H.264 noise), the first the still source
    assert np.abs(strip[..., 256:, :].astype(int) - final).mean() < 6
    assert np.abs(strip[1:, :, :64].astype(int) - strip[:-1, :, :64]).mean() < 2
    # the SECC panel is mostly the black (−1) background around a colour-coded face
    secc = strip[..., 64:128, :]
    assert (secc.max(-1) < 30).mean() > 0.3 and secc.std() > 10
    # the depth panel is grey, normalised over each frame: from near black to white
    depth = strip[..., 192:256, :].astype(int)
    assert np.abs(depth - depth.mean(-1, keepdims=True)).mean() < 4
    assert depth.min(axis=(1, 2, 3)).max() < 40 and depth.max(axis=(1, 2, 3)).min() > 215


def test_depth_panel_normalises_each_frame_to_grey():
    from r3dp_core.pipeline.stream import depth_panel

    depth = torch.stack([torch.linspace(2.0, 3.0, 16).reshape(1, 4, 4), torch.full((1, 4, 4), 2.5)])
    depth[0, 0, 1, 1] = 4.0  # a far pixel (a ray that misses the head) sets the white end
    panel = depth_panel(depth)
    assert panel.shape == (2, 3, 4, 4)
    assert torch.equal(panel[:, 0], panel[:, 1]) and torch.equal(panel[:, 1], panel[:, 2])
    expected = (depth[0, 0] - 2.0) / 2.0 * 2 - 1
    assert torch.allclose(panel[0, 0], expected, atol=1e-6) and panel[0].min() == -1 and panel[0].max() == 1
    assert torch.equal(panel[1], torch.full((3, 4, 4), -1.0))  # a flat frame: no NaN


def test_interrupt_and_failure_mid_clip_leave_no_output(tiny_job, tmp_path):
    calls = []

    def stop_after_first_chunk():
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_job, tmp_path / "interrupted.mp4", chunk_size=2, should_stop=stop_after_first_chunk)
    assert len(calls) == 2  # stopped before the second chunk was computed

    superresolution = tiny_job["models"].video_model.htbsr
    original = superresolution.render_frames
    seen = []

    def fail_on_third_chunk(*args, **kwargs):
        seen.append(1)
        if len(seen) == 3:
            raise RuntimeError("simulated device failure")
        return original(*args, **kwargs)

    superresolution.render_frames = fail_on_third_chunk
    try:
        with pytest.raises(RuntimeError, match="simulated device failure"):
            _run(tiny_job, tmp_path / "failed.mp4", chunk_size=2)
    finally:
        del superresolution.render_frames
    assert list(tmp_path.iterdir()) == []  # neither output nor a partial file


@pytest.mark.skipif(resident_mb() is None, reason="needs Linux /proc to read resident memory")
def test_two_minute_clip_streams_in_flat_memory(tiny_job, shared_dir, tmp_path):
    """Two minutes of speech through audio → motion and every frame stage, into the mp4: resident memory must
    not grow while 3000 frames stream through. The face mesh is the self-test's small synthetic one with its
    identity and expression bases zeroed: the untrained audio model's expressions (and a fit through random
    landmark correspondences) would crumple any mesh into screen-sized triangles, and rasterising those would
    be all this test measures."""
    seconds = 120.0
    speech, rate = short_speech(shared_dir, 9.0)
    write_wav(tmp_path / "long.wav", np.tile(speech, int(np.ceil(seconds * rate / len(speech))))[: int(seconds * rate)],
              rate)
    request = dataclasses.replace(tiny_job["request"], audio=tmp_path / "long.wav", out=tmp_path / "long.mp4",
                                  chunk_size=16)
    inputs = validate(request, tiny_job["models_dir"])
    grid = synthetic_face_model()
    grid.id_base.zero_()
    grid.exp_base.zero_()
    grid.mean_shape.mul_(0.3)  # a small face: fewer pixels to rasterise per frame
    kit = dataclasses.replace(tiny_job["models"].kit, geometry=FaceGeometry(grid, SECCMesh(grid.triangles,
                                                                                          grid.ncc_code())))
    resident = []
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    trim = getattr(libc, "malloc_trim", None)  # glibc

    def sample(done: int, total: int) -> None:
        if trim is not None:
            trim(0)  # hand freed heap pages back first, so that the sample counts live memory
        resident.append((done, resident_mb()))

    summary = run_job(request, inputs, dataclasses.replace(tiny_job["models"], kit=kit), masks=tiny_job["masks"],
                      progress=sample, log=lambda _: None)
    assert summary.frames == resident[-1][0] == 3000
    info = probe_video(summary.path)
    assert info["frames"] == 3000 and seconds <= info["audio_seconds"] <= seconds + 0.07
    # floors, not medians: without the trim (other allocators) freed blocks of tens of MB are kept or returned from
    # chunk to chunk, so the samples flip between levels and a median follows whichever level a window happens to
    # sample more. Memory that is held for good raises the floor; holding every 64² output frame would add
    # ~140 MB by the end, every SECC image ~9 GB
    early = min(mb for done, mb in resident if 300 <= done < 1000)
    late = min(mb for done, mb in resident if done >= 2250)
    assert late - early < 20, f"resident memory grew by {late - early:.0f} MB over the clip: {resident[::10]}"


def test_video_driven_job_keeps_the_videos_sound_and_blinks(tiny_job, job, tmp_path, monkeypatch):
    from r3dp_core.video_io import VideoWriter

    portrait = cv2.cvtColor(cv2.imread(str(job["root"] / "portrait.png")), cv2.COLOR_BGR2RGB)
    nodding = [cv2.warpAffine(portrait, cv2.getRotationMatrix2D((256, 256), 3.0 * np.sin(i), 1.0), (512, 512),
                              borderMode=cv2.BORDER_REFLECT) for i in range(10)]
    waveform = torch.sin(torch.arange(16000 * 2) / 16000 * 2 * torch.pi * 220)[None, None] * 0.3  # 2 s tone
    with VideoWriter(tmp_path / "driving.mp4", fps=25, audio={"waveform": waveform, "sample_rate": 16000}) as writer:
        writer.write(np.stack(nodding))  # 0.4 s of video, 2 s of sound
    request = dataclasses.replace(tiny_job["request"], audio=None, expression_video=tmp_path / "driving.mp4",
                                  out=tmp_path / "driven.mp4", chunk_size=4)
    seen = _spy_on_frames(monkeypatch)
    summary = run_job(request, validate(request, tiny_job["models_dir"]), tiny_job["models"],
                      masks=tiny_job["masks"], log=lambda _: None)
    info = probe_video(summary.path)
    assert summary.frames == info["frames"] == 10
    assert 0.4 <= info["audio_seconds"] <= 0.4 + 0.07  # the video's own sound, cut to the clip
    # --blink applies to video-driven clips as well (the official pipeline blinks the driving SECC in both cases)
    official = blink_schedule(10, seed=request.seed)
    assert torch.equal(seen["motion"].blink, official.closure)
    assert torch.equal(seen["motion"].blink_edited, official.edited)
    assert with_blinks(seen["motion"], False).blink is None


def _spy_on_frames(monkeypatch) -> dict:
    """Record what ``run_job`` hands to ``talking_frames`` (motion, pose, and the lazy frame source)."""
    from r3dp_core.pipeline import frame_chain

    seen = {}
    original = frame_chain.talking_frames

    def spy(model, kit, avatar, motion, pose, **options):
        frames = original(model, kit, avatar, motion, pose, **options)
        seen.update(avatar=avatar, motion=motion, pose=pose, frames=frames)
        return frames

    monkeypatch.setattr(frame_chain, "talking_frames", spy)
    return seen


def _cli_on_tiny_models(tiny_job, monkeypatch) -> None:
    """``r3dp generate`` runs the real ``run_job`` with the tiny video model in place of the full-size one."""
    from r3dp_core.pipeline import generate as generate_module

    def tiny_generate(request, progress=None, log=print, should_stop=None):
        admitted = admit(request, tiny_job["models_dir"], skip_models=("video_model",))
        return run_job(request, admitted.inputs, tiny_job["models"], masks=admitted.masks, progress=progress,
                       log=lambda _: None, should_stop=should_stop)

    monkeypatch.setattr(generate_module, "generate", tiny_generate)


def test_official_npy_motion_drives_a_clip_from_the_command_line(tiny_job, job, tmp_path, monkeypatch, capsys):
    """The official coefficient dict (key names and shapes of the official tools) drives expressions and pose;
    --no-map-to-init-pose and --head-threshold reach the stages they act in."""
    rng = np.random.default_rng(0)
    t = np.arange(6, dtype=np.float32)
    euler = np.stack([0.02 * np.sin(t), 0.1 * np.sin(t / 2), 0.01 * t], 1).astype(np.float32)
    trans = np.stack([0.01 * t, -0.01 * t, np.full_like(t, 0.3)], 1).astype(np.float32)
    coefficients = {"id": rng.normal(size=(6, 80)).astype(np.float32) * 0.1,
                    "exp": rng.normal(size=(6, 64)).astype(np.float32) * 0.05, "euler": euler, "trans": trans}
    np.save(tmp_path / "official.npy", coefficients)
    _cli_on_tiny_models(tiny_job, monkeypatch)
    seen = _spy_on_frames(monkeypatch)

    out = tmp_path / "from_npy.mp4"
    assert cli.main(_args(job, out, "--motion", str(tmp_path / "official.npy"), "--no-map-to-init-pose",
                          "--head-threshold", "0.7", "--chunk-size", "4")) == 0
    assert f"wrote {out}: 6 frames" in capsys.readouterr().out
    info = probe_video(out)
    assert info["frames"] == 6 and 0.24 <= info["audio_seconds"] <= 0.24 + 0.07  # --audio, cut to the motion
    assert torch.equal(seen["motion"].exp, torch.from_numpy(coefficients["exp"]))
    assert seen["motion"].blink is not None  # --blink (default) applies to file-driven clips too
    assert torch.allclose(seen["pose"].euler, torch.from_numpy(euler))  # the file's pose, not mapped
    assert torch.allclose(seen["pose"].trans, torch.from_numpy(trans))
    assert seen["frames"].head_threshold == 0.7

    # default mapping: the file's pose changes start from the photo's pose
    assert cli.main(_args(job, tmp_path / "mapped.mp4", "--motion", str(tmp_path / "official.npy"))) == 0
    avatar = seen["avatar"]
    assert torch.allclose(seen["pose"].euler[0], avatar.euler[0].to(seen["pose"].euler), atol=1e-6)
    assert torch.allclose(seen["pose"].euler - seen["pose"].euler[:1], torch.from_numpy(euler - euler[:1]), atol=1e-6)
    assert seen["frames"].head_threshold == 0.9

    # expressions only, no audio, no blinks: a silent clip with the photo's pose held
    np.save(tmp_path / "exp_only.npy", {"exp": coefficients["exp"]})
    root = job["root"]
    silent = tmp_path / "silent.mp4"
    assert cli.main(["generate", "--image", str(root / "portrait.png"), "--out", str(silent), "--models-dir",
                     str(job["models"]), "--head-mask", str(root / "head.png"), "--body-mask", str(root / "body.png"),
                     "--device", "cpu", "--motion", str(tmp_path / "exp_only.npy"), "--no-blink",
                     "--camera", "static"]) == 0  # auto would move the head naturally
    info = probe_video(silent)
    assert info["frames"] == 6 and info["audio_seconds"] is None
    assert seen["motion"].blink is None
    assert torch.equal(seen["pose"].euler, avatar.euler[:1].expand(6, 3).to(seen["pose"].euler))


def test_output_photo_pastes_the_clip_into_a_wide_photo(job, tiny_job, tmp_path):
    """``--output photo`` on a 2:1 photo with an odd width: the mp4 has the photo's (even) size, and far from the
    face it shows the photo itself."""
    portrait = cv2.cvtColor(cv2.imread(str(job["root"] / "portrait.png")), cv2.COLOR_BGR2RGB)
    wide = np.pad(portrait, ((0, 0), (300, 225), (0, 0)), mode="edge")          # 1037x512
    cv2.imwrite(str(tmp_path / "wide.png"), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    for name in ("head", "body"):  # the portrait's masks, padded like the photo
        mask = cv2.imread(str(job["root"] / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.pad(mask, ((0, 0), (300, 225))))
    request = dataclasses.replace(tiny_job["request"], image=tmp_path / "wide.png", head_mask=tmp_path / "head.png",
                                  body_mask=tmp_path / "body.png", out=tmp_path / "photo.mp4", output="photo")
    summary = run_job(request, validate(request, job["models"]), tiny_job["models"], masks=load_masks(request),
                      log=lambda _: None)
    info = probe_video(summary.path)
    assert (info["width"], info["height"], info["frames"]) == (1036, 512, 8)
    frames = np.concatenate([chunk for chunk, _ in read_video_frames(summary.path)])
    far = np.s_[:, :, 900:]                                                     # right of the face's square
    assert np.abs(frames[far].astype(int) - wide[None, :, 900:1036]).mean() < 3  # the photo, up to H.264 noise
    assert np.abs(frames[1:, 80:200, 480:580].astype(int) - frames[:-1, 80:200, 480:580]).mean() > 0.1  # moves


@pytest.fixture(scope="module")
def pose_inputs(job, tmp_path_factory) -> dict:
    """A nodding pose video, a green background and an official coefficient file, 8 frames each."""
    from r3dp_core.video_io import VideoWriter

    folder = tmp_path_factory.mktemp("pose_inputs")
    portrait = cv2.cvtColor(cv2.imread(str(job["root"] / "portrait.png")), cv2.COLOR_BGR2RGB)
    nodding = [cv2.warpAffine(portrait, cv2.getRotationMatrix2D((256, 256), 4.0 * np.sin(i), 1.0), (512, 512),
                              borderMode=cv2.BORDER_REFLECT) for i in range(8)]
    with VideoWriter(folder / "nodding.mp4", fps=25) as writer:
        writer.write(np.stack(nodding))
    green = np.zeros((512, 512, 3), np.uint8)
    green[..., 1] = 255
    cv2.imwrite(str(folder / "green.png"), cv2.cvtColor(green, cv2.COLOR_RGB2BGR))
    t = np.arange(8, dtype=np.float32)
    coefficients = {"exp": np.random.default_rng(1).normal(size=(8, 64)).astype(np.float32) * 0.05,
                    "euler": np.stack([0.02 * np.sin(t), 0.1 * np.sin(t / 2), 0.01 * t], 1).astype(np.float32),
                    "trans": np.stack([0.01 * t, -0.01 * t, np.full_like(t, 0.3)], 1).astype(np.float32)}
    np.save(folder / "official.npy", coefficients)
    return {"video": folder / "nodding.mp4", "green": folder / "green.png", "npy": folder / "official.npy",
            "coefficients": coefficients}


def _natural_degrees(job, seed: int, base_euler: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """The natural head motion ``[8,3]`` (radians) the job's speech gives on ``base_euler``, on the 100 Hz grid."""
    from r3dp_core.audio.energy import speech_activity
    from r3dp_core.audio.io import load_audio
    from r3dp_core.geometry.natural_pose import natural_head_motion

    sound = load_audio(job["root"] / "speech.wav")
    activity = speech_activity(sound, 100, int(np.ceil(sound.duration_s * 100)) + 1)  # the whole sound + 1 sample
    return natural_head_motion(8, 25, activity, seed=seed, strength=strength, energy_fps=100,
                               base_euler=base_euler)[:, :3]


def _check_natural(seen, job, inputs):
    assert seen["recipe"].mode == "natural" and seen["recipe"].seed == 3 and seen["pose"].smooth_kernel == 3
    base = seen["avatar"].euler[:1]
    deviation = seen["pose"].euler - base.to(seen["pose"].euler)
    assert torch.allclose(deviation, _natural_degrees(job, 3, base, 0.5), atol=1e-5)
    assert float(deviation.abs().max()) > 0 and torch.allclose(2 * deviation, _natural_degrees(job, 3, base), atol=1e-5)


def _check_orbit(seen, job, inputs):
    from r3dp_core.geometry.camera import orbit_pose

    avatar = seen["avatar"]
    assert seen["pose"].smooth_kernel is None  # --pose-smoothing 1: raw cameras
    path = orbit_pose(avatar.euler[:1], avatar.trans[:1], 8, yaw_deg=20.0)
    assert torch.allclose(seen["pose"].euler - path.euler.to(seen["pose"].euler), _natural_degrees(job, 3, path.euler),
                          atol=1e-5)  # --natural-on-top


def _check_driving(seen, job, inputs):
    from r3dp_core.geometry.camera import driving_pose

    avatar, pose, followed = seen["avatar"], seen["pose"], seen["recipe"].pose_motion
    assert followed is not None and followed.euler.shape == (8, 3) and seen["recipe"].pose_strength == 2.0
    mapped = driving_pose(followed.euler, followed.trans, 8, avatar.euler[:1], avatar.trans[:1])
    assert float((mapped.euler - mapped.euler[:1]).abs().max()) > 1e-3  # the video's nods were fitted
    assert torch.allclose(pose.euler - pose.euler[:1], 2 * (mapped.euler - mapped.euler[:1]).to(pose.euler),
                          atol=1e-5)
    assert torch.allclose(pose.euler[0], avatar.euler[0].to(pose.euler), atol=1e-6)
    frames = np.concatenate([chunk for chunk, _ in read_video_frames(seen["out"])])
    # --bg: the green plate shows behind the person (the untrained tiny model's alpha lets some render through)
    corner = frames[:, :6, :6].reshape(-1, 3).mean(0)
    assert corner[1] > 150 and corner[1] > max(corner[0], corner[2]) + 60, corner


def _check_motion(seen, job, inputs):
    coefficients = inputs["coefficients"]
    assert torch.equal(seen["motion"].exp, torch.from_numpy(coefficients["exp"]))
    assert seen["recipe"].mode == "auto" and seen["recipe"].pose_strength == 0.0
    # auto follows the file's pose, and strength 0 holds it at its first frame: the photo's pose
    assert torch.allclose(seen["pose"].euler, seen["avatar"].euler[:1].expand(8, 3).to(seen["pose"].euler),
                          atol=1e-6)


POSE_OPTIONS = {
    "natural": (lambda inputs: ["--camera", "natural", "--pose-strength", "0.5", "--pose-smoothing", "3"],
                _check_natural),
    "orbit": (lambda inputs: ["--camera", "orbit", "--natural-on-top", "--pose-smoothing", "1"], _check_orbit),
    "driving": (lambda inputs: ["--camera", "driving", "--pose-video", str(inputs["video"]), "--pose-strength", "2",
                                "--bg", str(inputs["green"])], _check_driving),
    "motion": (lambda inputs: ["--motion", str(inputs["npy"]), "--pose-strength", "0"], _check_motion),
}


@pytest.mark.parametrize("case", list(POSE_OPTIONS))
def test_head_pose_options_drive_a_clip_from_the_command_line(case, tiny_job, job, pose_inputs, tmp_path,
                                                               monkeypatch, capsys):
    """Each head-pose option through ``r3dp generate`` into a real ``run_job`` (tiny video model, 8 frames):
    the recipe it builds and the pose the frames are rendered with."""
    from r3dp_core.pipeline import generate as generate_module

    _cli_on_tiny_models(tiny_job, monkeypatch)
    seen = _spy_on_frames(monkeypatch)
    resolve = generate_module.resolve_pose
    monkeypatch.setattr(generate_module, "resolve_pose",
                        lambda recipe, avatar, motion: seen.update(recipe=recipe) or resolve(recipe, avatar, motion))
    extra, check = POSE_OPTIONS[case]
    out = tmp_path / f"{case}.mp4"
    assert cli.main(_args(job, out, *extra(pose_inputs), "--chunk-size", "8")) == 0
    assert f"wrote {out}: 8 frames" in capsys.readouterr().out
    assert probe_video(out)["frames"] == 8
    seen["out"] = out
    check(seen, job, pose_inputs)


def _stereo_speech(shared_dir: Path, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of the shared 44.1 kHz stereo speech from its first loud sample: (``[S,2]`` int16, rate)."""
    import soundfile as sf

    samples, rate = sf.read(shared_dir / "testdata" / "speech_en_44k_stereo.wav", dtype="int16", always_2d=True)
    start = int(np.argmax(np.abs(samples[:, 0]) > 0.1 * np.abs(samples[:, 0]).max()))
    return samples[start:start + int(round(seconds * rate))], rate


@pytest.mark.parametrize("source", ["audio", "motion", "video"])
def test_the_sound_is_decoded_once_per_job_and_muxed_at_its_own_rate(source, tiny_job, job, pose_inputs, shared_dir,
                                                                     tmp_path, monkeypatch):
    """``r3dp generate --camera natural`` (natural head motion reads the sound too) with a 44.1 kHz stereo sound:
    the voice clip (or the expression video's own track) is decoded once in the whole job and converted to
    16 kHz once (speech model, checks and head motion read that one view), and the mp4 carries the sound at its
    own rate and channels: the speech whole, a motion file's or a video's sound cut to the clip."""
    import av
    import soundfile as sf

    from r3dp_core.audio import io as audio_io
    from r3dp_core.video_io import VideoWriter

    samples, rate = _stereo_speech(shared_dir, SECONDS)
    sf.write(tmp_path / "stereo.wav", samples, rate, subtype="PCM_16")
    args = _args(job, tmp_path / "out.mp4", "--camera", "natural", "--chunk-size", "8")
    args[args.index("--audio") + 1] = str(tmp_path / "stereo.wav")
    if source == "motion":
        args += ["--motion", str(pose_inputs["npy"])]
    elif source == "video":  # the video's own sound: no --audio
        nodding = np.concatenate([chunk for chunk, _ in read_video_frames(pose_inputs["video"])])
        with VideoWriter(tmp_path / "talking.mp4", fps=25, audio=audio_io.load_sound(tmp_path / "stereo.wav")) as out:
            out.write(nodding)
        del args[args.index("--audio"):args.index("--audio") + 2]
        args += ["--expression-video", str(tmp_path / "talking.mp4")]
    calls = {"decoded": 0, "converted to 16 kHz": 0}

    def counted(name, function):
        def count(*arguments, **options):
            calls[name] += 1
            return function(*arguments, **options)
        return count

    monkeypatch.setattr(audio_io, "decode_sound", counted("decoded", audio_io.decode_sound))
    monkeypatch.setattr(audio_io, "_convert_to_16k", counted("converted to 16 kHz", audio_io._convert_to_16k))
    _cli_on_tiny_models(tiny_job, monkeypatch)
    seen = _spy_on_frames(monkeypatch)
    assert cli.main(args) == 0
    assert calls == {"decoded": 1, "converted to 16 kHz": 1}
    assert seen["motion"].num_frames == 8 and float(seen["pose"].euler.std(0).max()) > 0  # natural motion moved

    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.audio[0]
        assert stream.rate == rate == 44100 and len(stream.layout.channels) == 2
        muxed = np.concatenate([frame.to_ndarray() for frame in container.decode(stream)], axis=1)
    length = samples.shape[0] if source == "audio" else int(round(8 / 25 * rate))  # the motion's 8 frames
    assert length <= muxed.shape[1] <= length + 2048  # AAC pads to whole 1024-sample frames
    if source != "video":  # the clip itself (the video's track was AAC already): AAC keeps it close
        original = samples[:length].T.astype(np.float32) / 32767
        assert all(np.corrcoef(muxed[c, :length], original[c])[0, 1] > 0.99 for c in range(2))
