"""Faces found on the photo as it is, face choice, the square around the face, and equivalence with the official
path for square photos whose face already fits."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError
from r3dp_core.geometry.crop import prepare_source_image, resize_square
from r3dp_core.geometry.framing import CropSquare, DetectedFace, choose_face, crop_square, find_faces
from r3dp_core.geometry.landmarks import detect_landmarks_image


@pytest.fixture(scope="module")
def landmarker(shared_dir: Path) -> Path:
    return shared_dir / "models" / "face_landmarker.task"


@pytest.fixture(scope="module")
def astronaut(shared_dir: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)


ASTRONAUT_FACE_CENTRE = (225.0, 125.0)  # x, y of the landmark box in the 512² test photo


def _centres(faces: list[DetectedFace]) -> list[tuple[float, float]]:
    return [face.centre for face in faces]


def test_faces_are_found_on_wide_and_tall_photos(astronaut, landmarker):
    side_by_side = np.concatenate([astronaut, astronaut], axis=1)        # 1024x512, two people (2:1)
    stacked = np.concatenate([astronaut, astronaut], axis=0)             # 512x1024 (1:2)
    padded_wide = np.pad(astronaut, ((0, 0), (256, 256), (0, 0)), mode="edge")  # one person in the middle
    cx, cy = ASTRONAUT_FACE_CENTRE
    for image, expected in ((side_by_side, [(cx, cy), (cx + 512, cy)]), (stacked, [(cx, cy), (cx, cy + 512)]),
                            (padded_wide, [(cx + 256, cy)])):
        faces = find_faces(image, landmarker)
        assert np.allclose(_centres(faces), expected, atol=4), _centres(faces)
        for face in faces:  # every face with its box, in the photo's pixels
            left, top, right, bottom = face.box
            assert 80 < right - left < 100 and 95 < bottom - top < 115
    assert find_faces(np.full((300, 600, 3), 128, np.uint8), landmarker) == []


def _two_sizes(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut at full size on the right, at half size on the left (1024x512)."""
    small = np.pad(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA), ((128, 128), (0, 0), (0, 0)),
                   mode="edge")
    return np.concatenate([np.pad(small, ((0, 0), (128, 128), (0, 0)), mode="edge"), astronaut], axis=1)


def test_face_choice_by_size_and_by_index_left_to_right(astronaut, landmarker):
    faces = find_faces(_two_sizes(astronaut), landmarker)
    assert len(faces) == 2 and faces[0].centre[0] < 512 < faces[1].centre[0]
    assert faces[1].area > 3 * faces[0].area
    assert choose_face(faces, "largest") is faces[1]
    assert choose_face(faces, 0) is faces[0] and choose_face(faces, 1) is faces[1]
    with pytest.raises(InputError, match=r"Face 2 was asked for, but the photo shows 2 face\(s\).*left to right"):
        choose_face(faces, 2)
    with pytest.raises(InputError, match="No face found in the photo"):
        choose_face([], "largest")
    # through the whole front end: face 0 is cut around the small face on the left
    left = prepare_source_image(_two_sizes(astronaut), landmarker, face=0)
    right = prepare_source_image(_two_sizes(astronaut), landmarker)
    assert left.faces == right.faces == 2
    assert left.square.left + left.square.side < 512 < right.square.left
    assert left.square.side == pytest.approx(right.square.side / 2, rel=0.1)


def _face(left: float, top: float, right: float, bottom: float) -> DetectedFace:
    return DetectedFace(np.array([[left, top], [right, bottom], [(left + right) / 2, (top + bottom) / 2]]))


def test_crop_square_follows_the_face_area_rule_and_pads_instead_of_shifting():
    face = _face(500, 300, 600, 420)                       # 100x120 box, centre (550, 360), in a 2000x1000 photo
    square = crop_square(face, 1000, 2000, 0.2)
    assert square.side == round(np.sqrt(100 * 120 / 0.2))  # 245: the face covers 0.2 of the square
    assert face.area / square.side**2 == pytest.approx(0.2, rel=0.01)
    assert (square.left + square.side / 2, square.top + square.side / 2) == pytest.approx((550, 360), abs=1)
    assert crop_square(face, 1000, 2000, 0.4).side == round(np.sqrt(100 * 120 / 0.4))
    # near the corner the square stays centred on the face and reaches past the photo ...
    corner = crop_square(_face(0, 10, 100, 130), 1000, 2000, 0.2)
    assert corner.left < 0 and corner.top < 0 and corner.side == square.side
    # ... where it is padded by replicating the edge pixels
    photo = np.random.default_rng(0).integers(0, 256, (1000, 2000, 3), dtype=np.uint8)
    cut = corner.cut(photo)
    inside_left, inside_top = -corner.left, -corner.top
    assert cut.shape == (corner.side, corner.side, 3)
    assert np.array_equal(cut[inside_top:, inside_left:], photo[:corner.side - inside_top, :corner.side - inside_left])
    assert np.array_equal(cut[inside_top:, 0], photo[:corner.side - inside_top, 0])          # the left column repeated
    assert np.array_equal(cut[0, inside_left:], photo[0, :corner.side - inside_left])         # the top row repeated
    # a face already big enough: the largest square inside the photo, slid as close to the face as it goes
    big = _face(1500, 250, 2000, 750)       # 500x500: covers 0.25 of the 1000² square
    assert crop_square(big, 1000, 2000, 0.2) == CropSquare(1000, 0, 1000)
    assert crop_square(_face(100, 100, 400, 400), 512, 512, 0.2) == CropSquare(0, 0, 512)   # a square photo: whole
    with pytest.raises(InputError, match="fraction"):
        crop_square(face, 1000, 2000, 0.0)


# ----------------------------------------------------------------------------------------------- equivalence

def _official_source_image(image, landmarker_path, min_face_area_percent=0.2, face="largest"):
    """Today's front end before this change (official ``crop_img_on_face_area_percent``), for a face that fits:
    the face is measured on the photo squashed to 512², the file is kept unchanged, its landmarks found on it."""
    from r3dp_core.geometry.landmarks import detect_image_points

    original = np.asarray(image)
    squashed = resize_square(original)
    points, found = detect_image_points(squashed[None], landmarker_path, face=face)
    face_area = DetectedFace(np.asarray(points[0], np.float64)).area / 512**2    # of the squashed 512² photo
    assert found[0] and face_area >= min_face_area_percent, "only the face-fits case"
    landmarks = detect_landmarks_image(original, landmarker_path, face=face).points[0]
    return SimpleNamespace(image=torch.from_numpy(original), image_512=torch.from_numpy(squashed), points=landmarks,
                           square=CropSquare(0, 0, original.shape[0]), photo_size=original.shape[:2],
                           face_index=0, other_faces=(),
                           map_plane=lambda plane: torch.from_numpy(resize_square(np.asarray(plane, np.float32))))


@pytest.fixture(scope="module")
def face_kit(tmp_path_factory, shared_dir):
    from r3dp_core.parity.synthetic_job import write_bfm
    from r3dp_core.pipeline.loaders import load_face_kit

    root = tmp_path_factory.mktemp("kit")
    write_bfm(root, shared_dir)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", root / "face_landmarker.task")
    return load_face_kit(root, need_segmenter=False)


def test_square_photo_whose_face_fits_gives_todays_result(astronaut, face_kit, monkeypatch):
    from r3dp_core.parity.synthetic_job import face_masks
    from r3dp_core.pipeline import stages

    tight = cv2.resize(astronaut[25:225, 125:325], (384, 384))   # face ≈ 0.23 of the photo: no crop needed
    for image, area in ((tight, 0.2), (astronaut, 0.03)):
        head, body = face_masks(image, face_kit.landmarker_path)
        masks = stages.PortraitMasks(torch.from_numpy(head).float() / 255, torch.from_numpy(body).float() / 255)
        new = stages.prepare_source(image, face_kit, masks=masks, min_face_area=area)
        with monkeypatch.context() as patch:
            patch.setattr(stages, "prepare_source_image", _official_source_image)
            today = stages.prepare_source(image, face_kit, masks=masks, min_face_area=area)
        for field in ("image", "id", "exp", "euler", "trans", "head_image", "torso_image", "background", "segmap"):
            assert torch.equal(getattr(new, field), getattr(today, field)), field
        assert new.photo_square.tolist() == [0, 0, image.shape[0]] and torch.equal(new.photo, torch.from_numpy(image))


def test_wide_photo_of_two_people_prepares_the_chosen_one(astronaut, landmarker):
    side_by_side = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    first, second = (prepare_source_image(side_by_side, landmarker, face=index) for index in (0, 1))
    assert first.photo_size == second.photo_size == (512, 1024)
    assert first.square.side == second.square.side and first.square.left + first.square.side <= 512
    assert second.square.left >= 512
    # the second is the first's mirror image: its 512² source is the mirrored first source
    assert np.abs(second.image_512.numpy()[:, ::-1].astype(int) - first.image_512.numpy()).mean() < 8
