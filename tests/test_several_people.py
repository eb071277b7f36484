"""Several people in one photo, person by person (issue #23, item 4): each avatar's masks hold only its own
person, each paste changes only its own person's pixels, each portrait sways on its own seed, every face is
listed (small ones too) and a face choice that may not be what was meant is warned about."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from r3dp_core import cli
from r3dp_core.errors import InputError
from r3dp_core.geometry.compositing import BLEND_DILATION, blend_mask
from r3dp_core.geometry.framing import (
    CropSquare,
    DetectedFace,
    choose_face,
    crop_square,
    describe_faces,
    face_warnings,
    find_faces,
)
from r3dp_core.geometry.segmentation import BACKGROUND, CLOTHES, FACE_SKIN, restrict_to_person
from r3dp_core.pipeline.paste_back import paste_frames, source_person_mask
from r3dp_core.pipeline.types import Avatar


@pytest.fixture(scope="module")
def landmarker(shared_dir: Path) -> Path:
    return shared_dir / "models" / "face_landmarker.task"


@pytest.fixture(scope="module")
def astronaut(shared_dir: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)


def _face_points(left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """A stand-in for 478 landmarks: a grid filling the face box."""
    x, y = np.meshgrid(np.linspace(left, right, 22), np.linspace(top, bottom, 22))
    return np.stack([x.ravel(), y.ravel()], -1)


# ------------------------------------------------------------------------------------- the person's masks

def _two_people_labels(touching: bool = False) -> torch.Tensor:
    """128² labels: person A (head cols 10-40, body cols 5-50), person B (head 80-110, body 75-120), a 2x2 speck
    and the shoulder of a third person whose face is outside the frame (cols 124-127)."""
    labels = torch.zeros(128, 128, dtype=torch.long)
    labels[40:, 5:50] = CLOTHES
    labels[40:, 75:121] = CLOTHES
    if touching:
        labels[60:, 5:121] = CLOTHES
    labels[10:40, 10:40] = FACE_SKIN
    labels[15:45, 80:110] = FACE_SKIN
    labels[100:102, 62:64] = CLOTHES       # a speck of no one
    labels[70:, 124:] = CLOTHES            # the third person's shoulder
    return labels


A_FACE, B_FACE, C_FACE = _face_points(12, 12, 38, 38), _face_points(82, 17, 108, 43), _face_points(140, 30, 170, 60)


def test_the_person_mask_is_the_region_holding_the_chosen_face():
    labels = _two_people_labels()
    kept, others = restrict_to_person(labels, A_FACE, [B_FACE, C_FACE])
    region_a = torch.zeros(128, 128, dtype=torch.bool)
    region_a[40:, 5:50] = True
    region_a[10:40, 10:40] = True
    assert torch.equal(kept, torch.where(region_a, labels, BACKGROUND))   # A as it was, everyone else background
    assert bool(others[20, 90]) and bool(others[100, 100]) and bool(others[90, 126])  # B's head, body, C's shoulder
    assert not others[region_a].any() and not bool(others[100, 62])            # not A, not the speck
    kept_b, others_b = restrict_to_person(labels, B_FACE, [A_FACE, C_FACE])
    assert bool(kept_b[20, 90]) and bool(kept_b[100, 100]) and not kept_b[region_a].any()
    assert bool(others_b[20, 20]) and not bool(others_b[20, 90])


def test_touching_people_are_split_between_their_faces():
    labels = _two_people_labels(touching=True)      # one connected region holds both faces
    kept, others = restrict_to_person(labels, A_FACE, [B_FACE])
    columns = torch.nonzero(kept[60:] != BACKGROUND)[:, 1]
    assert int(columns.min()) == 5 and int(columns.max()) == 59    # column 60: midway between the faces (25, 95)
    assert bool(others[80, 60]) and bool(others[80, 120]) and not others[:, :60].any()
    kept_b, _ = restrict_to_person(labels, B_FACE, [A_FACE])
    assert int(torch.nonzero(kept_b[60:, :124] != BACKGROUND)[:, 1].min()) == 61


@pytest.fixture(scope="module")
def people(astronaut, landmarker):
    """The e2e fixture's photo: two people whose crop squares overlap (1024x512), with their masks."""
    from r3dp_core.parity.synthetic_job import overlapping_people

    return overlapping_people(astronaut, landmarker)


def test_the_two_people_photo_has_overlapping_squares(people, landmarker):
    photo, head, body, seam = people
    faces = find_faces(photo, landmarker)
    assert len(faces) == 2 and faces[0].centre[0] < seam < faces[1].centre[0]
    left, right = (crop_square(face, *photo.shape[:2], 0.2) for face in faces)
    assert left.left + left.side - right.left > 40                     # the squares overlap
    person = np.maximum(head, body) > 127
    assert person[:, right.left:seam].any() and person[:, seam:left.left + left.side].any()
    assert not person[:, seam - 4:seam + 4].any()                      # two separate people


@pytest.fixture(scope="module")
def face_kit(tmp_path_factory, shared_dir):
    from r3dp_core.parity.synthetic_job import write_bfm
    from r3dp_core.pipeline.loaders import load_face_kit

    root = tmp_path_factory.mktemp("kit")
    write_bfm(root, shared_dir)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", root / "face_landmarker.task")
    return load_face_kit(root, need_segmenter=False)


@pytest.fixture(scope="module")
def two_avatars(people, face_kit) -> list[Avatar]:
    """The left and the right person of the two-people photo, prepared from its masks."""
    from r3dp_core.pipeline.stages import PortraitMasks, prepare_source

    photo, head, body, _ = people
    masks = PortraitMasks(torch.from_numpy(head).float() / 255, torch.from_numpy(body).float() / 255)
    return [prepare_source(photo, face_kit, masks=masks, face=face) for face in (0, 1)]


def test_each_avatar_of_a_shared_photo_holds_only_its_own_person(people, two_avatars):
    seam = people[3]
    for face, neighbour_side in ((0, "right"), (1, "left")):
        avatar = two_avatars[face]
        left, _, side = avatar.photo_square.tolist()
        seam_512 = (seam - left) * 512 / side
        columns = torch.arange(512)
        neighbour = columns > seam_512 + 3 if neighbour_side == "right" else columns < seam_512 - 3
        person = avatar.segmap[0, 1:].sum(0) > 0
        assert person[:, ~neighbour].any() and not person[:, neighbour].any(), face   # no neighbour in its masks
        assert bool((avatar.head_image[0][:, :, neighbour] == -1).all())               # nor in the head image
        others = avatar.other_people[0, 0] > 0
        assert others[:, neighbour].sum() > 2000 and not others[:, ~neighbour].any()   # the neighbour, marked
        assert avatar.face_index.tolist() == [face]
        # the neighbour stays in the background plate (photo pixels) instead of being filled in
        strip = avatar.image[0][:, 300:, neighbour.nonzero()[:, 0]]
        plate = avatar.background[0][:, 300:, neighbour.nonzero()[:, 0]]
        assert (strip - plate).abs().mean() < 0.02


def test_chained_paste_backs_on_the_two_people_photo(people, two_avatars):
    """What the e2e two-people workflow checks, without ComfyUI: with HTB-SR's person mask covering each whole
    square (the worst case), the second paste keeps every pixel of the first person as the first paste left it."""
    from r3dp_core.pipeline.paste_back import paste_clip

    photo, head, body, seam = people
    person = np.maximum(head, body) > 127
    columns = np.arange(photo.shape[1])
    left_person, right_person = person & (columns < seam), person & (columns >= seam)
    generator = torch.Generator().manual_seed(1)
    first, _ = paste_clip(torch.rand(2, 512, 512, 3, generator=generator), two_avatars[0])
    second, mask = paste_clip(torch.rand(2, 512, 512, 3, generator=generator), two_avatars[1], background=first)
    original = torch.from_numpy(photo).float() / 255
    strip = torch.from_numpy(left_person & (columns >= seam - 24))
    assert bool((first[:, strip] != original[strip]).any())          # the first person's strip in the second square
    left, right = torch.from_numpy(left_person), torch.from_numpy(right_person)
    assert torch.equal(second[:, left], first[:, left]) and float(mask[:, left].max()) == 0.0
    assert torch.equal(first[:, right], original[right].expand(2, -1, -1))
    assert bool((second[:, right] != first[:, right]).any())


# ------------------------------------------------------------------------------------------- paste-back

def _avatar(person: torch.Tensor, others: torch.Tensor | None) -> Avatar:
    """An avatar whose 512² segmentation is ``person`` (clothes) with ``others`` marked as other people."""
    labels = torch.where(person, CLOTHES, BACKGROUND)
    segmap = torch.nn.functional.one_hot(labels, 6).permute(2, 0, 1).float()[None]
    zero = torch.zeros(1, 3)
    return Avatar(image=torch.zeros(1, 3, 512, 512), id=torch.zeros(1, 80), exp=torch.zeros(1, 64), euler=zero,
                  trans=zero, segmap=segmap, other_people=None if others is None else others[None, None].float())


def _columns(start: int, stop: int, top: int = 120) -> torch.Tensor:
    mask = torch.zeros(512, 512, dtype=torch.bool)
    mask[top:, start:stop] = True
    return mask


def test_the_blend_is_zero_on_the_other_people():
    person, others = _columns(80, 440), _columns(460, 512)
    source = source_person_mask(_avatar(person, others))
    assert source.shape == (1, 2, 512, 512)
    # HTB-SR's person mask of a frame reaching into the neighbour (a head swaying), or the whole square
    for frame_person in (_columns(80, 500, 100)[None, None].float().expand(2, -1, -1, -1), None):
        weights = blend_mask(frame_person, source)
        near = _columns(460 - BLEND_DILATION, 512)
        assert float(weights[..., near].abs().max()) == 0.0             # the neighbour, grown by the dilation
        assert float(weights[..., 300:, 200:400].min()) == 1.0          # the person itself fully pasted
    # an avatar of one person (or of an older r3dp) keeps today's mask
    alone = source_person_mask(_avatar(person, None))
    assert alone.shape == (1, 1, 512, 512)
    frame_person = person[None, None].float()
    assert torch.equal(blend_mask(frame_person, alone), blend_mask(frame_person, source[:, :1]))


def test_chained_pastes_leave_the_person_pasted_first_alone():
    """Two people, overlapping squares: A is pasted, then B into A's frames; B's paste changes none of A's
    pixels, and A's paste none of B's."""
    generator = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (1, 256, 512, 3), dtype=torch.uint8, generator=generator)
    square_a, square_b = CropSquare(0, 0, 256), CropSquare(192, 0, 256)    # overlapping by 64 columns
    # in the photo: A on columns 40-220, B on columns 230-460 (rows 60 on)
    region_a, region_b = torch.zeros(256, 512, dtype=torch.bool), torch.zeros(256, 512, dtype=torch.bool)
    region_a[60:, 40:220] = True
    region_b[60:, 230:460] = True

    def in_frame(region: torch.Tensor, square: CropSquare) -> torch.Tensor:
        cut = region[:, square.left:square.left + square.side].float()[None, None]
        return torch.nn.functional.interpolate(cut, size=(512, 512), mode="nearest")[0, 0] > 0.5

    avatar_a = _avatar(in_frame(region_a, square_a), in_frame(region_b, square_a))
    avatar_b = _avatar(in_frame(region_b, square_b), in_frame(region_a, square_b))
    frames_a, frames_b = (torch.rand(2, 3, 512, 512, generator=generator) for _ in range(2))
    moving = torch.zeros(2, 1, 512, 512)
    moving[:, :, 100:, 60:512] = 1        # HTB-SR's person masks, each reaching over the other person
    pasted_a, mask_a = paste_frames(frames_a, moving, source_person_mask(avatar_a), photo, square_a)
    pasted_b, mask_b = paste_frames(frames_b, moving.flip(-1), source_person_mask(avatar_b), pasted_a, square_b)
    assert torch.equal(pasted_a[:, region_b], photo.expand(2, -1, -1, -1)[:, region_b])
    assert torch.equal(pasted_b[:, region_a], pasted_a[:, region_a])       # A's animated pixels untouched
    assert float(mask_b[:, region_a].max()) == 0.0 and float(mask_a[:, region_b].max()) == 0.0
    assert float(mask_a[:, region_a].mean()) > 0.9 and float(mask_b[:, region_b].mean()) > 0.9
    assert not torch.equal(pasted_b[:, region_b], pasted_a[:, region_b])   # B itself is pasted


# ------------------------------------------------------------------------------------ natural head motion

def test_each_portrait_gets_its_own_natural_motion_seed():
    from r3dp_core.pipeline.pose import PoseRecipe, portrait_seed, resolve_pose
    from r3dp_core.pipeline.types import Motion
    from r3dp_core.standins import synthetic_avatar

    avatar = dataclasses.replace(synthetic_avatar(32), euler=torch.tensor([[0.05, -0.1, 0.0]]))
    motion = Motion(exp=torch.zeros(60, 64))
    recipe = PoseRecipe(mode="natural", seed=7)
    single = resolve_pose(recipe, avatar, motion)
    first, second = (resolve_pose(recipe, avatar, motion, index) for index in (0, 1))
    assert torch.equal(first.euler, single.euler) and torch.equal(first.trans, single.trans)
    assert float((second.euler - first.euler).abs().max()) > 1e-3                # not in sync
    assert torch.equal(second.euler, resolve_pose(dataclasses.replace(recipe, seed=8), avatar, motion).euler)
    # face 1 of a photo (its own Image → Triplane node) sways as the second portrait would
    face_one = dataclasses.replace(avatar, face_index=torch.tensor([1]))
    assert portrait_seed(7, face_one) == 8 and portrait_seed(7, face_one, 2) == 10
    assert torch.equal(resolve_pose(recipe, face_one, motion).euler, second.euler)
    static = PoseRecipe(mode="static")                                              # only natural motion is seeded
    assert torch.equal(resolve_pose(static, avatar, motion, 1).euler, resolve_pose(static, avatar, motion).euler)


# ---------------------------------------------------------------------------------------- finding faces

def _small_face(astronaut: np.ndarray, size: int = 256) -> np.ndarray:
    """The astronaut shrunk to ``size`` px (face about 45 px wide) on a grey 1024² photo."""
    canvas = np.full((1024, 1024, 3), 120, np.uint8)
    canvas[400:400 + size, 300:300 + size] = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
    return canvas


def test_finer_windows_find_small_faces_and_invent_none(astronaut, landmarker):
    faces = find_faces(_small_face(astronaut), landmarker)             # today's windows missed this face
    assert len(faces) == 1
    left, top, right, bottom = faces[0].box
    assert 385 < left < 395 and 430 < top < 440 and 40 < right - left < 50 and 45 < bottom - top < 58
    # a wide photo searched with 375 px windows: a window showing only a collar once made MediaPipe see a face
    wide = cv2.resize(np.concatenate([astronaut, astronaut], 1), (3000, 1500))
    assert [round(face.centre[0] / 100) for face in find_faces(wide, landmarker)] == [7, 22]


def test_largest_skips_faces_under_one_percent_and_warns_when_ambiguous():
    def face(left, top, side):
        return DetectedFace(_face_points(left, top, left + side, top + side))

    small, big, bigger = face(10, 10, 50), face(200, 10, 300), face(600, 10, 310)
    size = (1000, 1000)                                                  # 50² = 0.25 % of the photo
    assert choose_face([small, big, bigger], "largest", photo_size=size) is bigger
    assert face_warnings([small, big, bigger], "largest", size) == [
        "'largest' is ambiguous: faces 2 and 1 differ in area by only 6% (under 10%); face 2 is animated. Choose "
        "the person by index (face 1 or 2, e.g. --face 2) to be sure."]
    assert face_warnings([small, face(200, 10, 200), bigger], "largest", size) == []
    with pytest.raises(InputError, match=r"Only faces under 1% of the photo's area were found \(face 0 covers "
                                         r"0\.25%; face 1 covers 0\.64%\).*choose the face by its index"):
        choose_face([small, face(500, 10, 80)], "largest", photo_size=size)
    assert choose_face([small], 0, photo_size=size) is small            # an explicit index may pick it ...
    assert face_warnings([small], 0, size) == [                          # ... with a warning
        "face 0 covers only 0.25% of the photo (under 1%); it is animated as asked, from very few pixels, so "
        "expect a soft, unsteady result."]
    assert describe_faces([small, big], *size) == [
        "face 0: x=10, y=10, w=50, h=50 (0.25% of the photo), under 1%: never picked by 'largest'",
        "face 1: x=200, y=10, w=300, h=300 (9.0% of the photo)"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_dir) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    return folder


def _dry_run(capsys, models: Path, tmp_path: Path, photo: np.ndarray, shared_dir: Path, *extra: str):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    code = cli.main(["generate", "--image", str(image), "--audio", str(shared_dir / "testdata" / "speech_en_16k.wav"),
                     "--out", str(tmp_path / "o.mp4"), "--models-dir", str(models), "--dry-run", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_lists_every_face_and_warns_about_the_choice(astronaut, models, tmp_path, capsys, shared_dir):
    two = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)        # two faces of the same size
    code, out, err = _dry_run(capsys, models, tmp_path, two, shared_dir)
    assert code == 0 and err == "", err
    lines = re.findall(r"face (\d): x=(\d+), y=(\d+), w=(\d+), h=(\d+) \((\d\.\d)% of the photo\)", out)
    assert [(n, pct) for n, *_, pct in lines] == [("0", "1.8"), ("1", "1.8")]
    assert abs(int(lines[0][1]) - 181) <= 3 and abs(int(lines[1][1]) - 752) <= 3
    assert re.search(r"^warning    'largest' is ambiguous: faces \d and \d", out, re.M)
    code, out, _ = _dry_run(capsys, models, tmp_path, two, shared_dir, "--face", "1")
    assert code == 0 and "ambiguous" not in out and "number 1 from the left" in out
    # a face too small for 'largest': listed, refused for 'largest', animated when asked for by index
    small = _small_face(astronaut)
    code, out, err = _dry_run(capsys, models, tmp_path, small, shared_dir)
    assert code == 2 and "Only faces under 1% of the photo's area were found (face 0 covers 0.2" in err
    code, out, err = _dry_run(capsys, models, tmp_path, small, shared_dir, "--face", "0")
    assert code == 0, err
    assert re.search(r"face 0: x=\d+, y=\d+, w=4\d, h=\d+ \(0\.2\d% of the photo\), under 1%", out)
    assert re.search(r"^warning    face 0 covers only 0\.2\d% of the photo", out, re.M)
