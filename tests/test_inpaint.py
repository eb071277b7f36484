"""Torso inpainting, KNN background and the face-area crop (spec §3.1, §7, §8)."""


import cv2
import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError
from r3dp_core.geometry.crop import prepare_source_image
from r3dp_core.geometry.framing import DetectedFace
from r3dp_core.geometry.inpaint import extract_background, inpaint_torso, resize_background
from r3dp_core.geometry.landmarks import detect_landmarks_image
from r3dp_core.geometry.segmentation import BODY_SKIN, CLOTHES, FACE_SKIN, HAIR


def portrait_scene(height: int = 128, width: int = 64):
    """A head (hair + face) over a neck over clothes, on a textured image."""
    labels = np.zeros((height, width), np.uint8)
    labels[60:100, 20:44] = FACE_SKIN
    labels[55:60, 18:46] = HAIR
    labels[90:100, 26:38] = BODY_SKIN            # neck under the chin, head on both sides
    labels[100:, 8:56] = CLOTHES
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([(rows * 2 + cols) % 256, (cols * 4 + 7) % 256, (rows * cols) % 251], -1).astype(np.uint8)
    return image, labels


def reference_inpaint(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Spec §7 written out column by column with plain loops."""
    height, width = labels.shape
    head = np.isin(labels, (1, 3, 5))
    clothes = labels == 4
    neck = labels == 2
    for _ in range(3):                            # vertical 3×1 dilation, 3 iterations
        grown = neck.copy()
        grown[1:] |= neck[:-1]
        grown[:-1] |= neck[1:]
        neck = grown
    work = image.copy()
    work[head] = 0
    painted_torso = np.zeros_like(head)
    painted_neck = np.zeros_like(head)
    for region, length, push, painted in ((clothes, 9, 0, painted_torso), (neck, 53, 4, painted_neck)):
        for col in range(width):
            rows = np.flatnonzero(region[:, col])
            if rows.size == 0 or not head[(rows[0] - 1) % height, col]:
                continue
            source = rows[0] + min(rows.size - 1, push)
            colour = image[source, col]
            for k in range(length):
                row = (source - k) % height
                work[row, col] = [int(c * 0.98 ** k) for c in colour]
                painted[row, col] = True
    blurred = cv2.GaussianBlur(work, (5, 5), 4)
    work[painted_neck] = blurred[painted_neck]
    work[~(neck | clothes | painted_torso | painted_neck)] = 0
    return work


def test_inpaint_torso_matches_the_spec_reference():
    image, labels = portrait_scene()
    result = inpaint_torso(torch.from_numpy(image), torch.from_numpy(labels))
    assert result.dtype == torch.uint8 and result.shape == image.shape
    expected = reference_inpaint(image, labels)
    assert np.array_equal(result.numpy(), expected)
    # torso fill: columns where clothes touch the head get 9 darkening rows above row 100 (unblurred)
    col = 21
    for k in range(9):
        assert result[100 - k, col].tolist() == [int(c * 0.98 ** k) for c in image[100, col]]
    assert np.all(result.numpy()[100 - 9, col] == 0)
    # neck fill reaches 53 rows up from the pushed-down source row (top of the dilated neck 87, + 4)
    assert np.all(result.numpy()[91 - 52:92, 30].any(-1)) and not result.numpy()[91 - 53, 30].any()
    # head pixels outside the painted columns, and the background, are black
    assert not result.numpy()[70, 22 - 2].any() and not result.numpy()[10, 5].any()
    # floats in [0,1] give the same result
    assert torch.equal(inpaint_torso(torch.from_numpy(image).float() / 255, torch.from_numpy(labels)), result)


def test_inpaint_torso_wraps_like_numpy_and_survives_an_empty_neck():
    image, labels = portrait_scene()
    labels[labels == BODY_SKIN] = FACE_SKIN
    labels[:3] = HAIR                             # clothes start at row 0 in column 60 below "head" in the last row
    labels[:, 60] = CLOTHES
    labels[-1, 60] = HAIR
    labels[0, 60] = CLOTHES
    result = inpaint_torso(image, labels)
    assert np.array_equal(result.numpy(), reference_inpaint(image, labels))
    # column 60: top clothes pixel at row 0, the head pixel above it wraps to the last row; rows 0, -1 .. -8 painted
    assert result[-1, 60].tolist() == [int(c * 0.98) for c in image[0, 60]]


def test_extract_background_fills_from_the_nearest_certain_background():
    height, width = 64, 80
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([rows * 3, cols * 3, (rows + cols) % 7 * 30], -1).astype(np.uint8)
    labels = np.zeros((height, width), np.uint8)
    labels[20:50, 30:45] = CLOTHES
    labels[10:20, 33:42] = FACE_SKIN
    result = extract_background(image, labels).numpy()
    person = labels > 0
    person_rc = np.argwhere(person)
    all_rc = np.argwhere(np.ones_like(person))
    distance = np.sqrt(((all_rc[:, None] - person_rc[None]) ** 2).sum(-1)).min(1).reshape(height, width)
    certain = distance > 10
    assert np.array_equal(result[certain], image[certain])
    certain_rc = np.argwhere(certain)
    # every other pixel holds the colour of a certain-background pixel at the minimal distance
    for r, c in np.argwhere(~certain)[::7]:
        d2 = ((certain_rc - (r, c)) ** 2).sum(-1)
        nearest = certain_rc[d2 == d2.min()]
        assert any(np.array_equal(result[r, c], image[nr, nc]) for nr, nc in nearest)
    assert np.array_equal(extract_background(image, np.zeros_like(labels)).numpy(), image)
    with pytest.raises(InputError, match="background image"):
        extract_background(image, np.full_like(labels, CLOTHES))


def test_resize_background_squashes_with_inter_linear():
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    result = resize_background(torch.from_numpy(image))
    assert result.shape == (512, 512, 3)
    assert np.array_equal(result.numpy(), cv2.resize(image, (512, 512), interpolation=cv2.INTER_LINEAR))


def _face_area(points, size: int = 512) -> float:
    """The landmarks' box area as a fraction of a ``size``² image (the official face-area measure)."""
    return DetectedFace(np.asarray(points, np.float64)).area / size**2


def test_prepare_source_image_crops_small_faces(landmarker_model, portrait_path):
    portrait = cv2.cvtColor(cv2.imread(str(portrait_path)), cv2.COLOR_BGR2RGB)
    source = prepare_source_image(portrait, landmarker_model)
    side = source.square.side
    assert source.cropped and source.image.shape == (side, side, 3) and source.image.dtype == torch.uint8
    assert 150 < side < 300  # the square at the photo's own resolution
    assert torch.equal(source.image_512, torch.from_numpy(cv2.resize(source.image.numpy(), (512, 512))))
    before = _face_area(detect_landmarks_image(portrait, landmarker_model).points[0])
    after = _face_area(detect_landmarks_image(source.image_512, landmarker_model).points[0])
    assert before < 0.1 and 0.15 < after < 0.3
    # the landmarks handed to the fit are the chosen face's, in the square's pixels
    assert _face_area(source.points, side) == pytest.approx(after, abs=0.03)
    # a mask of the photo follows the same square: mapping the photo's own channels gives the 512² source
    for channel in range(3):
        mapped = source.map_plane(portrait[..., channel].astype(np.float32))
        assert mapped.shape == (512, 512)
        assert (mapped - source.image_512[..., channel].float()).abs().max() <= 1.0
    untouched = prepare_source_image(torch.from_numpy(portrait), landmarker_model, min_face_area_percent=0.02)
    assert not untouched.cropped and torch.equal(untouched.image, torch.from_numpy(portrait))
    wide = cv2.resize(portrait, (700, 400))
    # the largest square that fits: the short side
    kept = prepare_source_image(wide, landmarker_model, min_face_area_percent=0.02)
    assert kept.image.shape == (400, 400, 3) and kept.image_512.shape == (512, 512, 3)
    with pytest.raises(InputError, match="No face"):
        prepare_source_image(np.zeros((300, 300, 3), np.uint8), landmarker_model)
