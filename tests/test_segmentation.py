"""Selfie-multiclass label maps → masks, head image, external masks; the MediaPipe segmenter wrapper with a fake
segmenter (the 6-class model is user-downloaded) and its errors with real MediaPipe."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

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
    SegmenterFileError,
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
from r3dp_core.model_files import BY_KEY
from r3dp_core.pipeline.face import FaceKit


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
    assert torch.equal(head | torso_mask(labels) | ~person_mask(labels), torch.ones_like(head))
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


SEGMENTER_URL = BY_KEY["segmenter"].url


def kit_segment(images, model):
    """The segmenter as a job runs it (``FaceKit.segment``): its file errors say where to get the file."""
    return FaceKit(geometry=None, landmarker_path=Path("unused"), segmenter_path=model).segment(images)


def fake_labels(rgb: np.ndarray) -> np.ndarray:
    """The fake segmenter's answer for an [H,W,3] uint8 image: depends on each channel differently, so a
    swapped channel order or another frame gives other labels."""
    r, g, b = rgb.astype(np.int64).transpose(2, 0, 1)
    return ((r + 2 * g + 3 * b) % 6).astype(np.uint8)


class FakeSegmenter:
    """Stands in for mediapipe's ImageSegmenter: keeps the options and images it is given, answers
    :func:`fake_labels` as a GRAY8 category mask with one confidence mask per class, as MediaPipe does."""

    def __init__(self, options, classes: int = 6, error: Exception | None = None):
        self.options, self.classes, self.error = options, classes, error
        self.images, self.closed = [], False

    def close(self):
        self.closed = True

    def segment(self, image):
        from mediapipe import Image, ImageFormat

        if self.error is not None:
            raise self.error
        self.images.append(image)
        labels = fake_labels(image.numpy_view())
        confidence = [Image(image_format=ImageFormat.VEC32F1, data=(labels == c).astype(np.float32))
                      for c in range(self.classes)]
        return SimpleNamespace(category_mask=Image(image_format=ImageFormat.GRAY8, data=labels),
                               confidence_masks=confidence)


@pytest.fixture()
def fake_mediapipe(monkeypatch, tmp_path):
    """Replaces the segmenter the wrapper creates; yields (model path, list of created fakes, settings)."""
    from mediapipe.tasks.python import vision

    created, settings = [], {}

    def create_from_options(options):
        created.append(FakeSegmenter(options, **settings))
        return created[-1]

    monkeypatch.setattr(vision.ImageSegmenter, "create_from_options", create_from_options)
    model = tmp_path / "selfie_multiclass_256x256.tflite"
    model.write_bytes(b"stand-in")
    return model, created, settings


def test_segmenter_wrapper_feeds_rgb_frames_and_returns_their_labels(fake_mediapipe):
    from mediapipe import ImageFormat
    from mediapipe.tasks.python import vision

    model, created, _ = fake_mediapipe
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    labels = segment_selfie_multiclass(frames, model)
    assert labels.shape == (3, 20, 28) and labels.dtype == torch.int64 and labels.device.type == "cpu"
    assert torch.equal(labels, torch.from_numpy(np.stack([fake_labels(f) for f in frames])).long())
    assert len(np.unique(labels)) == 6
    (segmenter,) = created                                                # one segmenter for all frames
    assert segmenter.closed
    options = segmenter.options
    assert options.base_options.model_asset_path == str(model)
    assert options.running_mode == vision.RunningMode.IMAGE and options.output_category_mask
    assert options.output_confidence_masks                                # how the wrapper counts the classes
    assert len(segmenter.images) == 3
    for image, frame in zip(segmenter.images, frames):
        assert image.image_format == ImageFormat.SRGB and (image.width, image.height) == (28, 20)
        assert np.array_equal(image.numpy_view(), frame)


def test_segmenter_wrapper_takes_comfyui_images_and_single_frames(fake_mediapipe):
    model, created, _ = fake_mediapipe
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, 12, 3), dtype=np.uint8)
    as_float = torch.from_numpy(frames).float() / 255                     # ComfyUI IMAGE [T,H,W,3] in [0,1]
    labels = segment_selfie_multiclass(as_float, model)
    assert labels.device == as_float.device
    assert torch.equal(labels, segment_selfie_multiclass(frames, model))
    assert all(np.array_equal(image.numpy_view(), frame) for image, frame in zip(created[0].images, frames))
    single = segment_selfie_multiclass(frames[1], model)
    assert single.shape == (1, 16, 12) and torch.equal(single[0], labels[1])
    with pytest.raises(InputError, match="RGB"):
        segment_selfie_multiclass(frames[..., :2], model)


def test_segmenter_wrapper_rejects_segmenters_with_other_classes(fake_mediapipe):
    model, created, settings = fake_mediapipe
    settings["classes"] = 2                                               # e.g. the hair segmenter
    with pytest.raises(ModelFileError, match="2 classes, not 6") as error:
        kit_segment(np.zeros((8, 8, 3), np.uint8), model)
    assert str(model) in str(error.value) and SEGMENTER_URL in str(error.value)
    assert created[0].closed
    settings.update(classes=6, error=ValueError("CalculatorGraph::Run() failed"))
    with pytest.raises(ModelFileError, match="Run\\(\\) failed") as error:
        kit_segment(np.zeros((8, 8, 3), np.uint8), model)
    assert str(model) in str(error.value) and SEGMENTER_URL in str(error.value)


def test_segmenter_wrapper_reports_missing_and_corrupt_files(tmp_path):
    image = np.zeros((32, 32, 3), np.uint8)
    missing = tmp_path / "selfie_multiclass_256x256.tflite"
    with pytest.raises(ModelFileError, match="not found") as error:
        kit_segment(image, missing)
    assert str(error.value) == (f"Segmentation model {missing} not found; download selfie_multiclass_256x256.tflite "
                                f"from {SEGMENTER_URL}, or pass your own head/body masks instead.")
    # the geometry function alone names the problem and the masks' way out; where the file comes from is the loader's
    with pytest.raises(SegmenterFileError) as error:
        segment_selfie_multiclass(image, missing)
    assert str(error.value) == f"Segmentation model {missing} not found; pass your own head/body masks instead."
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\0" * 64)                                        # real MediaPipe: not a flatbuffer
    with pytest.raises(ModelFileError, match="not MediaPipe's 6-class selfie segmenter") as error:
        kit_segment(image, bogus)
    assert str(bogus) in str(error.value) and SEGMENTER_URL in str(error.value)
    assert "selfie_multiclass_256x256.tflite" in str(error.value)


OTHER_MODELS_SCRIPT = """
import gc, json, sys
import numpy as np
from pathlib import Path
from r3dp_core.errors import ModelFileError
from r3dp_core.pipeline.face import FaceKit
messages = []
for model in sys.argv[1:]:
    try:
        FaceKit(None, Path("unused"), Path(model)).segment(np.zeros((32, 48, 3), np.uint8))
    except ModelFileError as error:
        messages.append(str(error))
gc.collect()
print(json.dumps(messages))
"""


def test_segmenter_wrapper_reports_other_models(shared_dir, tmp_path):
    """Real MediaPipe on the TFLite models inside the face landmarker bundle: one loads as a 1-class segmenter,
    the other loads but fails when run. In a subprocess, because MediaPipe's own retry to close the failed
    segmenter hung the process at garbage collection before the wrapper closed it once and for all."""
    bundle = shared_dir / "models" / "face_landmarker.task"
    if not bundle.is_file():
        pytest.skip(f"{bundle} not found")
    with zipfile.ZipFile(bundle) as archive:
        archive.extract("face_detector.tflite", tmp_path)
        archive.extract("face_landmarks_detector.tflite", tmp_path)
    models = [str(tmp_path / "face_detector.tflite"), str(tmp_path / "face_landmarks_detector.tflite")]
    run = subprocess.run([sys.executable, "-c", OTHER_MODELS_SCRIPT, *models], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-2000:]
    one_class, fails_to_run = json.loads(run.stdout.strip().splitlines()[-1])
    assert one_class.startswith(f"{models[0]} is not MediaPipe's 6-class selfie segmenter (it segments into 1 "
                                "classes, not 6)")
    assert fails_to_run.startswith(f"{models[1]} is not MediaPipe's 6-class selfie segmenter (")
    assert SEGMENTER_URL in one_class and SEGMENTER_URL in fails_to_run


def test_segmenter_on_portrait(shared_dir, portrait_path):
    import cv2

    segmenter = shared_dir / "models" / "selfie_multiclass_256x256.tflite"
    if not segmenter.is_file():
        pytest.skip(f"{segmenter} is missing: the selfie segmenter is user-downloaded (put it there to run this)")
    portrait = cv2.cvtColor(cv2.imread(str(portrait_path)), cv2.COLOR_BGR2RGB)
    labels = segment_selfie_multiclass(portrait, segmenter)
    assert labels.shape == (1, 512, 512)
    assert head_mask(labels)[0, 125, 225]                     # the face centre (see test_landmarks)
    assert (labels == CLOTHES).any() and (labels == BACKGROUND).any()
