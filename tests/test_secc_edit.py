"""Blink editing of SECC frames against a spec-literal reference on a rendered face with eye holes; mouth editing
of the mesh on the synthetic BFM (gain 1 exact, gain 0 neutral, lip opening, weights, rendered SECC)."""


import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay, cKDTree

from r3dp_core.geometry.bfm import FaceModel3DMM, to_camera
from r3dp_core.geometry.landmarks import EYE_IDS
from r3dp_core.geometry.secc import SECCMesh, project_to_screen, render_secc
from r3dp_core.geometry.secc_edit import blink_secc, mouth_region_weights, scale_mouth_motion
from r3dp_core.parity.synth_bfm import synth_face_model
from r3dp_core.standins import synthetic_face_model


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
def canonical_secc(official_data) -> torch.Tensor:
    """A 512² zero-pose SECC of a face-like mesh: the NCC code's xy triangulated, the synthetic-BFM mean shape
    ((ncc − 0.5)·(1.5, 2, 1.1) dm, camera 10 dm away) and eye holes cut along MediaPipe's eye contours."""
    ncc = np.load(official_data / "ncc_code.npy").T
    mp_to_bfm = np.load(official_data / "index_mp468_from_mesh35709_v3.npy")
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


# ----------------------------------------------------------------------------------------------- mouth

LIPS = list(range(48, 68))
FAR_FROM_MOUTH = [*range(0, 5), *range(12, 29), *range(36, 48)]   # upper jaw line, brows, nose bridge, eyes
JAW_DROP = 0.05     # dm the lower lip moves down per unit of expression coefficient 0 (the jaw drop below)


@pytest.fixture(scope="module")
def synth_model(parity_dir, parity_cache) -> FaceModel3DMM:
    """The parity cases' synthetic BFM (the official NCC shape, the real 68-keypoint ids, smooth random bases)
    with expression 0 made a jaw drop: the polynomial bases move both lips nearly together, so the mouth hardly
    opens. The lower inner lip (66) and everything below it move down by JAW_DROP, the upper inner lip (62) and
    everything above stay, linearly in between."""
    bfm = synth_face_model(parity_dir)
    mean = bfm.mean_shape
    upper, lower = mean[bfm.lm68_ids[[62, 66]], 1]
    below = ((upper - mean[:, 1]) / (upper - lower)).clamp(0, 1)
    exp_base = bfm.exp_base.clone()
    exp_base[:, 0] = 0
    exp_base[1::3, 0] = -JAW_DROP * below
    return FaceModel3DMM(mean, bfm.id_base, exp_base, bfm.triangles, bfm.lm68_helper_ids, bfm.mp468_ids)


@pytest.fixture(scope="module")
def mouth_weights(synth_model):
    return mouth_region_weights(synth_model)


def _jaw_drop(frames: int, amount: float = 2.0, others: float = 0.0) -> torch.Tensor:
    """[frames,64]: the jaw drop by ``amount`` plus random other expression coefficients of scale ``others``."""
    exp = others * torch.randn(frames, 64, generator=torch.Generator().manual_seed(6))
    exp[:, 0] = amount
    return exp


@pytest.fixture(scope="module")
def coefficients():
    # the synthetic bases are global polynomials: larger coefficients than these distort the face beyond a face
    return 0.3 * torch.randn(1, 80, generator=torch.Generator().manual_seed(7)), _jaw_drop(3, others=0.1)


def test_mouth_weights_are_one_on_the_lips_and_vanish_away_from_the_mouth(synth_model, mouth_weights):
    w = mouth_weights
    assert w.shape == (synth_model.n_vertices,) and w.dtype == torch.float32
    assert float(w.min()) == 0.0 and float(w.max()) == 1.0
    ids = synth_model.lm68_ids
    assert torch.all(w[ids[LIPS]] == 1)
    assert torch.all(w[ids[FAR_FROM_MOUTH]] == 0)
    assert w[ids[8]] > 0.7                                            # the chin follows the jaw
    assert 0.05 < float((w == 1).float().mean()) < float((w > 0).float().mean()) < 0.5
    # no seam: along mesh edges the weight changes no faster than the raised cosine over the default
    # (outer − inner) = 0.8 mouth widths allows
    ncc = synth_model.ncc_code().numpy()
    edges = torch.from_numpy(Delaunay(ncc[:, :2].astype(np.float64)).simplices[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2))
    mean = synth_model.mean_shape
    width = (mean[ids[54]] - mean[ids[48]]).norm()
    length = (mean[edges[:, 0]] - mean[edges[:, 1]]).norm(dim=1) / width
    step = (w[edges[:, 0]] - w[edges[:, 1]]).abs()
    assert torch.all(step <= torch.pi / 2 / 0.8 * length + 1e-6)
    # a narrower region is contained in a wider one
    narrow = mouth_region_weights(synth_model, inner=0.1, outer=0.5)
    assert torch.all(narrow <= w) and (narrow > 0).sum() < (w > 0).sum()
    with pytest.raises(ValueError, match="inner < outer"):
        mouth_region_weights(synth_model, inner=0.6, outer=0.5)


def test_mouth_gain_one_is_compute_shape_bit_for_bit(synth_model, mouth_weights, coefficients):
    identity, exp = coefficients
    expected = synth_model.compute_shape(identity, exp)
    for gain in (1.0, torch.tensor(1.0), torch.ones(3)):
        assert torch.equal(scale_mouth_motion(synth_model, identity, exp, gain, mouth_weights), expected)
    per_frame = identity.expand(3, 80) + 0.1
    assert torch.equal(scale_mouth_motion(synth_model, per_frame, exp, 1.0, mouth_weights),
                       synth_model.compute_shape(per_frame, exp))
    # float64 model, weights computed on the fly: the output follows the model's dtype
    small = synthetic_face_model(grid=24).double()
    out = scale_mouth_motion(small, identity.double(), exp.double(), 1.0)
    assert out.dtype == torch.float64 and torch.equal(out, small.compute_shape(identity.double(), exp.double()))


def test_mouth_gain_zero_holds_the_neutral_mouth(synth_model, mouth_weights, coefficients):
    identity, exp = coefficients
    w = mouth_weights
    posed = synth_model.compute_shape(identity, exp)
    neutral = synth_model.compute_shape(identity, torch.zeros_like(exp))
    held = scale_mouth_motion(synth_model, identity, exp, 0.0, w)
    assert (posed - neutral)[:, w == 1].abs().amax() > 0.01              # the expression does move the mouth
    torch.testing.assert_close(held[:, w == 1], neutral.expand_as(held)[:, w == 1], rtol=0, atol=2e-6)
    assert torch.equal(held[:, w == 0], posed[:, w == 0])
    # in between, each vertex keeps the fraction 1 − w of its expression displacement
    torch.testing.assert_close(held - neutral, (1 - w)[:, None] * (posed - neutral), rtol=0, atol=2e-6)


def test_lip_opening_scales_linearly_with_the_gain(synth_model, mouth_weights, coefficients):
    identity, _ = coefficients
    exp = _jaw_drop(1)
    gains = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.5])
    shapes = scale_mouth_motion(synth_model, identity, exp.expand(5, 64), gains, mouth_weights)
    inner_lips = shapes[:, synth_model.lm68_ids[[62, 66]]]
    gap = inner_lips[:, 0, 1] - inner_lips[:, 1, 1]                      # upper minus lower inner lip, y up
    neutral = synth_model.compute_shape(identity, torch.zeros_like(exp))[0, synth_model.lm68_ids[[62, 66]], 1]
    assert torch.all(gap.diff() > 0)
    torch.testing.assert_close(gap[0], neutral[0] - neutral[1], rtol=0, atol=1e-6)
    opening = gap[2] - gap[0]
    torch.testing.assert_close(opening, torch.tensor(2 * JAW_DROP), rtol=0, atol=1e-6)
    torch.testing.assert_close(gap - gap[0], gains * opening, rtol=1e-4, atol=1e-6)
    # per-frame gains in one batch equal single-frame calls
    for i in (1, 4):
        single = scale_mouth_motion(synth_model, identity, exp, float(gains[i]), mouth_weights)
        torch.testing.assert_close(shapes[i:i + 1], single, rtol=0, atol=1e-6)


def test_mouth_gain_shape_is_checked(synth_model, mouth_weights, coefficients):
    identity, exp = coefficients
    for gain in (torch.ones(4), torch.ones(3, 1)):
        with pytest.raises(ValueError, match=r"gain must be one number or \[3\]"):
            scale_mouth_motion(synth_model, identity, exp, gain, mouth_weights)


def test_mouth_gain_changes_the_secc_only_around_the_mouth(synth_model, mouth_weights, coefficients):
    identity, _ = coefficients
    exp = _jaw_drop(1, others=0.1).expand(3, 64)
    ncc = synth_model.ncc_code()
    faces = torch.from_numpy(Delaunay(ncc[:, :2].double().numpy()).simplices.astype(np.int64))
    vertices = to_camera(scale_mouth_motion(synth_model, identity, exp, torch.tensor([1.0, 0.0, 2.0]),
                                            mouth_weights))
    size = 256
    secc = render_secc(vertices, SECCMesh(faces, ncc), image_size=size, face0_period=None)
    # pixels a moving vertex can reach: the boxes of every triangle with a vertex of positive weight
    touched = faces[(mouth_weights[faces] > 0).any(1)].unique()
    screen = project_to_screen(vertices[:, touched], size)
    col_lo, row_lo = screen[..., :2].amin((0, 1)).floor() - 1
    col_hi, row_hi = screen[..., :2].amax((0, 1)).ceil() + 1
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    near_mouth = (rows >= row_lo) & (rows <= row_hi) & (cols >= col_lo) & (cols <= col_hi)
    eyes = project_to_screen(vertices[:1, synth_model.lm68_ids[36:48]], size)[0]
    for edited in secc[1:]:
        changed = (edited != secc[0]).any(0)
        assert int(changed.sum()) > 1000
        assert not (changed & ~near_mouth).any()
        assert int(rows[changed].min()) > float(eyes[:, 1].max())         # nothing changes at or above the eyes
