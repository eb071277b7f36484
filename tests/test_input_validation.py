"""Input validation (issue #10): `r3dp generate --dry-run` accepts every odd-but-valid image, voice clip and driving
video (normalised, with a note), and refuses every invalid one with exit status 2 and one paragraph that starts
with the file — no traceback, in well under 30 s. Bad model files get the same treatment in a real run.

Every file is generated here; only the portrait, a speech clip and the face landmarker come from ../shared.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import time
import wave
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from r3dp_core import cli
from r3dp_core.errors import InputError
from r3dp_core.geometry.camera import driving_pose
from r3dp_core.pipeline.driving import motion_from_frames, resample_index, video_motion
from r3dp_core.pipeline.inputs import letterbox_bars, load_image, read_image
from r3dp_core.video_io import VideoWriter, read_video_frames

ERROR = "r3dp generate: error: "


# ------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_dir) -> Path:
    """A models folder holding only the face landmarker: all --dry-run needs."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    return folder


@pytest.fixture(scope="module")
def portrait(shared_dir) -> np.ndarray:
    """[512,512,3] RGB uint8."""
    return cv2.cvtColor(cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_dir, portrait) -> dict[str, Path]:
    """Valid inputs the cases combine with the file under test."""
    folder = tmp_path_factory.mktemp("inputs")
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    return {"image": shared_dir / "testdata" / "astronaut_512.png",
            "speech": shared_dir / "testdata" / "speech_en_16k.wav",
            "short_speech": _wav(folder / "short.wav", _voice(0.2, 16000), 16000),
            "video": _video(folder / "driving.mp4", _moving(small, 10), 25)}


def _dry_run(capsys, models: Path, out: Path, image: Path, audio: Path | None = None, *extra: str):
    args = ["generate", "--image", str(image), "--out", str(out), "--models-dir", str(models), "--dry-run"]
    if audio is not None:
        args += ["--audio", str(audio)]
    started = time.perf_counter()
    code = cli.main(args + list(extra))
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    return SimpleNamespace(code=code, out=captured.out, err=captured.err, seconds=seconds)


def _assert_accepted(result, note: str | None) -> None:
    assert result.code == 0, result.err
    assert "dry run: inputs are valid" in result.out and result.err == ""
    if note is not None:
        assert note in result.out, result.out
    assert result.seconds < 30


def _assert_refused(result, path: Path, problem: str) -> None:
    """Exit status 2; one paragraph on stderr that starts with the file and matches ``problem``; no traceback."""
    assert result.code == 2, result.out
    message = result.err.strip()
    assert message.startswith(f"{ERROR}{path}"), message
    assert "\n" not in message and "Traceback" not in result.err
    assert re.search(problem, message), message
    assert result.out == "" and result.seconds < 30


# ------------------------------------------------------------------------------------------------- generators

def _png(path: Path, rgb_or_gray: np.ndarray) -> Path:
    image = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return path


def _pil(path: Path, image, **options) -> Path:
    image.save(path, **options)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb if it were decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) +
                     chunk(b"IEND", b""))
    return path


def _truncated(path: Path, data: bytes, keep: float) -> Path:
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _encoded(image: np.ndarray, ext: str) -> bytes:
    return cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _on_canvas(image: np.ndarray, height: int, width: int, value: int, top: int, left: int) -> np.ndarray:
    canvas = np.full((height, width, 3), value, np.uint8)
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def _voice(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """[C,N] float in [-1,1]: a voiced 220 Hz tone with a syllable-like 3 Hz envelope (about -16 dBFS)."""
    t = np.arange(int(round(seconds * rate))) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(tone[None], channels, axis=0).astype(np.float32)


def _wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM wav with the standard library (fast even for long clips)."""
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(samples.shape[0])
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").T.tobytes())
    return path


def _encode_audio(path: Path, samples: np.ndarray, rate: int, codec: str) -> Path:
    """Any PyAV audio codec; float samples reach the file unchanged (NaN included) for pcm_f32le."""
    import av

    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        target = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=target, layout=layout, rate=rate,
                                      frame_size=stream.codec_context.frame_size or None)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for block in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(block):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _moving(image: np.ndarray, count: int) -> np.ndarray:
    """[count,H,W,3]: the image sliding 2 px to the right per frame."""
    return np.stack([np.roll(image, 2 * i, axis=1) for i in range(count)])


def _video(path: Path, frames: np.ndarray, fps: float) -> Path:
    with VideoWriter(path, fps=fps) as writer:
        writer.write(frames)
    return path


def _faceless(frames: np.ndarray, which) -> np.ndarray:
    frames = frames.copy()
    frames[list(which)] = 0
    return frames


# ------------------------------------------------------------------------------------------------- images

def _rgba(folder, portrait):
    from PIL import Image

    alpha = np.full(portrait.shape[:2], 255, np.uint8)
    alpha[:40] = 0
    return _pil(folder / "rgba.png", Image.fromarray(np.dstack([portrait, alpha])))


def _cmyk(folder, portrait):
    from PIL import Image

    return _pil(folder / "cmyk.jpg", Image.fromarray(portrait).convert("CMYK"), quality=95)


def _exif_rotated(folder, portrait):
    """Stored turned 90° counter-clockwise with EXIF orientation 6 (display turned clockwise), as phones do."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    return _pil(folder / "phone.jpg", Image.fromarray(np.ascontiguousarray(np.rot90(portrait))), exif=exif,
                quality=95)


def _huge(folder, portrait):
    face = cv2.resize(portrait, (9000, 9000), interpolation=cv2.INTER_LINEAR)
    path = folder / "huge.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(_on_canvas(face, 9000, 12000, 128, 0, 1500), cv2.COLOR_RGB2BGR))
    return path


def _two_faces(folder, portrait):
    """The astronaut's face twice, 320 and 192 px wide, on a 512² canvas."""
    face = portrait[25:225, 125:325]
    canvas = _on_canvas(cv2.resize(face, (320, 320)), 512, 512, 128, 192, 192)
    canvas[:192, :192] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_AREA)
    return _png(folder / "two.png", canvas)


VALID_IMAGES = {
    "grayscale": (lambda f, p: _png(f / "gray.png", cv2.cvtColor(p, cv2.COLOR_RGB2GRAY)), None),
    "rgba": (_rgba, "transparent areas filled with white"),
    "16-bit": (lambda f, p: _png(f / "deep.png", p.astype(np.uint16) * 257), None),
    "cmyk-jpeg": (_cmyk, "CMYK converted to RGB"),
    "webp": (lambda f, p: _png(f / "photo.webp", p), None),
    "float-tiff": (lambda f, p: _png(f / "float.tif", p.astype(np.float32) / 255), "float32 samples converted"),
    "letterboxed": (lambda f, p: _png(f / "letterbox.png", _on_canvas(p, 512, 1024, 0, 0, 256)),
                    "black bars removed (256 px left, 256 px right): 1024x512 → 512x512"),
    "exif-rotated": (_exif_rotated, "turned upright as its EXIF orientation (6) asks"),
    "huge-12000x9000": (_huge, "downscaled from 12000x9000 to 4096x3072"),
    "two-faces": (_two_faces, "2 faces found, the largest is used"),
    # found at the photo's own aspect ratio (the official squash to a square found no face here)
    "very-wide": (lambda f, p: _png(f / "wide.png", _on_canvas(p, 512, 1536, 128, 0, 512)), None),
}


@pytest.mark.parametrize("case", list(VALID_IMAGES))
def test_odd_but_valid_images_are_accepted(case, tmp_path, capsys, models, portrait, inputs):
    build, note = VALID_IMAGES[case]
    result = _dry_run(capsys, models, tmp_path / "o.mp4", build(tmp_path, portrait), inputs["speech"])
    _assert_accepted(result, note)
    assert "face found" in result.out or "faces found" in result.out


INVALID_IMAGES = {
    "missing": (lambda f, p: f / "missing.png", "does not exist"),
    "folder": (lambda f, p: f, "is a folder"),
    "empty": (lambda f, p: _truncated(f / "empty.png", b"x", 0), r"empty \(0 bytes\)"),
    "text": (lambda f, p: _pil_text(f / "notes.png"), "not a readable image"),
    "truncated-png": (lambda f, p: _truncated(f / "cut.png", _encoded(p, ".png"), 0.6), "damaged or truncated"),
    "truncated-jpeg": (lambda f, p: _truncated(f / "cut.jpg", _encoded(p, ".jpg"), 0.6), "damaged or truncated"),
    "tiny": (lambda f, p: _png(f / "tiny.png", cv2.resize(p, (40, 40))), "40x40.*at least 64 px"),
    "over-limit": (lambda f, p: _png_header(f / "big.png", 13000, 12000), "13000x12000 .156 megapixels.*Downscale"),
    "decompression-bomb": (lambda f, p: _png_header(f / "bomb.png", 40000, 40000), "larger than r3dp reads"),
    "no-face": (lambda f, p: _png(f / "wall.png", np.full((512, 512, 3), 128, np.uint8)), "No face found.*frontal"),
}


def _pil_text(path: Path) -> Path:
    path.write_text("this is a text file, not a photo\n")
    return path


@pytest.mark.parametrize("case", list(INVALID_IMAGES))
def test_invalid_images_are_refused_with_one_paragraph(case, tmp_path, capsys, models, portrait, inputs):
    build, problem = INVALID_IMAGES[case]
    path = build(tmp_path, portrait)
    _assert_refused(_dry_run(capsys, models, tmp_path / "o.mp4", path, inputs["speech"]), path, problem)
    assert not (tmp_path / "o.mp4").exists()


def test_image_normalisation_details(tmp_path, portrait):
    upright = load_image(_exif_rotated(tmp_path, portrait))
    assert upright.flags.writeable and upright.flags.c_contiguous
    assert upright.shape == portrait.shape and np.abs(upright.astype(int) - portrait).mean() < 3
    assert np.abs(load_image(_cmyk(tmp_path, portrait)).astype(int) - portrait).mean() < 4
    rgba = load_image(_rgba(tmp_path, portrait))
    assert (rgba[:40] == 255).all() and np.array_equal(rgba[40:], portrait[40:])
    # masks keep their bars (they must stay aligned with the photo); only the portrait is trimmed
    letterboxed = _png(tmp_path / "lb.png", _on_canvas(portrait, 512, 1024, 0, 0, 256))
    assert load_image(letterboxed).shape == (512, 1024, 3)
    assert np.array_equal(read_image(letterboxed, remove_bars=True).pixels, portrait)


def test_letterbox_bars_never_cut_past_square_or_into_square_photos(portrait):
    dark_background = _on_canvas(portrait[100:400, 100:400], 512, 512, 0, 106, 106)
    assert letterbox_bars(dark_background) == (0, 0, 0, 0)                      # square: black background kept
    assert letterbox_bars(_on_canvas(portrait, 512, 1024, 0, 0, 100)) == (0, 0, 100, 412)
    tall = _on_canvas(portrait[:, 100:400], 900, 300, 0, 300, 0)                 # bars of 300 and 88 px
    assert letterbox_bars(tall) == (300, 88, 0, 0)
    assert letterbox_bars(_on_canvas(portrait, 512, 520, 0, 0, 4)) == (0, 0, 0, 0)  # 8 px: not letterboxing


# ------------------------------------------------------------------------------------------------- audio

VALID_AUDIO = {
    "shared-16k-mono": (lambda f, i: i["speech"], "16000 Hz mono"),
    "0.2s-boundary-44.1k": (lambda f, i: _wav(f / "a.wav", _voice(0.2, 44100), 44100),
                            "0.20 s, 44100 Hz mono -> 5 frames"),
    "8k": (lambda f, i: _wav(f / "a.wav", _voice(0.5, 8000), 8000), "8000 Hz mono"),
    "11.025k": (lambda f, i: _wav(f / "a.wav", _voice(0.5, 11025), 11025), "11025 Hz"),
    "22.05k": (lambda f, i: _wav(f / "a.wav", _voice(0.5, 22050), 22050), "22050 Hz"),
    "32k": (lambda f, i: _wav(f / "a.wav", _voice(0.5, 32000), 32000), "32000 Hz"),
    "48k-stereo": (lambda f, i: _wav(f / "a.wav", _voice(0.5, 48000, 2), 48000), "48000 Hz stereo"),
    "float32-wav": (lambda f, i: _encode_audio(f / "a.wav", _voice(0.5, 22050), 22050, "pcm_f32le"), "22050 Hz"),
    "flac": (lambda f, i: _encode_audio(f / "a.flac", _voice(0.5, 44100, 2), 44100, "flac"), "44100 Hz stereo"),
    "ogg-opus": (lambda f, i: _encode_audio(f / "a.ogg", _voice(0.5, 48000), 48000, "libopus"), "48000 Hz"),
    "mp3": (lambda f, i: _encode_audio(f / "a.mp3", _voice(0.5, 44100, 2), 44100, "libmp3lame"), "44100 Hz"),
    "m4a-aac": (lambda f, i: _encode_audio(f / "a.m4a", _voice(0.5, 44100), 44100, "aac"), "44100 Hz"),
    "silence": (lambda f, i: _wav(f / "a.wav", np.zeros((1, 16000)), 16000),
                "no speech detected in .* the mouth will stay closed"),
    "voice-on-right-only": (lambda f, i: _wav(f / "a.wav", np.stack([np.zeros(8000), _voice(0.5, 16000)[0]]), 16000),
                            r"first \(left\) channel"),
    "10-minutes": (lambda f, i: _wav(f / "a.wav", _voice(600, 8000), 8000), "600.00 s, 8000 Hz mono -> 15000 frames"),
}


@pytest.mark.parametrize("case", list(VALID_AUDIO))
def test_odd_but_valid_audio_is_accepted(case, tmp_path, capsys, models, inputs):
    build, expected = VALID_AUDIO[case]
    result = _dry_run(capsys, models, tmp_path / "o.mp4", inputs["image"], build(tmp_path, inputs))
    assert result.code == 0, result.err
    assert re.search(expected, result.out), result.out
    assert result.seconds < (10 if case == "10-minutes" else 30)  # no heavy work in validation


def _float_wav_with(folder: Path, value: float) -> Path:
    samples = _voice(0.5, 16000)
    samples[0, 1234] = value
    return _encode_audio(folder / "broken.wav", samples, 16000, "pcm_f32le")


def _png_as_wav(folder: Path, inputs) -> Path:
    path = folder / "picture.wav"
    shutil.copy(inputs["image"], path)
    return path


INVALID_AUDIO = {
    "missing": (lambda f, i: f / "missing.wav", "audio file not found"),
    "empty": (lambda f, i: _truncated(f / "empty.wav", b"x", 0), r"empty \(0 bytes\)"),
    "text": (lambda f, i: _pil_text(f / "notes.wav"), "not a readable audio file.*wav, flac, ogg, mp3"),
    "png-renamed-wav": (_png_as_wav, "has no audio stream .it holds 1 video stream"),
    "truncated-header": (lambda f, i: _truncated(f / "cut.wav", i["speech"].read_bytes()[:20], 1),
                         "not a readable audio file"),
    "nan-samples": (lambda f, i: _float_wav_with(f, float("nan")), "NaN or infinite samples.*Export the clip again"),
    "inf-samples": (lambda f, i: _float_wav_with(f, float("inf")), "NaN or infinite samples"),
    "0.19s": (lambda f, i: _wav(f / "a.wav", _voice(0.19, 16000), 16000), "only 0.19 s long; give at least 0.2 s"),
}


@pytest.mark.parametrize("case", list(INVALID_AUDIO))
def test_invalid_audio_is_refused_with_one_paragraph(case, tmp_path, capsys, models, inputs):
    build, problem = INVALID_AUDIO[case]
    path = build(tmp_path, inputs)
    _assert_refused(_dry_run(capsys, models, tmp_path / "o.mp4", inputs["image"], path), path, problem)


# ------------------------------------------------------------------------------------------------- driving videos

def _driving(folder: Path, portrait: np.ndarray, count: int, fps: float, faceless=()) -> Path:
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    return _video(folder / "drive.mp4", _faceless(_moving(small, count), faceless), fps)


VALID_VIDEOS = {
    "pose-shorter-than-audio": (lambda f, p: _driving(f, p, 10, 25), "--pose-video", "speech",
                                r"shorter than the clip \(235 frames\): it is played forward and backward"),
    "pose-longer-than-audio": (lambda f, p: _driving(f, p, 10, 25), "--pose-video", "short_speech",
                               r"longer than the clip \(5 frames\): its first 5 frames are used"),
    "pose-50fps": (lambda f, p: _driving(f, p, 10, 50), "--pose-video", "speech", "50.00 fps .* → 5 frames at 25 fps"),
    "pose-12.5fps": (lambda f, p: _driving(f, p, 10, 12.5), "--pose-video", "speech", "→ 20 frames at 25 fps"),
    "pose-some-faceless": (lambda f, p: _driving(f, p, 10, 25, faceless=(2, 3, 7)), "--pose-video", "speech",
                           "no face in 3 of 10 checked frames"),
    "expression-with-audio": (lambda f, p: _driving(f, p, 10, 25), "--expression-video", "speech",
                              "is the sound of the video; the expressions come from --expression-video"),
    "expression-only": (lambda f, p: _driving(f, p, 10, 25), "--expression-video", None, "10 frames at 25 fps"),
}


@pytest.mark.parametrize("case", list(VALID_VIDEOS))
def test_odd_but_valid_driving_videos_are_accepted(case, tmp_path, capsys, models, portrait, inputs):
    build, flag, audio, note = VALID_VIDEOS[case]
    video = build(tmp_path, portrait)
    result = _dry_run(capsys, models, tmp_path / "o.mp4", inputs["image"], inputs[audio] if audio else None,
                      flag, str(video))
    assert result.code == 0, result.err
    assert re.search(note, result.out), result.out
    assert result.seconds < 30


def _corrupt(folder: Path, inputs) -> Path:
    data = bytearray(inputs["video"].read_bytes())
    rng = np.random.default_rng(0)
    data[:] = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
    path = folder / "noise.mp4"
    path.write_bytes(bytes(data))
    return path


INVALID_VIDEOS = {
    "missing": (lambda f, p, i: f / "missing.mp4", "the video does not exist"),
    "random-bytes": (lambda f, p, i: _corrupt(f, i), "cannot be read as a video.*re-encode"),
    "truncated": (lambda f, p, i: _truncated(f / "cut.mp4", i["video"].read_bytes(), 0.5),
                  "(cannot be read as a video|damaged)"),
    "audio-file": (lambda f, p, i: i["speech"], "has no video stream"),
    "no-face": (lambda f, p, i: _video(f / "wall.mp4", np.full((6, 128, 128, 3), 90, np.uint8), 25),
                "no face found in the video .6 frames checked"),
    "mostly-faceless": (lambda f, p, i: _driving(f, p, 10, 25, faceless=range(6)),
                        "no face found in 6 of 10 frames.*Trim it"),
}


@pytest.mark.parametrize("flag", ["--pose-video", "--expression-video"])
@pytest.mark.parametrize("case", list(INVALID_VIDEOS))
def test_invalid_driving_videos_are_refused_with_one_paragraph(case, flag, tmp_path, capsys, models, portrait,
                                                               inputs):
    build, problem = INVALID_VIDEOS[case]
    path = build(tmp_path, portrait, inputs)
    result = _dry_run(capsys, models, tmp_path / "o.mp4", inputs["image"], inputs["speech"], flag, str(path))
    _assert_refused(result, path, problem)


# ------------------------------------------------------------------------------------------------- driving motion

@pytest.fixture(scope="module")
def bfm(parity_dir, parity_cache):
    from r3dp_core.parity.synth_bfm import synth_face_model

    return synth_face_model(parity_dir)


def test_resampling_to_25_fps():
    assert resample_index(10, 50).tolist() == [0, 2, 4, 6, 8]
    assert resample_index(4, 12.5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample_index(6, 30).tolist() == [0, 1, 2, 3, 4]
    assert resample_index(3, 25).tolist() == [0, 1, 2]
    assert resample_index(3, 0).tolist() == [0, 1, 2]            # unknown rate: read as 25 fps


def test_frames_without_a_face_are_filled_and_the_pose_ping_pongs(models, portrait, bfm):
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    frames = _faceless(_moving(small, 8), (3, 4))
    logs = []
    motion = motion_from_frames(frames, 50, models / "face_landmarker.task", bfm, num_frames=11, log=logs.append)
    assert logs == ["The driving video: no face in 2 of 8 frames; those frames reuse the previous frame's face"]
    # 8 frames at 50 fps → source frames 0, 2, 4, 6 at 25 fps; 11 frames ping-pong: 0 1 2 3 3 2 1 0 0 1 2
    assert motion.num_frames == 11 and motion.fps == 25
    for a, b in ((3, 4), (2, 5), (1, 6), (0, 7), (7, 8), (1, 9)):
        assert torch.equal(motion.exp[a], motion.exp[b]) and torch.equal(motion.euler[a], motion.euler[b])
    assert not torch.equal(motion.euler[0], motion.euler[1])      # the head does move
    # frame 4 has no face: resampled frame 2 holds frame 2's fit (the previous detected face)
    assert torch.equal(motion.trans[2], motion.trans[5])


def test_too_few_faces_are_refused(models, portrait):
    small = cv2.resize(portrait, (128, 128), interpolation=cv2.INTER_AREA)
    landmarker = models / "face_landmarker.task"
    with pytest.raises(InputError, match="no face found in any of its 3 frames"):
        motion_from_frames(np.zeros((3, 128, 128, 3), np.uint8), 25, landmarker, None)
    with pytest.raises(InputError, match=r"no face found in 3 of its 5 frames \(more than 50%\)"):
        motion_from_frames(_faceless(_moving(small, 5), (0, 1, 4)), 25, landmarker, None)
    with pytest.raises(InputError, match="has no frames"):
        motion_from_frames(np.zeros((0, 64, 64, 3), np.uint8), 25, landmarker, None)


def test_video_file_matches_in_memory_frames_and_the_audio_length(tmp_path, models, portrait, bfm):
    path = _driving(tmp_path, portrait, 6, 25)
    kit = SimpleNamespace(bfm=bfm, landmarker_path=models / "face_landmarker.task")
    audio_frames = 14
    from_file = video_motion(path, kit, num_frames=audio_frames)
    decoded = np.concatenate([block for block, _ in read_video_frames(path)])
    in_memory = motion_from_frames(torch.from_numpy(decoded).float() / 255, 25, kit.landmarker_path, bfm,
                                   num_frames=audio_frames)
    assert from_file.num_frames == audio_frames
    assert torch.equal(from_file.exp, in_memory.exp) and torch.equal(from_file.euler, in_memory.euler)
    # the pipeline's driving_pose keeps the already matched length and order
    pose = driving_pose(from_file.euler, from_file.trans, audio_frames, from_file.euler[:1], from_file.trans[:1])
    assert len(pose) == audio_frames
    torch.testing.assert_close(pose.euler, from_file.euler)
    assert torch.equal(from_file.euler[6], from_file.euler[5]) and torch.equal(from_file.euler[12], from_file.euler[0])


def test_non_square_frames_fit_as_if_padded_to_a_square(models, portrait, bfm):
    small = cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)
    frames = _moving(small, 3)
    wide = np.stack([_on_canvas(f, 256, 320, 0, 0, 32) for f in frames])
    square = np.stack([_on_canvas(f, 320, 320, 0, 32, 0) for f in wide])
    landmarker = models / "face_landmarker.task"
    from_wide = motion_from_frames(wide, 25, landmarker, bfm)
    from_square = motion_from_frames(square, 25, landmarker, bfm)
    torch.testing.assert_close(from_wide.trans, from_square.trans, atol=0.02, rtol=0)
    torch.testing.assert_close(from_wide.euler, from_square.euler, atol=0.02, rtol=0)


# ------------------------------------------------------------------------------------------------- model files

class _RunsCode:
    """A pickle payload that would create a folder if it were ever executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.fixture(scope="module")
def full_models(tmp_path_factory, shared_dir, parity_dir, parity_cache) -> Path:
    """Every file a job looks for: the synthetic BFM, the real landmarker, placeholders for the networks."""
    from r3dp_core.parity.synth_bfm import ensure_synth_bfm

    folder = tmp_path_factory.mktemp("full_models")
    (folder / "BFM").mkdir()
    synth = ensure_synth_bfm(parity_dir)
    for name in ("BFM_model_front.mat", "index_mp468_from_mesh35709.npy"):
        (folder / "BFM" / name).symlink_to(synth / name)
    for name in ("bfm_left_eye_faces.npy", "bfm_right_eye_faces.npy"):
        shutil.copy(shared_dir / "official_data" / name, folder / "BFM" / name)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    (folder / "selfie_multiclass_256x256.tflite").write_bytes(b"placeholder")
    (folder / "audio2secc_vae").mkdir()
    (folder / "audio2secc_vae" / "model_ckpt_steps_400000.ckpt").write_bytes(b"placeholder")
    (folder / "hubert" / "hubert-large-ls960-ft").mkdir(parents=True)
    return folder


def _audio_keys_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"model": {"vae.decoder.net.weight": torch.ones(2),
                                         "vae.prior_flow.flows.0.weight": torch.ones(2)}}}, path)
    return path


def _write_video_slot(case: str, target: Path, tmp_path: Path) -> str:
    """Put a bad file in the video model's slot; returns the pattern its message must match."""
    if case == "missing":
        return r"Missing model file for the video model.*secc2plane_torso.*r3dp models import PATH"
    if case == "wrong-model":
        _audio_keys_checkpoint(target)
        return "looks like Real3D-Portrait's audio model.*expects Real3D-Portrait's video model"
    if case == "truncated":
        data = _audio_keys_checkpoint(tmp_path / "full.ckpt").read_bytes()
        target.write_bytes(data[: len(data) // 2])
        return "damaged or incomplete.*download it again"
    if case == "pickle-with-code":
        torch.save({"state_dict": {"model": {"w": torch.ones(1)}}, "payload": _RunsCode(tmp_path / "code_ran")},
                   target)
        return "Refusing to load .*never unpickles"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "wrong-model", "truncated", "pickle-with-code"])
def test_bad_video_model_file_stops_a_real_run_with_one_paragraph(case, tmp_path, capsys, full_models, inputs):
    models = tmp_path / "models"
    shutil.copytree(full_models, models, symlinks=True)
    slot = models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt"
    slot.parent.mkdir()
    problem = _write_video_slot(case, slot, tmp_path)
    out = tmp_path / "o.mp4"
    code = cli.main(["generate", "--image", str(inputs["image"]), "--audio", str(inputs["short_speech"]),
                     "--out", str(out), "--models-dir", str(models), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert re.search(problem, err), err
    if case != "missing":
        assert slot.name in err
    assert not (tmp_path / "code_ran").exists() and not out.exists()


def test_bfm_of_the_wrong_kind_stops_a_real_run(tmp_path, capsys, full_models, inputs):
    import scipy.io

    models = tmp_path / "models"
    shutil.copytree(full_models, models, symlinks=True)
    (models / "BFM" / "BFM_model_front.mat").unlink()
    scipy.io.savemat(str(models / "BFM" / "BFM_model_front.mat"), {"shapePC": np.zeros((6, 2)),
                                                                    "shapeMU": np.zeros((6, 1))})
    (models / "secc2plane_torso").mkdir()
    _audio_keys_checkpoint(models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt")
    code = cli.main(["generate", "--image", str(inputs["image"]), "--audio", str(inputs["short_speech"]),
                     "--out", str(tmp_path / "o.mp4"), "--models-dir", str(models), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert "BFM_model_front.mat" in err and "lacks the field(s)" in err and "raw 01_MorphableModel.mat" in err


def test_one_admission_step_checks_model_files_then_inputs_then_masks(tmp_path, monkeypatch, capsys, models, inputs):
    """``admit`` is the one admission step of the dry run, generate, the batch's up-front check and its workers:
    the model files the job needs first (every missing one at once; not in a dry run, which reads inputs only),
    then the inputs, then the masks; the admitted job carries its decoded inputs (the sound decoded once), its
    masks and the model files it needs (what the batch's model list is made of)."""
    import dataclasses

    from r3dp_core.audio.io import Sound
    from r3dp_core.pipeline import admission
    from r3dp_core.pipeline.request import GenerateRequest

    head = np.zeros((512, 512), np.uint8)
    head[100:300, 150:350] = 255
    cv2.imwrite(str(tmp_path / "head.png"), head)
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros_like(head))
    request = GenerateRequest(image=tmp_path / "no_such.png", audio=inputs["speech"], out=tmp_path / "o.mp4",
                              head_mask=tmp_path / "head.png")
    with pytest.raises(InputError, match=r"(?s)model file\(s\) missing.*the video model"):  # before the photo
        admission.admit(request, models)
    with pytest.raises(InputError, match="no_such.png: the image does not exist"):
        admission.admit(request, models, check_models=False)
    request = dataclasses.replace(request, image=inputs["image"], head_mask=tmp_path / "black.png")
    with pytest.raises(InputError, match="the head mask is empty"):
        admission.admit(request, models, check_models=False)
    request = dataclasses.replace(request, head_mask=tmp_path / "head.png")
    admitted = admission.admit(request, models, check_models=False)
    assert admitted.request is request and admitted.models_dir == models
    assert isinstance(admitted.inputs.audio, Sound) and admitted.inputs.audio.label == str(inputs["speech"])
    assert tuple(admitted.masks.head.shape[-2:]) == (512, 512)
    assert admitted.models == tuple(admission.needed_models(request))
    assert "audio_model" in admitted.models and "segmenter" not in admitted.models  # audio-driven, head mask given

    seen = []
    admit = admission.admit
    monkeypatch.setattr(admission, "admit", lambda *args, **options: seen.append(options) or admit(*args, **options))
    _assert_accepted(_dry_run(capsys, models, tmp_path / "o.mp4", inputs["image"], inputs["speech"]), None)
    assert seen == [{"check_models": False}]
