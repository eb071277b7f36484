"""`r3dp doctor --selftest`: the whole job (landmarks, fitting, masks, HuBERT → A2M → PNCC → MA → render → HTB-SR →
H.264 + AAC) on stand-in models, from a checkout with no models folder at all."""

from __future__ import annotations

import numpy as np

from r3dp_core import cli
from r3dp_core.geometry.landmarks import detect_faces, detect_image_points, write_standin_landmarker
from r3dp_core.standins import standin_face_layout
from r3dp_core.video_io import probe_video, read_video_frames


def test_selftest_writes_a_talking_clip_as_long_as_the_speech(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setenv("R3DP_MODELS", str(empty))
    out = tmp_path / "selftest.mp4"
    assert cli.main(["doctor", "--selftest", "--device", "cpu", "--seconds", "0.4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "10 frames (0.40 s of speech, landmarks: stand-in)" in printed and " fps on cpu" in printed
    assert f"wrote {out}" in printed
    for stage in ("preparing the portrait", "audio to motion", "rendering 10 frames"):
        assert stage in printed
    info = probe_video(out)
    assert info["frames"] == round(0.4 * 25) == 10 and info["fps"] == 25.0
    # AAC pads to whole 1024-sample frames: the track may be up to one frame (64 ms at 16 kHz) longer
    assert 0.4 <= info["audio_seconds"] <= 0.4 + 0.07
    frames = np.concatenate([chunk for chunk, _ in read_video_frames(out)])
    assert frames.shape == (10, 64, 64, 3) and frames.std() > 5
    assert list(empty.iterdir()) == []   # nothing was written to (or downloaded into) the models folder


def test_the_standin_landmarker_reports_its_face_in_every_image(tmp_path):
    layout = standin_face_layout()
    path = write_standin_landmarker(tmp_path / "face_landmarker.task", layout)
    frames = np.zeros((2, 100, 200, 3), np.uint8)
    points, found = detect_image_points(frames, path)
    assert points.shape == (2, 478, 2) and found.all()
    np.testing.assert_allclose(points[1], layout * (200, 100))
    assert len(detect_faces(frames[0], path)) == 1
    assert layout.min() > 0.05 and layout.max() < 0.85   # a face in the middle of the picture
