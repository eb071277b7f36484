"""BFM 3DMM: loader (errors, cache), model conventions, official parity, and what the small data files are."""

from __future__ import annotations

import os
import shutil
import zipfile

import numpy as np
import pytest
import scipy.io
import torch
from safetensors import safe_open

from r3dp_core.errors import ModelFileError
from r3dp_core.geometry import bfm as bfm_module
from r3dp_core.geometry.bfm import (
    BFM_FILENAME,
    MP468_INDEX_FILENAME,
    FaceModel3DMM,
    cache_path_for,
    compute_rotation,
    fit_space_to_pixels,
    load_bfm_fields,
    normalized_coordinate_code,
    pixels_to_fit_space,
    rotation_to_euler,
)
from r3dp_core.parity import run_case
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.synth_bfm import synth_face_model

N_TINY = 600


@pytest.fixture(scope="module")
def synth_model(parity_dir, parity_cache) -> FaceModel3DMM:
    return synth_face_model(parity_dir)


def write_tiny_bfm(folder, seed=0, n=N_TINY, id_cols=80, fields=None):
    """A random BFM with the official field names and layout (float32 bases, float64 1-based ids)."""
    rng = np.random.default_rng(seed)
    model = {
        "meanshape": rng.uniform(-1, 1, (1, 3 * n)).astype(np.float32),
        "idBase": (0.02 * rng.standard_normal((3 * n, id_cols))).astype(np.float32),
        "exBase": (0.02 * rng.standard_normal((3 * n, 64))).astype(np.float32),
        "meantex": np.zeros((1, 3 * n), np.float32),
        "tri": (np.arange(30).reshape(10, 3) % n + 1).astype(np.float64),
        "keypoints": (np.arange(68) * 7 + 1).astype(np.float64)[None],
    }
    model.update(fields or {})
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(folder / BFM_FILENAME), model)
    index = rng.integers(0, n, 468)
    index[[93, 127, 132, 234, 323, 356, 361, 454]] = -999
    np.save(folder / MP468_INDEX_FILENAME, index.astype(np.int64))
    return model, index


# ----------------------------------------------------------------------------------------------- parity

def test_parity_3dmm_forward(parity_dir, parity_cache):
    path = parity_dir / "case_geom_3dmm_forward.safetensors"
    report = run_case(path)
    assert report.passed, report.summary()
    errors = {c.name: c.max_abs for c in report.checks}
    # ParametricFaceModel's elementwise computations are reproduced bit for bit on any CPU
    assert errors["shape_canonical"] == errors["rotation"] == 0.0
    # its matrix products to float32 rounding: bit for bit where the BLAS kernels match the reference machine's
    # (an AVX2 EPYC), within 2 ulps of the largest reference value elsewhere (an AVX-512 Xeon differs by 1)
    case = ParityCase.load(path)
    for name in ("vertex_cam", "lm468_fit", "lm68_pfm_fit"):
        ulp = torch.finfo(torch.float32).eps * float(case.tensor(name).abs().max())
        assert errors[name] <= 2 * ulp, (name, errors[name], ulp)


def test_synthetic_bfm_loads_through_the_official_field_names(synth_model, parity_cache):
    assert synth_model.n_vertices == 35709
    assert synth_model.triangles.shape == (70789, 3) and int(synth_model.triangles.min()) == 0
    assert int(synth_model.mp468_matched.sum()) == 468 - 8
    # the cache beside the .mat carries the source hashes
    cache = cache_path_for(os.path.join(parity_cache, "synth_bfm", BFM_FILENAME))
    with safe_open(str(cache), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "r3dp-bfm" and len(meta["mat_sha256"]) == 64


# ----------------------------------------------------------------------------------------------- loader errors

def test_missing_files_name_what_where_and_where_from(tmp_path):
    with pytest.raises(ModelFileError) as err:
        FaceModel3DMM.from_file(tmp_path)
    msg = str(err.value)
    assert BFM_FILENAME in msg and str(tmp_path) in msg and MP468_INDEX_FILENAME in msg
    assert "faces.dmi.unibas.ch" in msg and "Real3D-Portrait README" in msg
    write_tiny_bfm(tmp_path)
    os.remove(tmp_path / MP468_INDEX_FILENAME)
    with pytest.raises(ModelFileError, match="MediaPipe-to-BFM landmark index not found"):
        FaceModel3DMM.from_file(tmp_path / BFM_FILENAME)


def test_wrong_kind_of_mat_is_named(tmp_path):
    scipy.io.savemat(str(tmp_path / BFM_FILENAME), {"shapePC": np.zeros((6, 2)), "shapeMU": np.zeros((6, 1))})
    np.save(tmp_path / MP468_INDEX_FILENAME, np.zeros(468, np.int64))
    with pytest.raises(ModelFileError) as err:
        load_bfm_fields(tmp_path, cache=False)
    msg = str(err.value)
    assert "lacks the field(s) meanshape, idBase, exBase, tri, keypoints" in msg
    assert "raw 01_MorphableModel.mat" in msg and "shapePC" in msg


def test_wrong_shapes_are_named(tmp_path):
    write_tiny_bfm(tmp_path, id_cols=99)
    with pytest.raises(ModelFileError, match=r"idBase has shape \(1800, 99\), expected \(1800, 80\)"):
        load_bfm_fields(tmp_path, cache=False)


def test_corrupt_files_ask_for_a_new_download(tmp_path):
    write_tiny_bfm(tmp_path)
    (tmp_path / BFM_FILENAME).write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(ModelFileError, match="could not be read as a MATLAB .mat file.*download"):
        load_bfm_fields(tmp_path, cache=False)
    write_tiny_bfm(tmp_path)
    data = (tmp_path / BFM_FILENAME).read_bytes()
    (tmp_path / BFM_FILENAME).write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ModelFileError, match="(damaged|corrupt).*download"):
        load_bfm_fields(tmp_path, cache=False)
    write_tiny_bfm(tmp_path)
    np.save(tmp_path / MP468_INDEX_FILENAME, np.arange(100))
    with pytest.raises(ModelFileError, match="not a MediaPipe-to-BFM index: expected 468 integer vertex ids"):
        load_bfm_fields(tmp_path, cache=False)


# ----------------------------------------------------------------------------------------------- cache

def test_cache_is_used_then_invalidated_by_a_changed_mat(tmp_path, monkeypatch):
    model, index = write_tiny_bfm(tmp_path, seed=1)
    first = load_bfm_fields(tmp_path)
    cache = cache_path_for(tmp_path / BFM_FILENAME)
    assert cache.is_file()
    expected_mean = model["meanshape"].reshape(-1, 3) - model["meanshape"].reshape(-1, 3).mean(0, keepdims=True)
    assert torch.equal(first["mean_shape"], torch.from_numpy(expected_mean))
    assert torch.equal(first["mp468_index"], torch.from_numpy(index))
    assert torch.equal(first["triangles"], torch.from_numpy(model["tri"].astype(np.int64) - 1))

    def no_parsing(*_):
        raise AssertionError("the .mat was parsed although the cache is valid")

    monkeypatch.setattr(bfm_module, "_fields_from_sources", no_parsing)
    cached = load_bfm_fields(tmp_path)
    assert all(torch.equal(cached[k], first[k]) for k in first)
    monkeypatch.undo()

    write_tiny_bfm(tmp_path, seed=2)  # the user replaces the file: the cache must not be trusted
    changed = load_bfm_fields(tmp_path)
    assert not torch.equal(changed["mean_shape"], first["mean_shape"])
    with safe_open(str(cache), framework="pt") as fh:
        assert fh.metadata()["mat_sha256"] == bfm_module._sha256(tmp_path / BFM_FILENAME)

    cache.write_bytes(b"garbage")  # a damaged cache is rebuilt silently
    again = load_bfm_fields(tmp_path)
    assert torch.equal(again["id_base"], changed["id_base"])
    assert safe_open(str(cache), framework="pt").metadata()["version"] == bfm_module.CACHE_VERSION


def test_read_only_folder_still_loads(tmp_path, monkeypatch):
    write_tiny_bfm(tmp_path)

    def refuse(*_, **__):
        raise PermissionError("read-only")

    monkeypatch.setattr(bfm_module.tempfile, "mkstemp", refuse)
    fields = load_bfm_fields(tmp_path)
    assert fields["id_base"].shape == (3 * N_TINY, 80) and not cache_path_for(tmp_path / BFM_FILENAME).exists()


# ----------------------------------------------------------------------------------------------- conventions

@pytest.fixture(scope="module")
def tiny_bfm_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bfm")
    write_tiny_bfm(folder, seed=3)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tiny_bfm_dir) -> FaceModel3DMM:
    return FaceModel3DMM.from_file(tiny_bfm_dir, cache=False)


def _explicit_rotation(pitch, yaw, roll):
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_rotation_is_transposed_zyx_and_inverts():
    euler = torch.tensor([[0.1, -0.4, 0.25], [-0.3, 0.2, -0.1]], dtype=torch.float64)
    rot = compute_rotation(euler)
    for i in range(2):
        np.testing.assert_allclose(rot[i].numpy(), _explicit_rotation(*euler[i].tolist()).T, atol=1e-15)
    torch.testing.assert_close(rotation_to_euler(rot), euler, atol=1e-12, rtol=0)


def test_posing_projection_and_pixel_mapping(tiny_model):
    g = torch.Generator().manual_seed(0)
    id_coeff, exp = torch.randn(1, 80, generator=g), torch.randn(3, 64, generator=g)
    euler, trans = 0.2 * torch.randn(3, 3, generator=g), torch.tensor([[0.1, -0.1, -1.0]]).repeat(3, 1)
    shape = tiny_model.compute_shape(id_coeff, exp)  # identity broadcast over the 3 frames
    torch.testing.assert_close(shape, tiny_model.compute_shape(id_coeff.expand(3, -1), exp))
    cam = tiny_model.vertices_cam(id_coeff, exp, euler, trans)
    posed = shape @ compute_rotation(euler) + trans[:, None]
    torch.testing.assert_close(cam, torch.cat([posed[..., :2], 10 - posed[..., 2:]], -1))
    # lm68 uses keypoints − 1, the torso helper the 1-based ids themselves (the official off-by-one)
    k = tiny_model.lm68_helper_ids
    u = 1015 * cam[..., 0] / cam[..., 2] + 112
    v = 1015 * cam[..., 1] / cam[..., 2] + 112
    lm68 = tiny_model.lm68(id_coeff, exp, euler, trans)
    torch.testing.assert_close(lm68, torch.stack([u, v], -1)[:, k - 1], rtol=1e-5, atol=1e-4)
    lm2d = tiny_model.lm68_helper_2d(id_coeff, exp, euler, trans)
    torch.testing.assert_close(lm2d, torch.stack([u[:, k] / 224, (224 - v[:, k]) / 224], -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiny_model.lm68_helper_3d(id_coeff, exp, euler, trans), cam[:, k])
    mp = tiny_model.lm468(id_coeff, exp, euler, trans)
    torch.testing.assert_close(mp, torch.stack([u, v], -1)[:, tiny_model.mp468_ids], rtol=1e-5, atol=1e-4)
    assert int(tiny_model.mp468_ids[93]) == 0 and not bool(tiny_model.mp468_matched[93])
    px = fit_space_to_pixels(mp, 512)
    torch.testing.assert_close(pixels_to_fit_space(px, 512), mp, rtol=1e-6, atol=1e-4)


def test_model_moves_and_casts_as_a_module(tiny_model, tiny_bfm_dir):
    model64 = FaceModel3DMM(**load_bfm_fields(tiny_bfm_dir, cache=False)).double()
    assert model64.id_base.dtype == torch.float64 and model64.triangles.dtype == torch.int64
    coeffs = (torch.zeros(1, 80), torch.ones(1, 64) * 0.1, torch.full((1, 3), 0.1), torch.zeros(1, 3))
    lm32 = tiny_model.lm468(*coeffs)
    lm64 = model64.lm468(*(c.double() for c in coeffs))
    torch.testing.assert_close(lm64.float(), lm32, rtol=1e-5, atol=1e-4)
    assert not tiny_model.state_dict()  # buffers are not checkpoint state


# ----------------------------------------------------------------------------------------------- small data files

def test_ncc_code_is_the_minmax_normalised_mean_shape_structure(synth_model, shared_dir):
    """What ``ncc_code.npy`` is, as far as can be checked without the real BFM.

    The official file has the signature of a per-axis min-max normalisation (exactly one vertex at 0 and one
    at 1 per channel, z maximum at the nose-tip vertex 8191). The derived code reproduces it from a mean shape
    that is an axis-wise affine image of it (the synthetic BFM); that it equals the normalised *real* BFM mean
    shape is plausible but unverified, so the official file stays the reference when available.
    """
    ncc = np.load(shared_dir / "official_data" / "ncc_code.npy")
    assert ncc.shape == (3, 35709) and ncc.dtype == np.float32
    for channel in ncc:
        assert channel.min() == 0 and channel.max() == 1
        assert (channel == 0).sum() == 1 and (channel == 1).sum() == 1
    assert int(ncc[2].argmax()) == 8191
    derived = synth_model.ncc_code()
    np.testing.assert_allclose(derived.numpy(), ncc.T, atol=3e-7)
    assert torch.equal(normalized_coordinate_code(synth_model.mean_shape), derived)


def _mediapipe_canonical_face(task_file) -> np.ndarray:
    """The 468 canonical-mesh vertices ``[468,3]`` (cm; x right, y up, z towards the viewer) stored in the
    ``face_landmarker.task`` bundle (geometry metadata protobuf: field 1 = mesh, its field 3 = x,y,z,u,v floats)."""
    with zipfile.ZipFile(task_file) as bundle:
        data = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")

    def fields(buf):
        i = 0
        while i < len(buf):
            key, i = _varint(buf, i)
            wire = key & 7
            if wire == 0:
                value, i = _varint(buf, i)
            elif wire == 2:
                size, i = _varint(buf, i)
                value, i = buf[i:i + size], i + size
            elif wire == 5:
                value, i = buf[i:i + 4], i + 4
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
            yield key >> 3, value

    mesh = next(v for f, v in fields(data) if f == 1)
    floats = b"".join(v for f, v in fields(mesh) if f == 3)
    return np.frombuffer(floats, "<f4").reshape(-1, 5)[:, :3]


def _varint(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def test_ncc_code_is_axiswise_affine_to_mediapipes_canonical_face(shared_dir):
    """Independent evidence that ``ncc_code.npy`` holds per-axis normalised face coordinates in the BFM frame
    (x right, y up, z out of the face): at the 460 matched vertices of the mp468 mapping it is an increasing
    affine function of MediaPipe's canonical face, axis by axis (R² ≈ 0.998, 0.998, 0.98; fitted extents
    x:y:z ≈ 0.80 : 1 : 0.53, face-like proportions)."""
    canonical = _mediapipe_canonical_face(shared_dir / "models" / "face_landmarker.task")
    assert canonical.shape == (468, 3)
    ncc = np.load(shared_dir / "official_data" / "ncc_code.npy").astype(np.float64)
    index = np.load(shared_dir / "official_data" / "index_mp468_from_mesh35709_v3.1.npy")
    matched = index >= 0
    slopes = []
    for axis in range(3):
        x, y = ncc[axis, index[matched]], canonical[matched, axis].astype(np.float64)
        slope, offset = np.polyfit(x, y, 1)
        r2 = 1 - ((y - (slope * x + offset)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        assert r2 > (0.99 if axis < 2 else 0.97)
        slopes.append(slope)
    ratios = np.array(slopes) / slopes[1]
    assert slopes[1] > 0 and 0.7 < ratios[0] < 0.9 and 0.45 < ratios[2] < 0.6


def test_eye_faces_are_one_based_triangle_ids(shared_dir, synth_model):
    data = shared_dir / "official_data"
    left, right = np.load(data / "bfm_left_eye_faces.npy"), np.load(data / "bfm_right_eye_faces.npy")
    assert left.dtype == right.dtype == np.int64 and len(left) == 569 and len(right) == 565
    assert len(np.unique(right)) == 559 and not set(left) & set(right)  # the right list has 6 duplicates
    n_faces = 70789  # triangles of BFM_model_front.mat; the ids are 1-based into that list
    assert 1 <= min(left.min(), right.min()) and max(left.max(), right.max()) <= n_faces
    assert synth_model.triangles.shape[0] == n_faces


def test_mp468_index_variants(shared_dir):
    data = shared_dir / "official_data"
    unmatched = [93, 127, 132, 234, 323, 356, 361, 454]
    for name in ("v1", "v2", "v3.1"):
        index = np.load(data / f"index_mp468_from_mesh35709_{name}.npy")
        assert index.shape == (468,) and sorted(np.flatnonzero(index < 0).tolist()) == unmatched
    assert (np.load(data / "index_mp468_from_mesh35709_v3.npy") >= 0).all()


def test_copied_cache_is_not_trusted_for_another_file(tmp_path):
    write_tiny_bfm(tmp_path / "a", seed=4)
    load_bfm_fields(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    write_tiny_bfm(tmp_path / "b", seed=5)
    fields_b = load_bfm_fields(tmp_path / "b")
    model_b = scipy.io.loadmat(str(tmp_path / "b" / BFM_FILENAME))
    assert torch.equal(fields_b["id_base"], torch.from_numpy(np.ascontiguousarray(model_b["idBase"])))
