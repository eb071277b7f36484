"""Selfie-multiclass label maps → masks, head image, external masks, segmenter wrapper errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from r3dp_core.errors import InputError, ModelFileError
from r3dp_core.geometry.segmentation import (
    BACKGROUND,
    BODY_SKIN,
    CLOTHES,
    FACE_SKIN,
    HAIR,
    OTHERS,
    background_mask,
    check_label_map,
    class_mask,
    head_mask,
    keep_region,
    label_map_from_masks,
    one_hot_segmap,
    person_mask,
    segment_selfie_multiclass,
    torso_mask,
)


@pytest.fixture()
def labels() -> torch.Tensor:
    """Two 6×8 frames; every class present in frame 0, frame 1 shifted by a column."""
    frame = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0],
                          [0, 1, 3, 3, 3, 3, 1, 0],
                          [0, 5, 3, 3, 3, 3, 0, 0],
                          [0, 0, 2, 2, 2, 0, 0, 0],
                          [0, 4, 4, 2, 4, 4, 4, 0],
                          [4, 4, 4, 4, 4, 4, 4, 4]], dtype=torch.uint8)
    return torch.stack([frame, frame.roll(1, 1)])


def test_one_hot_segmap(labels):
    segmap = one_hot_segmap(labels)
    assert segmap.shape == (2, 6, 6, 8) and segmap.dtype == torch.float32
    assert torch.all(segmap.sum(1) == 1)
    assert torch.equal(segmap.argmax(1), labels.long())
    assert segmap[0, CLOTHES].sum() == 13 and segmap[0, BODY_SKIN].sum() == 4 and segmap[0, OTHERS].sum() == 1


def test_region_masks(labels):
    head = head_mask(labels)
    expected_head = (labels == HAIR) | (labels == FACE_SKIN) | (labels == OTHERS)
    assert torch.equal(head, expected_head) and head[0].sum() == 15
    assert torch.equal(torso_mask(labels), (labels == BODY_SKIN) | (labels == CLOTHES))
    assert torch.equal(person_mask(labels), labels != BACKGROUND)
    assert torch.equal(background_mask(labels), labels == BACKGROUND)
    assert torch.equal(head | torso_mask(labels) | background_mask(labels), torch.ones_like(head))
    assert torch.equal(class_mask(labels, (BACKGROUND, BODY_SKIN, CLOTHES)), ~head)


def test_head_image_is_black_outside_the_head(labels):
    image = torch.linspace(-0.9, 0.9, 2 * 3 * 6 * 8).reshape(2, 3, 6, 8)
    head_image = keep_region(image, head_mask(labels))
    inside = head_mask(labels)[:, None].expand_as(image)
    assert torch.equal(head_image[inside], image[inside])
    assert torch.all(head_image[~inside] == -1.0)


def test_label_map_from_external_masks():
    head = torch.zeros(1, 5, 5)
    head[0, :2, 1:4] = 0.9
    body = torch.zeros(1, 5, 5)
    body[0, 1:, :] = 0.7
    labels = label_map_from_masks(head, body)
    assert labels.dtype == torch.int64
    assert torch.equal(labels[0, :2, 1:4], torch.full((2, 3), FACE_SKIN))        # head wins where both
    assert torch.equal(labels[0, 2:], torch.full((3, 5), CLOTHES))
    assert labels[0, 0, 0] == BACKGROUND and labels[0, 1, 0] == CLOTHES
    assert torch.equal(label_map_from_masks(head[0] > 0.5), torch.where(head > 0.5, FACE_SKIN, BACKGROUND))
    with pytest.raises(InputError, match="differ in shape"):
        label_map_from_masks(head, body[:, :4])


def test_label_map_validation(labels):
    assert check_label_map(labels[0]).shape == (1, 6, 8)
    with pytest.raises(InputError, match="0..5"):
        check_label_map(torch.full((2, 2), 6))
    with pytest.raises(InputError, match="integer"):
        check_label_map(torch.zeros(1, 2, 2))


def test_segmenter_wrapper_reports_model_problems(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ModelFileError, match="selfie_multiclass_256x256.tflite"):
        segment_selfie_multiclass(image, tmp_path / "selfie_multiclass_256x256.tflite")
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\0" * 64)
    with pytest.raises(ModelFileError, match="not a usable"):
        segment_selfie_multiclass(image, bogus)


SEGMENTER = Path("/work/shared/models/selfie_multiclass_256x256.tflite")


@pytest.mark.skipif(not SEGMENTER.is_file(), reason="selfie_multiclass_256x256.tflite is user-downloaded")
def test_segmenter_on_portrait():
    import cv2

    portrait = cv2.cvtColor(cv2.imread("/work/shared/testdata/astronaut_512.png"), cv2.COLOR_BGR2RGB)
    labels = segment_selfie_multiclass(portrait, SEGMENTER)
    assert labels.shape == (1, 512, 512)
    assert head_mask(labels)[0, 125, 225]                     # the face centre (see test_landmarks)
    assert (labels == CLOTHES).any() and (labels == BACKGROUND).any()
