"""Blink editing of SECC frames against a spec-literal reference on a rendered face with eye holes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay, cKDTree

from r3dp_core.geometry.landmarks import EYE_IDS
from r3dp_core.geometry.secc import SECCMesh, render_secc
from r3dp_core.geometry.secc_edit import blink_secc

OFFICIAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "official_data"
if not OFFICIAL_DATA.is_dir():
    OFFICIAL_DATA = Path("/work/shared/official_data")


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting: points [N,2] inside the closed polygon [M,2]."""
    inside = np.zeros(len(points), dtype=bool)
    x, y = points[:, 0], points[:, 1]
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, 0)):
        crosses = (y0 > y) != (y1 > y)
        at_x = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1, y1 - y0)
        inside ^= crosses & (x < at_x)
    return inside


@pytest.fixture(scope="module")
def canonical_secc() -> torch.Tensor:
    """A 512² zero-pose SECC of a face-like mesh: the NCC code's xy triangulated, the synthetic-BFM mean shape
    ((ncc − 0.5)·(1.5, 2, 1.1) dm, camera 10 dm away) and eye holes cut along MediaPipe's eye contours."""
    ncc = np.load(OFFICIAL_DATA / "ncc_code.npy").T
    mp_to_bfm = np.load(OFFICIAL_DATA / "index_mp468_from_mesh35709_v3.npy")
    faces = Delaunay(ncc[:, :2].astype(np.float64)).simplices
    centroids = ncc[faces, :2].mean(1)
    holes = np.zeros(len(faces), dtype=bool)
    for eye in (EYE_IDS[:16], EYE_IDS[16:]):
        holes |= _inside_polygon(centroids, ncc[mp_to_bfm[list(eye)], :2])
    shape = (ncc - 0.5) * np.array([1.5, 2.0, 1.1], dtype=np.float32)
    vertices = torch.from_numpy(shape - shape.mean(0))
    vertices[:, 2] = 10 - vertices[:, 2]
    mesh = SECCMesh(torch.from_numpy(faces[~holes].astype(np.int64)), torch.from_numpy(ncc.astype(np.float32)))
    return render_secc(vertices[None], mesh)[0]


def reference_blink(secc: np.ndarray, p: float):
    """Spec §14 step by step with numpy and KD-trees. Returns the edited image, the blink pixels [N,2], the
    colours of their 16 nearest face pixels [N,16,3] and which of those are at the minimal distance."""
    _, height, width = secc.shape
    u = np.floor((secc + 1) / 2 * 255).astype(np.int64)
    face = (u != 0).all(0)
    boxes = [(slice(height // 4, height // 2), slice(width // 4, width // 2)),
             (slice(height // 4, height // 2), slice(width // 2, 3 * width // 4))]
    holes = [np.argwhere(~face[box]) + (box[0].start, box[1].start) for box in boxes]
    every = np.concatenate(holes)
    r0, r1 = every[:, 0].min() - 4, every[:, 0].max() + 4
    tight = np.zeros_like(face)
    for hole in holes:
        tight[r0:r1, hole[:, 1].min() - 4:hole[:, 1].max() + 4] = True
    candidates = np.argwhere(face & tight)
    distance, _ = cKDTree(every).query(candidates)
    close = candidates[distance <= 5]
    face[close[:, 0], close[:, 1]] = False
    eye = ~face & tight
    blink = np.zeros_like(eye)
    for col in np.flatnonzero(eye.any(0)):
        rows = np.flatnonzero(eye[:, col])
        upper = p * rows.mean() + (1 - p) * rows.min()
        lower = p * rows.mean() + (1 - p) * rows.max()
        blink[rows[(rows <= upper) | (rows >= lower)], col] = True
    sources = np.argwhere(face & tight)
    targets = np.argwhere(blink)
    distance, nearest = cKDTree(sources).query(targets, k=16)
    # every source at the minimal distance is an acceptable nearest pixel (the KD-tree's tie-break is arbitrary)
    options = u[:, sources[nearest, 0], sources[nearest, 1]].transpose(1, 2, 0)           # [N,16,3]
    acceptable = distance == distance[:, :1]
    assert not acceptable[:, -1].any()
    u[:, targets[:, 0], targets[:, 1]] = options[:, 0].T
    return (u / 127.5 - 1).astype(np.float32), targets, (options / 127.5 - 1).astype(np.float32), acceptable


def _holes_in_eye_boxes(secc: torch.Tensor) -> int:
    region = secc[:, 128:256, 128:384]
    return int((region <= -1 + 1e-6).all(0).sum())


def test_fixture_has_two_eye_holes(canonical_secc):
    hole = (canonical_secc[:, 128:256, 128:384] == -1).all(0)
    left, right = hole[:, :128], hole[:, 128:]
    assert 300 < int(left.sum()) < 4000 and 300 < int(right.sum()) < 4000


@pytest.mark.parametrize("p", [0.0, 0.36, 0.84, 1.0])
def test_blink_matches_reference(canonical_secc, p):
    result = blink_secc(canonical_secc[None], torch.tensor([p], dtype=torch.float64), edited=torch.tensor([True]))[0]
    expected, targets, options, acceptable = reference_blink(canonical_secc.numpy(), p)
    assert len(targets) > 50
    rows, cols = torch.from_numpy(targets).T
    got = result[:, rows, cols].T.numpy()
    # each blink pixel holds the colour of one of its equally near face pixels
    assert np.all(((options == got[:, None]).all(-1) & acceptable).any(-1))
    assert acceptable[:, 1].mean() < 0.5
    others = torch.ones(result.shape[1:], dtype=torch.bool)
    others[rows, cols] = False
    assert torch.equal(result[:, others], torch.from_numpy(expected)[:, others])


def test_blink_closes_more_with_amplitude(canonical_secc):
    amplitudes = torch.tensor([0.0, 0.36, 0.84, 1.0], dtype=torch.float64)
    frames = canonical_secc[None].repeat(4, 1, 1, 1)
    edited = blink_secc(frames, amplitudes, edited=torch.ones(4, dtype=torch.bool))
    holes = [_holes_in_eye_boxes(frame) for frame in edited]
    assert holes[0] > holes[1] > holes[2] > holes[3] == 0
    # p = 0 only recolours each column's end rows, which lie in the 5-px ring grown around the hole
    assert holes[0] == _holes_in_eye_boxes(canonical_secc)
    # p = 0 elsewhere: the frame only comes back quantised to 8 bits
    quantised = (torch.floor((canonical_secc + 1) / 2 * 255).double() / 127.5 - 1).float()
    unchanged = (edited[0] == quantised).all(0)
    assert unchanged.float().mean() > 0.99 and (~unchanged).sum() > 50
    assert not torch.equal(edited[0], canonical_secc)


def test_default_schedule_edits_positive_amplitudes_only_and_batches(canonical_secc):
    shifted = canonical_secc.roll(3, dims=2)
    frames = torch.stack([canonical_secc, canonical_secc, shifted, shifted])
    amplitude = torch.tensor([0.0, 0.5, 0.0, 0.9])
    result = blink_secc(frames, amplitude)
    assert torch.equal(result[0], frames[0]) and torch.equal(result[2], frames[2])
    assert torch.equal(result[1], blink_secc(frames[1:2], amplitude[1:2])[0])
    assert torch.equal(result[3], blink_secc(frames[3:4], amplitude[3:4])[0])
    assert _holes_in_eye_boxes(result[3]) < _holes_in_eye_boxes(result[1]) < _holes_in_eye_boxes(frames[1])
    assert torch.equal(blink_secc(frames, torch.zeros(4)), frames)
    with pytest.raises(ValueError):
        blink_secc(frames, torch.zeros(3))
