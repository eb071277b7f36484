"""MediaPipe 478-point landmarks on real images (IMAGE and VIDEO modes, face choice, errors)."""

import cv2
import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError, ModelFileError
from r3dp_core.geometry.landmarks import (
    EYE_IDS,
    IMAGE_MODE_IDS,
    INNER_LIP_IDS,
    OUTER_LIP_IDS,
    detect_landmarks_image,
    track_video,
)


@pytest.fixture(scope="module")
def portrait(portrait_path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(portrait_path)), cv2.COLOR_BGR2RGB)


def _face_box_area(points: torch.Tensor) -> float:
    extent = points.amax(0) - points.amin(0)
    return float(extent[0] * extent[1])


def test_portrait_landmarks_are_a_plausible_face(portrait, landmarker_model):
    result = detect_landmarks_image(portrait, landmarker_model)
    points = result.points[0]
    assert result.points.shape == (1, 478, 2) and result.points.dtype == torch.float32
    assert result.found.tolist() == [True]
    assert points.min() > 0 and points[:, 0].max() < 512 and points[:, 1].max() < 512
    eyes_y = points[list(EYE_IDS), 1].mean()
    mouth_y = points[list(INNER_LIP_IDS + OUTER_LIP_IDS), 1].mean()
    assert eyes_y < mouth_y - 20                                  # y grows downward: eyes above the mouth
    assert points[33, 0] < points[263, 0]                         # subject's right eye is on the image's left
    assert points[10, 1] < eyes_y < points[152, 1]                # forehead above, chin below the eyes
    # the astronaut's face is in the upper-left-centre of the picture
    center = points.mean(0)
    assert 180 < center[0] < 280 and 80 < center[1] < 180
    # float input in [0,1] (ComfyUI IMAGE) gives the same points
    as_float = torch.from_numpy(portrait).float() / 255
    assert torch.equal(detect_landmarks_image(as_float[None], landmarker_model).points, result.points)


def test_blank_image_raises_a_clear_error(landmarker_model):
    with pytest.raises(InputError, match="No face found in the photo"):
        detect_landmarks_image(np.full((256, 256, 3), 128, np.uint8), landmarker_model)


def test_missing_frames_without_require_all(portrait, landmarker_model):
    frames = np.stack([portrait, np.zeros_like(portrait)])
    result = detect_landmarks_image(frames, landmarker_model, require_all=False)
    assert result.found.tolist() == [True, False]
    assert torch.all(result.points[1] == 0)
    with pytest.raises(InputError, match=r"frame\(s\) \[1\]"):
        detect_landmarks_image(frames, landmarker_model)


def _two_faces(portrait: np.ndarray, big_first: bool) -> np.ndarray:
    crop = portrait[0:320, 64:384]
    big = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA)
    small = np.full((512, 512, 3), 128, np.uint8)
    small[56:456, 56:456] = cv2.resize(crop, (400, 400), interpolation=cv2.INTER_AREA)
    return np.concatenate([big, small] if big_first else [small, big], axis=1)


@pytest.mark.parametrize("big_first", [True, False])
def test_largest_face_wins_and_index_selects(portrait, big_first, landmarker_model):
    pair = _two_faces(portrait, big_first)
    largest = detect_landmarks_image(pair, landmarker_model, face="largest").points[0]
    big_side = largest[:, 0].mean() < 512
    assert bool(big_side) == big_first
    faces = [detect_landmarks_image(pair, landmarker_model, face=i).points[0] for i in range(2)]
    areas = [_face_box_area(p) for p in faces]
    assert _face_box_area(largest) == max(areas) > 1.2 * min(areas)
    assert (faces[0][:, 0].mean() < 512) != (faces[1][:, 0].mean() < 512)    # the two faces are distinct
    with pytest.raises(InputError, match="face index 2"):
        detect_landmarks_image(pair, landmarker_model, face=2)
    with pytest.raises(ValueError):
        detect_landmarks_image(pair, landmarker_model, face="smallest")


def test_video_mode_tracks_and_combines(portrait, landmarker_model):
    frames = np.stack([np.roll(portrait, (3 * i, 2 * i), (0, 1)) for i in range(4)])
    frames[2] = 0                                              # a frame without a face
    video = track_video(lambda: [frames], landmarker_model)
    image = detect_landmarks_image(frames, landmarker_model, face=0, require_all=False)
    assert video.points.shape == (4, 478, 2)
    assert video.found.tolist() == [True, True, False, True]
    # eye and mouth points come from IMAGE mode, the rest from VIDEO mode
    ids = list(IMAGE_MODE_IDS)
    keep = [0, 1, 3]
    assert torch.equal(video.points[keep][:, ids], image.points[keep][:, ids])
    # the frame without a face repeats the previous frame
    assert torch.equal(video.points[2], video.points[1])
    # the face moves with the image (3 px down, 2 px right per frame)
    shift = video.points[3].mean(0) - video.points[0].mean(0)
    assert torch.allclose(shift, torch.tensor([6.0, 9.0]), atol=1.5)
    assert torch.equal(track_video(lambda: [frames], landmarker_model, face=0).points, video.points)
    # read in blocks of any size (floats in [0,1] too), the same landmarks
    blocks = track_video(lambda: [frames[:1], frames[1:3] / 255.0, frames[3:]], landmarker_model)
    assert torch.equal(blocks.points, video.points) and torch.equal(blocks.found, video.found)
    # no face anywhere: zeros and nothing found; the caller decides
    empty = track_video(lambda: [np.zeros((2, 64, 64, 3), np.uint8)], landmarker_model)
    assert not empty.found.any() and not empty.points.any() and empty.points.shape == (2, 478, 2)


def test_missing_model_file(portrait, tmp_path):
    with pytest.raises(ModelFileError, match="face_landmarker.task"):
        detect_landmarks_image(portrait, tmp_path / "face_landmarker.task")
    bogus = tmp_path / "bogus.task"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a usable"):
        detect_landmarks_image(portrait, bogus)
