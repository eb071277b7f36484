"""The streaming pipeline, inputs, data files, video writing and the main-job CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from r3dp_core.cli import main as cli_main
from r3dp_core.errors import InputError
from r3dp_core.pipeline.inputs import load_image
from r3dp_core.pipeline.stream import FrameSource, TensorSource, iterate_chunks
from r3dp_core.pipeline.types import Avatar, Motion
from r3dp_core.video_io import VideoWriter, probe_video

REPO = Path(__file__).resolve().parents[1]


class _CountingSource(FrameSource):
    def __init__(self, n: int, fail_above: int | None = None):
        self.num_frames = n
        self.calls: list[tuple[int, int]] = []
        self.fail_above = fail_above

    def chunk(self, start, stop):
        self.calls.append((start, stop))
        if self.fail_above is not None and stop - start > self.fail_above:
            raise torch.OutOfMemoryError("simulated")
        return torch.arange(start, stop)


def test_chunks_cover_every_frame_once_with_progress():
    source = _CountingSource(10)
    seen, progress = [], []
    for _, _, value in iterate_chunks(source, 4, on_chunk=lambda d, t: progress.append((d, t))):
        seen.append(value)
    assert torch.equal(torch.cat(seen), torch.arange(10))
    assert source.calls == [(0, 4), (4, 8), (8, 10)]
    assert progress == [(4, 10), (8, 10), (10, 10)]


def test_out_of_memory_halves_the_chunk_and_continues(caplog):
    source = _CountingSource(9, fail_above=2)
    values = [v for _, _, v in iterate_chunks(source, 8)]
    assert torch.equal(torch.cat(values), torch.arange(9))
    assert max(stop - start for start, stop in source.calls[-3:]) <= 2
    assert "retrying with chunks of 2 frames" in caplog.text
    with pytest.raises(torch.OutOfMemoryError):
        list(iterate_chunks(_CountingSource(4, fail_above=0), 2))


def test_interrupt_stops_between_chunks():
    source = _CountingSource(100)
    calls = []

    def should_stop():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(iterate_chunks(source, 10, should_stop=should_stop))
    assert source.calls == [(0, 10), (10, 20)]


def test_tensor_source_ranges():
    source = TensorSource(torch.arange(5.0)[:, None])
    assert source.chunk(1, 3).flatten().tolist() == [1.0, 2.0]
    with pytest.raises(IndexError):
        source.chunk(3, 6)


def test_motion_round_trip_and_validation(tmp_path):
    audio = {"waveform": torch.randn(1, 2, 800), "sample_rate": 16000}
    motion = Motion(exp=torch.randn(7, 64), euler=torch.randn(7, 3), trans=torch.randn(7, 3),
                    blink=torch.rand(7), audio=audio)
    path = motion.save(tmp_path / "talk")
    assert path.name == "talk.safetensors"
    back = Motion.load(path)
    assert torch.equal(back.exp, motion.exp) and torch.equal(back.blink, motion.blink)
    assert torch.equal(back.audio["waveform"], audio["waveform"]) and back.audio["sample_rate"] == 16000
    assert back.fps == 25.0 and back.duration_s == pytest.approx(7 / 25)
    with pytest.raises(InputError, match=r"expression must be \[T,64\]"):
        Motion(exp=torch.zeros(3, 10))
    with pytest.raises(InputError, match=r"euler must be \[3,3\]"):
        Motion(exp=torch.zeros(3, 64), euler=torch.zeros(2, 3))
    with pytest.raises(InputError, match="not an r3dp avatar"):
        Avatar.load(path)


def test_avatar_round_trip(tmp_path):
    avatar = Avatar(image=torch.rand(1, 3, 8, 8), id=torch.randn(1, 80), exp=torch.randn(1, 64),
                    euler=torch.randn(1, 3), trans=torch.randn(1, 3), planes=torch.randn(1, 3, 4, 2, 2))
    back = Avatar.load(avatar.save(tmp_path / "a.safetensors"))
    assert torch.equal(back.planes, avatar.planes) and back.segmap is None
    (tmp_path / "junk.safetensors").write_bytes(b"nonsense")
    with pytest.raises(InputError, match="not a readable r3dp avatar file"):
        Avatar.load(tmp_path / "junk.safetensors")


def _write(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_images_are_normalised_to_rgb_uint8(tmp_path):
    rgb = np.zeros((80, 96, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    bgr = rgb[..., ::-1]
    assert load_image(_write(tmp_path / "c.png", bgr))[0, 0].tolist() == [200, 0, 0]
    gray = load_image(_write(tmp_path / "g.png", np.full((80, 80), 77, np.uint8)))
    assert gray.shape == (80, 80, 3) and gray[0, 0].tolist() == [77, 77, 77]
    deep = load_image(_write(tmp_path / "d.png", np.full((80, 80, 3), 257 * 100, np.uint16)))
    assert deep.dtype == np.uint8 and deep[0, 0].tolist() == [100, 100, 100]
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent → white
    assert load_image(_write(tmp_path / "a.png", rgba))[0, 0].tolist() == [255, 255, 255]
    webp = load_image(_write(tmp_path / "w.webp", bgr))
    assert webp.shape == (80, 96, 3)


def test_bad_images_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "text.png")
    with pytest.raises(InputError, match="at least 64 px"):
        load_image(_write(tmp_path / "tiny.png", np.zeros((20, 20, 3), np.uint8)))


def test_video_writer_muxes_audio_and_commits_atomically(tmp_path):
    sr = 16000
    wave = torch.sin(2 * math.pi * 220 * torch.arange(sr * 2) / sr)[None, None] * 0.2
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, fps=25, audio={"waveform": wave, "sample_rate": sr}) as writer:
        for _ in range(5):
            writer.write(torch.rand(10, 3, 64, 64) * 2 - 1)
        assert not out.exists()  # only a temporary file while writing
    info = probe_video(out)
    assert info["frames"] == 50 and info["width"] == 64 and info["fps"] == 25
    assert info["audio_seconds"] == pytest.approx(2.0, abs=0.05)
    failed = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError), VideoWriter(failed, fps=25) as writer:
        writer.write(torch.zeros(2, 3, 64, 64))
        raise RuntimeError("crash mid-clip")
    assert not failed.exists() and list(tmp_path.glob("*.partial*")) == []


@pytest.mark.parametrize("rate,muxed", [(44100, 44100), (37800, 44100), (192000, 96000)])
def test_video_writer_muxes_a_sound_at_its_own_rate_or_the_next_aac_rate(tmp_path, rate, muxed):
    """Sounds are muxed at their own rate (the original clip); a rate AAC cannot carry is resampled to the next
    AAC rate up (at most 96 kHz), keeping the sound: a 440 Hz tone stays a 440 Hz tone of the same length."""
    import av

    t = torch.arange(rate) / rate
    wave = (0.3 * torch.sin(2 * math.pi * 440 * t))[None, None].repeat(1, 2, 1)
    out = tmp_path / f"tone_{rate}.mp4"
    with VideoWriter(out, fps=25, audio={"waveform": wave, "sample_rate": rate}) as writer:
        writer.write(np.zeros((25, 16, 16, 3), np.uint8))
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.rate == muxed and len(stream.layout.channels) == 2
        sound = np.concatenate([frame.to_ndarray() for frame in container.decode(stream)], axis=1)
    assert muxed <= sound.shape[1] <= muxed + 2048  # 1 s, AAC pads to whole 1024-sample frames
    spectrum = np.abs(np.fft.rfft(sound[0, :muxed]))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz bins


@pytest.fixture()
def landmarker_models(tmp_path, shared_dir):
    models = tmp_path / "models"
    models.mkdir()
    (models / "face_landmarker.task").symlink_to(shared_dir / "models" / "face_landmarker.task")
    return models


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r3dp_core.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_dry_run_validates_without_models(tmp_path, landmarker_models):
    ok = _cli("generate", "--image", "examples/portrait.png", "--audio", "examples/speech.wav",
              "--out", str(tmp_path / "o.mp4"), "--models-dir", str(landmarker_models), "--dry-run")
    assert ok.returncode == 0, ok.stderr
    assert "face found" in ok.stdout and "235 frames at 25 fps" in ok.stdout
    blank = _write(tmp_path / "blank.png", np.full((256, 256, 3), 128, np.uint8))
    bad = _cli("generate", "--image", str(blank), "--audio", "examples/speech.wav", "--out", str(tmp_path / "o.mp4"),
               "--models-dir", str(landmarker_models), "--dry-run")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "face" in bad.stderr.lower()
    assert not (tmp_path / "o.mp4").exists()


def test_generate_lists_every_missing_model_before_reading_inputs(tmp_path, landmarker_models, capsys):
    from r3dp_core import model_files

    empty = tmp_path / "empty_models"
    empty.mkdir()
    args = ["generate", "--image", "missing.png", "--audio", "examples/speech.wav", "--out", str(tmp_path / "o.mp4")]
    assert cli_main(args + ["--models-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    expected = ["video_model", "audio_model", "hubert", "bfm", "bfm_mediapipe_index", "bfm_left_eye_faces",
                "bfm_right_eye_faces", "face_landmarker", "segmenter"]
    assert "9 model file(s) missing" in err and "Traceback" not in err
    assert all(str(empty / model_files.BY_KEY[key].relpath) in err for key in expected)
    # with masks the segmenter is not needed; the landmarker folder still lacks the networks
    masks = ["--head-mask", "examples/portrait.png", "--models-dir", str(landmarker_models)]
    assert cli_main(args + masks) == 2
    err = capsys.readouterr().err
    assert "7 model file(s) missing" in err and "selfie" not in err and "face_landmarker.task" not in err


def test_mouth_scale_scales_only_the_driving_mouth():
    from r3dp_core.errors import InputError
    from r3dp_core.geometry.secc import SECCMesh
    from r3dp_core.pipeline.face import FaceGeometry
    from r3dp_core.pipeline.frame_chain import secc_images, secc_source
    from r3dp_core.standins import synthetic_avatar, synthetic_face_model

    bfm = synthetic_face_model()
    face = FaceGeometry(bfm, SECCMesh(bfm.triangles, bfm.ncc_code()))
    avatar = synthetic_avatar(64)
    exp = torch.zeros(3, 64)
    exp[:, 0] = torch.tensor([0.0, 3.0, -3.0])
    motion = Motion(exp=exp)
    plain = secc_source(face, avatar, motion)
    assert torch.equal(plain.chunk(0, 3), secc_images(face, avatar.id, exp))
    closed = secc_source(face, avatar, motion, mouth_scale=0.0)
    wide = secc_source(face, avatar, motion, mouth_scale=2.0)
    assert torch.equal(closed.cano, plain.cano) and torch.equal(wide.cano, plain.cano)  # exp = 0: nothing to scale
    assert torch.equal(closed.chunk(0, 1), plain.chunk(0, 1))  # frame 0 has exp = 0 too
    for frame in (1, 2):
        neutral = plain.cano[0]
        still = (closed.chunk(frame, frame + 1)[0] - neutral).abs().sum()
        moving = (plain.chunk(frame, frame + 1)[0] - neutral).abs().sum()
        bigger = (wide.chunk(frame, frame + 1)[0] - neutral).abs().sum()
        assert still < moving < bigger  # the mouth region holds still at 0 and moves more at 2
    with pytest.raises(InputError, match="mouth scale must be between 0 and 3"):
        secc_source(face, avatar, motion, mouth_scale=4.0)


def test_a_batch_of_photos_becomes_avatars_with_the_hosts_placement_progress_and_cancel(monkeypatch):
    """Image→Triplane's core call: the model placed once for the batch, two progress steps per photo (the crop as
    preview), a cancel check before each photo, the photo named in an error; the CLI's host does nothing."""
    import contextlib

    from r3dp_core.geometry.segmentation import HEAD_CLASSES
    from r3dp_core.host import HERE, Host
    from r3dp_core.pipeline import avatars, stages
    from r3dp_core.standins import synthetic_avatar

    seen = []
    monkeypatch.setattr(stages, "prepare_source", lambda photo, kit, **options: seen.append((photo, options))
                        or synthetic_avatar(32))
    monkeypatch.setattr(stages, "make_avatar", lambda model, avatar: Avatar(
        **{**avatar.__dict__, "planes": torch.ones(1, 3, 2, 4, 4, dtype=torch.float16)}))
    placed, reports, checks = [], [], []

    @contextlib.contextmanager
    def place(*modules):
        placed.append(modules)
        yield torch.device("cpu")

    host = Host(place=place, progress=lambda done, total, preview: reports.append((done, total, preview is not None)),
                should_stop=lambda: checks.append(len(reports)))
    model = torch.nn.Linear(2, 2)
    images = torch.rand(2, 20, 30, 4)
    out = avatars.prepare_portraits(images, model, kit=None, min_face_area=0.3, face=1, host=host)
    assert placed == [(model,)] and checks == [0, 2]
    assert reports == [(1, 4, False), (2, 4, True), (3, 4, False), (4, 4, True)]
    assert [options for _, options in seen] == [{"min_face_area": 0.3, "face": 1, "masks": None}] * 2
    assert np.array_equal(seen[1][0], (images[1, ..., :3] * 255).round().to(torch.uint8).numpy())
    assert all(a.planes.dtype == torch.float32 and a.planes.device.type == "cpu" for a in out.avatars)
    assert out.crops.shape == (2, 32, 32, 3) and out.heads.shape == (2, 32, 32, 3)
    head = synthetic_avatar(32).segmap[0, list(HEAD_CLASSES)].sum(0)
    assert torch.equal(out.head_masks, head.expand(2, -1, -1))
    monkeypatch.setattr(stages, "prepare_source", lambda photo, kit, **options: (_ for _ in ()).throw(
        InputError("No face found in the photo.")))
    with pytest.raises(InputError, match="^Image→Triplane, portrait 1 of 2: No face found in the photo.$"):
        avatars.prepare_portraits(images, model, kit=None, host=HERE)
    with pytest.raises(InputError, match="needs an IMAGE batch"):
        avatars.prepare_portraits(images[0], model, kit=None)
