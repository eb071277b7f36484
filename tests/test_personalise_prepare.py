"""``r3dp personalise`` preparation: a synthetic talking video (a real face photo, speech-driven mouth, blinks) →
aligned crops, masks, tracks and audio windows; the cache; 25 fps resampling; every bad input refused."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from r3dp_core.errors import InputError
from r3dp_core.host import Host
from r3dp_core.talk3d.personalise import prepare as prepare_module
from r3dp_core.talk3d.personalise.alignment import (
    apply_affine,
    invert_similarity,
    similarity,
    six_points,
)
from r3dp_core.talk3d.personalise.prepare import MASKS, load_prepared, prepare_video
from r3dp_core.talk3d.personalise.tracking import FACE_MODEL_POINTS, face_orientation
from r3dp_core.talk3d.personalise.video_frames import FPS, frames_25fps, probe_span
from tests.fakes.talking_video import blink_frames, make_talking_video, write_video

SIZE = 64
SECONDS = 6


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_dir) -> Path:
    from r3dp_core.standins import write_tiny_wav2vec2

    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    write_tiny_wav2vec2(folder)
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 4 % of the frames show no face: they are interpolated, not refused
    return make_talking_video(tmp_path_factory.mktemp("video") / "talk.mp4", SECONDS, face_missing_fraction=0.04)


@pytest.fixture(scope="module")
def prepared(video, models, tmp_path_factory):
    from r3dp_core.standins import tiny_eg3d_generator

    reports, lines = [], []
    host = Host(progress=lambda done, total, preview: reports.append((done, total)))
    out = tmp_path_factory.mktemp("persona") / "prepared"
    result = prepare_video(video, out, image_size=SIZE, generator=tiny_eg3d_generator(0), models_dir=models,
                           host=host, say=lines.append)
    return result, reports, lines


def test_prepared_data_shapes_split_and_info(prepared):
    data, reports, lines = prepared
    n = SECONDS * FPS
    assert data.num_frames == n and data.train_frames == n * 10 // 11 == data.info["train_frames"]
    assert data.crops.shape == (n, SIZE, SIZE, 3) and data.crops.dtype == np.uint8
    assert data.masks.shape == (n, len(MASKS), SIZE, SIZE) and set(np.unique(data.masks)) <= {0, 1}
    shapes = {name: tuple(t.shape) for name, t in data.tracks.items()}
    assert shapes == {"head_angles": (n, 3), "landmarks": (n, 6, 2), "blink": (n,), "similarity": (n, 2, 3),
                      "mouth_box": (n, 4), "lips": (n, 40, 2)}
    assert data.audio_features.shape[0] >= n and tuple(data.audio_features.shape[1:]) == (16, 44)
    assert data.audio.dtype == np.float32 and data.audio.shape == (n * 640,)
    assert data.info["reference"] == "template" and data.info["masks"] == "landmarks"
    assert 0 < data.info["interpolated_frames"] <= 0.1 * n
    assert any("interpolated" in line for line in lines) and any("segmenter" in line for line in lines)
    assert any("short" in line for line in lines)
    assert reports[-1] == (2 * n, 2 * n)
    assert not list(data.folder.parent.glob(".prepared.*"))


def test_crops_are_aligned_faces(prepared, video, models):
    from r3dp_core.geometry.landmarks import detect_faces

    data = prepared[0]
    reference = np.asarray(data.info["reference_points"])
    frames = next(frames_25fps(video, 0.0, None, chunk=16))
    for index in (2, 9):
        faces = detect_faces(frames[index], models / "face_landmarker.task")
        assert len(faces) == 1
        matrix = data.tracks["similarity"][index].double().numpy()
        mapped = apply_affine(matrix, six_points(faces[0]))
        # smoothing over time and the official int truncation move the points by about a frame pixel (0.25 crop px)
        assert np.abs(mapped - reference).max() < 3.0
        back = apply_affine(invert_similarity(matrix), mapped)
        assert np.allclose(back, six_points(faces[0]), atol=1e-6)
        # the crop itself is a face MediaPipe finds where the reference says
        import cv2

        crop = cv2.resize(np.asarray(data.crops[index]), (256, 256), interpolation=cv2.INTER_CUBIC)
        found = detect_faces(crop, models / "face_landmarker.task")
        assert found and np.abs(six_points(found[0]) / 4 - reference).max() < 4.0


def test_tracks_blink_angles_masks(prepared):
    data = prepared[0]
    n = data.num_frames
    blink = data.tracks["blink"].numpy()
    shut = blink_frames(np.arange(n) / FPS)
    assert 0 <= blink.min() and blink.max() <= 2
    assert blink[shut].mean() > 1.0 and blink[~shut].mean() < 0.3
    angles = data.tracks["head_angles"].numpy()
    assert np.isfinite(angles).all() and np.abs(angles).max() <= 90
    landmarks = data.tracks["landmarks"].numpy()
    assert np.abs(landmarks).max() < 1 and np.abs(np.diff(landmarks, axis=0)).max() < 0.05   # smoothed
    face, mouth, body, torso = (data.masks[:, k].astype(bool) for k in range(4))
    assert face.sum((1, 2)).min() > 0.05 * SIZE ** 2 and mouth.sum((1, 2)).min() > 0
    assert (mouth & face).sum() / mouth.sum() > 0.8
    assert body.sum() > face.sum() and torso.sum() > 0
    lips, boxes = data.tracks["lips"].numpy(), data.tracks["mouth_box"].numpy()
    assert (lips[..., 0] >= boxes[:, None, 0]).all() and (lips[..., 0] <= boxes[:, None, 2]).all()
    assert (lips[..., 1] >= boxes[:, None, 1]).all() and (lips[..., 1] <= boxes[:, None, 3]).all()


def test_cache_is_reused_without_decoding(prepared, video, models, monkeypatch):
    data = prepared[0]
    stamp = (data.folder / "crops.npy").stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached preparation was decoded again")

    monkeypatch.setattr(prepare_module, "frames_25fps", no_decoding)
    lines = []
    started = time.perf_counter()
    again = prepare_video(video, data.folder, image_size=SIZE, models_dir=models, say=lines.append)
    assert time.perf_counter() - started < 2.0
    assert again.num_frames == data.num_frames and (data.folder / "crops.npy").stat().st_mtime_ns == stamp
    assert any("Reusing" in line for line in lines)
    assert load_prepared(data.folder.parent / "absent") is None


def _numbered_video(path: Path, times: np.ndarray, fps: float) -> Path:
    """Flat frames showing their number (left half: number // 16, right half: number % 16, in steps of 12 grey
    levels): which source frame a 25 fps frame shows is readable after H.264."""
    number = np.arange(len(times))
    frames = np.zeros((len(times), 32, 32, 3), np.uint8)
    frames[:, :, :16] = (30 + 12 * (number // 16)).astype(np.uint8)[:, None, None, None]
    frames[:, :, 16:] = (30 + 12 * (number % 16)).astype(np.uint8)[:, None, None, None]
    return write_video(path, frames, times, fps)


def _numbers(frames: np.ndarray) -> np.ndarray:
    high, low = (np.round((frames[:, 16, x, 0].astype(float) - 30) / 12).astype(int) for x in (8, 24))
    return 16 * high + low


@pytest.mark.parametrize("kind", ["30fps", "variable"])
def test_resampling_to_25fps_by_timestamp(tmp_path, kind):
    rng = np.random.default_rng(3)
    if kind == "30fps":
        times = np.arange(120) / 30
    else:
        times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.5, 110) / 30)])
    path = _numbered_video(tmp_path / f"{kind}.mp4", times, 30)
    span = probe_span(path)
    frames = np.concatenate(list(frames_25fps(path, 0.0, span.end, chunk=7)))
    assert len(frames) == round(FPS * span.duration)
    shown = _numbers(frames)
    stored = np.round(times * 1000) / 1000
    expected = [max(np.searchsorted(stored, k / FPS + 1e-9, side="right") - 1, 0) for k in range(len(frames))]
    assert np.array_equal(shown, expected)
    # a span: --start 1 --end 3 gives 50 frames starting at the frame shown at 1 s
    part = np.concatenate(list(frames_25fps(path, 1.0, 3.0)))
    assert len(part) == 50 and np.array_equal(_numbers(part), expected[25:75])


def test_similarity_and_face_orientation_formulas():
    import cv2

    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (6, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -8.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = scale * points @ rotation.T + shift
    assert np.allclose(similarity(points, target), np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    # the official formula recovers a known head rotation from pixel points (the quirk only changes its input)
    width = height = 512
    focal = (width / 2) / np.tan(np.pi / 6)
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    yaw = np.deg2rad(20)
    rvec = cv2.Rodrigues(np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
                         @ np.diag([1.0, -1.0, -1.0]))[0]
    pixels, _ = cv2.projectPoints(FACE_MODEL_POINTS, rvec, np.array([0.0, 0.0, 2000.0]), camera, np.zeros(4))
    pitch, yaw_deg, roll = face_orientation(pixels[:, 0], width, height)
    assert abs(abs(yaw_deg) - 20) < 0.5 and abs(pitch) < 0.5 and abs(roll) < 0.5


# --- bad inputs ---------------------------------------------------------------------------------------------------

def _refused(video: Path, models: Path, tmp_path: Path, *needles: str, **options) -> str:
    out = tmp_path / "persona" / "prepared"
    with pytest.raises(InputError) as caught:
        prepare_video(video, out, image_size=SIZE, models_dir=models, say=lambda line: None, **options)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message.strip()
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    return message


def test_refuses_video_without_a_face(tmp_path, models):
    frames = np.random.default_rng(0).integers(0, 255, (150, 64, 64, 3), dtype=np.uint8)
    audio = np.zeros(6 * 16000, np.float32)
    video = write_video(tmp_path / "noface.mp4", frames, np.arange(150) / 25, 25, audio)
    _refused(video, models, tmp_path, "no face was found")


def test_refuses_several_faces_without_a_choice(tmp_path, models):
    video = make_talking_video(tmp_path / "two.mp4", 6, size=192, faces=2)
    _refused(video, models, tmp_path, "shows 2 faces", "--face 0", "--face 1")
    _refused(video, models, tmp_path, "shows 2 faces", "--face largest", face=None)
    _refused(video, models, tmp_path, "numbered 0 to 1", face=2)


def test_refuses_face_missing_in_too_many_frames(tmp_path, models):
    video = make_talking_video(tmp_path / "gaps.mp4", 6, size=128, face_missing_fraction=0.2)
    _refused(video, models, tmp_path, "missing in 30 of 150 frames", "20 %")


def test_refuses_video_without_audio(tmp_path, models):
    video = make_talking_video(tmp_path / "mute.mp4", 6, size=64, audio=False)
    _refused(video, models, tmp_path, "no audio track")


def test_refuses_short_video_and_short_span(tmp_path, models):
    video = make_talking_video(tmp_path / "short.mp4", 3, size=64)
    _refused(video, models, tmp_path, "only 3.0 s", "at least 5 s")
    longer = make_talking_video(tmp_path / "long.mp4", 6, size=64)
    _refused(longer, models, tmp_path, "only 2.0 s", start=1.0, end=3.0)


def test_refuses_unreadable_file(tmp_path, models):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    _refused(junk, models, tmp_path, "cannot be read as a video")
    _refused(tmp_path / "absent.mp4", models, tmp_path, "does not exist")
