"""Motion files: official .npy coefficient dicts and our .safetensors motions; the new generate options' checks."""

from __future__ import annotations

import os
import re
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from r3dp_core import cli
from r3dp_core.errors import InputError
from r3dp_core.pipeline.motion_files import load_motion_file, load_official_motion, motion_at_25_fps, read_npy_dict
from r3dp_core.pipeline.types import Motion

ERROR = "r3dp generate: error: "


def official_coefficients(frames: int = 8, pose_frames: int | None = None, seed: int = 0) -> dict:
    """A dict with the official key names and shapes (as the official data tools np.save them)."""
    rng = np.random.default_rng(seed)
    pose_frames = pose_frames or frames
    t = np.arange(pose_frames, dtype=np.float32)
    return {"id": rng.normal(size=(frames, 80)).astype(np.float32) * 0.1,
            "exp": rng.normal(size=(frames, 64)).astype(np.float32) * 0.05,
            "euler": np.stack([0.02 * np.sin(t), 0.1 * np.sin(t / 2), 0.01 * t], 1).astype(np.float32),
            "trans": np.stack([0.01 * t, -0.01 * t, np.full_like(t, 0.3)], 1).astype(np.float32)}


def _save(path: Path, content) -> Path:
    np.save(path, content, allow_pickle=True)
    return path


def test_official_dict_becomes_a_motion(tmp_path):
    coeffs = official_coefficients(8)
    motion = load_motion_file(_save(tmp_path / "drv.npy", {**coeffs, "note": "from the official tools", "fps": 25}))
    assert motion.fps == 25.0 and motion.num_frames == 8 and motion.blink is None and motion.audio is None
    assert torch.equal(motion.exp, torch.from_numpy(coeffs["exp"]))
    assert torch.equal(motion.euler, torch.from_numpy(coeffs["euler"]))
    assert torch.equal(motion.trans, torch.from_numpy(coeffs["trans"]))
    # expressions only (an audio-style coefficient file), float64 and a batch of one are accepted
    exp_only = load_official_motion(_save(tmp_path / "exp.npy", {"exp": coeffs["exp"][None].astype(np.float64)}))
    assert exp_only.euler is None and exp_only.exp.dtype == torch.float32 and exp_only.exp.shape == (8, 64)
    # a pose of another length is fitted to the expressions by the official ping-pong
    mirrored = load_official_motion(_save(tmp_path / "mirror.npy", official_coefficients(8, pose_frames=3)))
    short = official_coefficients(8, pose_frames=3)["euler"]
    assert torch.equal(mirrored.euler, torch.from_numpy(short[[0, 1, 2, 2, 1, 0, 0, 1]]))


def test_our_saved_motions_load_through_the_same_entry(tmp_path):
    motion = Motion(exp=torch.rand(5, 64), euler=torch.rand(5, 3), trans=torch.rand(5, 3), blink=torch.rand(5))
    loaded = load_motion_file(motion.save(tmp_path / "ours"))
    assert torch.equal(loaded.exp, motion.exp) and torch.equal(loaded.blink, motion.blink)
    with pytest.raises(InputError, match="neither"):
        load_motion_file(tmp_path / "clip.pt")


def test_motion_at_other_frame_rates_is_resampled_to_25_fps():
    motion = Motion(exp=torch.arange(10.0)[:, None].expand(10, 64).clone(), fps=50.0, euler=torch.rand(10, 3),
                    trans=torch.rand(10, 3), blink=torch.rand(10))
    at25 = motion_at_25_fps(motion)
    assert at25.fps == 25.0 and at25.exp[:, 0].tolist() == [0, 2, 4, 6, 8] and at25.blink is None
    assert torch.equal(at25.euler, motion.euler[::2])
    assert motion_at_25_fps(at25) is at25


def test_pickled_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _save(tmp_path / "evil.npy", {"exp": Payload()})
    with pytest.raises(InputError, match=r"refers to (posix|nt)\.system.*not loaded \(a pickle can run code\)"):
        load_motion_file(path)
    assert not marker.exists()
    # the same for any class, even a harmless one
    with pytest.raises(InputError, match="collections.OrderedDict"):
        read_npy_dict(_save(tmp_path / "ordered.npy", OrderedDict(exp=np.zeros((2, 64)))))


BAD_FILES = {
    "plain-array": (lambda: np.zeros((8, 64), np.float32),
                    r"single float32 array of shape \(8, 64\), not the official"),
    "list": (lambda: np.array([np.zeros(3)] * 2 + [None], dtype=object),
             "holds a ndarray, not the official coefficient dict"),
    "no-exp": (lambda: {"euler": np.zeros((4, 3)), "trans": np.zeros((4, 3))}, "no 'exp' entry .found: euler, trans"),
    "exp-width": (lambda: {"exp": np.zeros((4, 70))}, r"'exp' must be \[T,64\], got \[4, 70\]"),
    "exp-text": (lambda: {"exp": "abc"}, r"'exp' must be a numeric array \[T,64\], got a str"),
    "half-pose": (lambda: {"exp": np.zeros((4, 64)), "euler": np.zeros((4, 3))}, "without 'trans'"),
    "pose-lengths": (lambda: {"exp": np.zeros((4, 64)), "euler": np.zeros((4, 3)), "trans": np.zeros((5, 3))},
                     "same number of frames"),
    "nan": (lambda: {"exp": np.full((4, 64), np.nan)}, "NaN or infinite"),
    "identity-width": (lambda: {"exp": np.zeros((4, 64)), "id": np.zeros((4, 64))}, r"'id' must be \[T,80\]"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_coefficient_files_say_what_is_wrong(case, tmp_path):
    build, problem = BAD_FILES[case]
    path = _save(tmp_path / f"{case}.npy", build())
    with pytest.raises(InputError, match=problem) as caught:
        load_motion_file(path)
    assert str(caught.value).startswith(str(path))
    not_npy = tmp_path / "text.npy"
    not_npy.write_text("exp = [1, 2, 3]")
    with pytest.raises(InputError, match="not a readable .npy file"):
        load_motion_file(not_npy)


# ------------------------------------------------------------------------------------------ generate's options

@pytest.fixture(scope="module")
def landmarker_models(tmp_path_factory, shared_dir) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    return folder


def _generate(capsys, models: Path, tmp_path: Path, image: Path, *extra: str):
    code = cli.main(["generate", "--image", str(image), "--out", str(tmp_path / "o.mp4"), "--models-dir", str(models),
                     "--dry-run", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_with_an_official_motion_file_needs_no_audio(capsys, tmp_path, landmarker_models, shared_dir):
    image = shared_dir / "testdata" / "astronaut_512.png"
    path = _save(tmp_path / "drv.npy", official_coefficients(12))
    code, out, err = _generate(capsys, landmarker_models, tmp_path, image, "--motion", str(path))
    assert code == 0, err
    assert f"motion     --motion {path}: 12 frames at 25 fps" in out
    assert "12 frames at 25 fps, expressions and head pose" in out
    bad = _save(tmp_path / "bad.npy", {"exp": np.zeros((3, 10))})
    code, out, err = _generate(capsys, landmarker_models, tmp_path, image, "--motion", str(bad))
    assert code == 2 and err.strip().startswith(f"{ERROR}{bad}: 'exp' must be [T,64]") and "Traceback" not in err


OPTION_ERRORS = {
    "pose-video-static": (["--camera", "static"], "--pose-video is followed only by --camera driving .or auto.; "
                                                  "--camera static keeps its own head path and would ignore the video"),
    "pose-video-orbit": (["--camera", "orbit"], "--camera orbit keeps its own head path"),
    "pose-video-keyframes": (["--camera", "keyframes"], "--camera keyframes keeps its own head path"),
    "pose-video-natural": (["--camera", "natural"], "--camera natural keeps its own head path and would ignore"),
    "pose-strength": (["--camera", "driving", "--pose-strength", "-0.5"], r"pose strength -0.5 is outside 0..3"),
    "pose-smoothing": (["--camera", "driving", "--pose-smoothing", "4"],
                       r"smoothing window must be an odd number of frames >= 1 \(official 7, 1 = none\), got 4"),
    "motion-and-video": (["--motion", "m.npy", "--expression-video", "v.mp4", "--camera", "driving"],
                         "--motion and --expression-video both drive the face"),
    "head-threshold": (["--camera", "driving", "--head-threshold", "1.5"], r"--head-threshold 1.5 is outside 0..1"),
}


@pytest.mark.parametrize("case", list(OPTION_ERRORS))
def test_conflicting_options_are_refused_before_any_file_is_read(case, capsys, tmp_path, landmarker_models):
    extra, problem = OPTION_ERRORS[case]
    # nothing exists: the options are checked first, so the message is about them, not a missing file
    code, out, err = _generate(capsys, landmarker_models, tmp_path, tmp_path / "none.png", "--audio", "none.wav",
                               "--pose-video", "pose.mp4", *extra)
    assert code == 2 and out == "" and "\n" not in err.strip() and "Traceback" not in err
    assert re.search(problem, err), err
