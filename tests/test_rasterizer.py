"""Rasteriser and SECC renderer: analytic cases and an independent per-pixel reference."""


import numpy as np
import pytest
import torch

from r3dp_core.errors import ModelFileError
from r3dp_core.geometry.rasterizer import interpolate_vertex_attributes, rasterize_triangles
from r3dp_core.geometry.secc import (
    SECCMesh,
    project_to_screen,
    remove_triangles,
    render_secc,
    secc_mesh,
)
from r3dp_core.parity.case import ParityCase
from r3dp_core.parity.compare import PixelCheck, mask_agreement, pixel_agreement
from r3dp_core.parity.runner import check_outputs, stage_module


def reference_rasterize(vertices: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Slow float64 per-pixel loop over all triangles. Returns face index, perspective bary, depth and an
    'ambiguous' mask for pixel centres within 1e-4 of a triangle edge or with a near depth tie."""
    face_index = -np.ones((height, width), dtype=np.int64)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    ambiguous = np.zeros((height, width), dtype=bool)
    for r in range(height):
        for c in range(width):
            px, py = c + 0.5, r + 0.5
            hits = []
            for f, (a, b, d) in enumerate(faces):
                (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = vertices[a], vertices[b], vertices[d]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if area == 0:
                    continue
                l1 = ((px - x0) * (y2 - y0) - (py - y0) * (x2 - x0)) / area
                l2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
                lam = np.array([1 - l1 - l2, l1, l2])
                if np.abs(lam).min() < 1e-4:
                    ambiguous[r, c] = True
                if lam.min() < 0:
                    continue
                w = lam / np.array([z0, z1, z2])
                hits.append((1 / w.sum(), f, w / w.sum()))
            if hits:
                hits.sort(key=lambda h: (h[0], h[1]))
                if len(hits) > 1 and hits[1][0] - hits[0][0] < 1e-5 * hits[0][0]:
                    ambiguous[r, c] = True
                depth[r, c], face_index[r, c], bary[r, c] = hits[0]
    return face_index, bary, depth, ambiguous


def test_single_triangle_coverage_and_barycentrics():
    vertices = torch.tensor([[[1.0, 1.0, 2.0], [9.0, 1.0, 2.0], [1.0, 9.0, 2.0]]])
    frags = rasterize_triangles(vertices, torch.tensor([[0, 1, 2]]), (10, 12))
    rows, cols = torch.meshgrid(torch.arange(10), torch.arange(12), indexing="ij")
    # strict inside test (PyTorch3D's): the 8 centres on the hypotenuse (rows + cols == 9) are not covered
    inside = (rows >= 1) & (cols >= 1) & (rows + cols <= 8)
    assert inside.sum() == 28
    assert torch.equal(frags.mask[0], inside)
    expected_l1 = (cols + 0.5 - 1) / 8
    expected_l2 = (rows + 0.5 - 1) / 8
    expected = torch.stack([1 - expected_l1 - expected_l2, expected_l1, expected_l2], -1)
    assert torch.allclose(frags.bary[0][inside], expected[inside], atol=1e-6)
    assert torch.all(frags.bary[0][~inside] == 0)
    assert torch.allclose(frags.depth[0][inside], torch.tensor(2.0)) and torch.all(torch.isinf(frags.depth[0][~inside]))


def test_perspective_correct_interpolation_hits_the_surface():
    # a tilted triangle in camera space: interpolating xyz must give the 3D point seen through each pixel centre
    camera = torch.tensor([[[-0.4, -0.3, 8.0], [0.5, -0.2, 11.0], [0.0, 0.45, 9.0]]], dtype=torch.float64)
    focal, size = 600.0, 64
    screen = project_to_screen(camera, size, focal)
    frags = rasterize_triangles(screen, torch.tensor([[0, 1, 2]]), size)
    xyz = interpolate_vertex_attributes(frags, torch.tensor([[0, 1, 2]]), camera[0].float())[0]   # [3,H,W]
    mask = frags.mask[0]
    assert mask.sum() > 300
    rows, cols = torch.nonzero(mask, as_tuple=True)
    x, y, z = xyz[:, rows, cols]
    assert torch.allclose(size / 2 + focal * x / z, cols + 0.5, atol=2e-3)
    assert torch.allclose(size / 2 - focal * y / z, rows + 0.5, atol=2e-3)
    assert torch.allclose(z, frags.depth[0][mask], rtol=1e-5)
    # the plane through the three vertices contains every interpolated point
    v = camera[0].float()
    normal = torch.linalg.cross(v[1] - v[0], v[2] - v[0])
    assert torch.allclose((xyz[:, rows, cols].T - v[0]) @ normal, torch.zeros(rows.numel()), atol=1e-4)


@pytest.mark.parametrize("depth_test", ["packed", "two_pass"])
@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_nearer_triangle_wins_whatever_the_order(order, depth_test):
    far = [[0.0, 0.0, 5.0], [16.0, 0.0, 5.0], [0.0, 16.0, 5.0]]
    near = [[2.0, 2.0, 3.0], [14.0, 2.0, 3.0], [2.0, 14.0, 3.0]]
    vertices = torch.tensor([far + near])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])[order]
    frags = rasterize_triangles(vertices, faces, 16, depth_test=depth_test)
    near_id = order.index(1)
    assert frags.face_index[0, 4, 4] == near_id and float(frags.depth[0, 4, 4]) == pytest.approx(3.0, rel=1e-6)
    assert frags.face_index[0, 0, 0] == 1 - near_id and float(frags.depth[0, 0, 0]) == pytest.approx(5.0, rel=1e-6)
    colors = torch.tensor([[1.0]] * 3 + [[7.0]] * 3)
    image = interpolate_vertex_attributes(frags, torch.tensor([[0, 1, 2], [3, 4, 5]])[order], colors, -1.0)
    assert torch.allclose(image[0, 0, [4, 0, 15], [4, 0, 15]], torch.tensor([7.0, 1.0, -1.0]))


def test_matches_slow_reference_on_random_meshes():
    generator = torch.Generator().manual_seed(3)
    height, width, batch = 20, 28, 2
    centers = torch.rand(batch, 30, 1, 2, generator=generator) * torch.tensor([width, height])
    corners = centers + (torch.rand(batch, 30, 3, 2, generator=generator) - 0.5) * 16
    depths = 2 + 3 * torch.rand(batch, 30, 3, 1, generator=generator)
    vertices = torch.cat([corners, depths], -1).reshape(batch, 90, 3)
    faces = torch.arange(90).reshape(30, 3)
    colors = torch.rand(batch, 90, 4, generator=generator)
    frags = rasterize_triangles(vertices, faces, (height, width), max_candidates=64)
    for other in (rasterize_triangles(vertices, faces, (height, width)),
                  rasterize_triangles(vertices, faces, (height, width), max_candidates=64, depth_test="two_pass")):
        assert torch.equal(frags.face_index, other.face_index)
        assert torch.equal(frags.bary, other.bary) and torch.equal(frags.depth, other.depth)
    image = interpolate_vertex_attributes(frags, faces, colors, background=0.25)
    checked = 0
    for b in range(batch):
        ref_face, ref_bary, ref_depth, ambiguous = reference_rasterize(vertices[b].double().numpy(), faces.numpy(),
                                                                       height, width)
        clear = torch.from_numpy(~ambiguous)
        assert torch.equal(frags.face_index[b][clear], torch.from_numpy(ref_face)[clear])
        covered = clear & (frags.face_index[b] >= 0)
        assert torch.allclose(frags.bary[b][covered].double(), torch.from_numpy(ref_bary)[covered], atol=1e-5)
        assert torch.allclose(frags.depth[b][covered].double(), torch.from_numpy(ref_depth)[covered], rtol=1e-6)
        ref_image = np.full((height, width, 4), 0.25)
        hit = ref_face >= 0
        corners = colors[b].double().numpy()[faces.numpy()[ref_face[hit]]]
        ref_image[hit] = np.einsum("nk,nkc->nc", ref_bary[hit], corners)
        assert torch.allclose(image[b].permute(1, 2, 0)[clear].double(), torch.from_numpy(ref_image)[clear], atol=1e-5)
        assert (ambiguous.mean() < 0.1) and covered.sum() > 200
        checked += int(clear.sum())
    assert checked > 0.9 * batch * height * width


@pytest.mark.parametrize("depth_test", ["packed", "two_pass"])
def test_equal_depth_goes_to_the_lower_triangle_index(depth_test):
    square = [[0.0, 0.0, 4.0], [8.0, 0.0, 4.0], [0.0, 8.0, 4.0]]
    vertices = torch.tensor([square * 3])
    faces = torch.tensor([[3, 4, 5], [0, 1, 2], [6, 7, 8]])           # three identical triangles
    frags = rasterize_triangles(vertices, faces, 8, depth_test=depth_test)
    assert frags.mask[0].sum() == 28 and torch.all(frags.face_index[0][frags.mask[0]] == 0)
    with pytest.raises(ValueError, match="depth_test"):
        rasterize_triangles(vertices, faces, 8, depth_test="sorted")


def test_pixel_centres_on_a_shared_edge_belong_to_neither_triangle():
    # PyTorch3D's strict test leaves a one-pixel crack where a shared edge passes exactly through pixel centres
    square = torch.tensor([[[0.0, 0.0, 3.0], [8.0, 0.0, 3.0], [8.0, 8.0, 3.0], [0.0, 8.0, 3.0]]])
    frags = rasterize_triangles(square, torch.tensor([[0, 1, 2], [0, 2, 3]]), 8)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    assert torch.equal(frags.mask[0], rows != cols)
    assert torch.equal(frags.face_index[0][rows != cols], (rows > cols).long()[rows != cols])


def test_skips_degenerate_behind_camera_and_offscreen_triangles():
    vertices = torch.tensor([[[2.0, 2.0, 1.0], [6.0, 2.0, 1.0], [4.0, 2.0, 1.0],          # zero area
                              [1.0, 1.0, -1.0], [7.0, 1.0, 2.0], [1.0, 7.0, 2.0],         # a vertex behind
                              [-30.0, -30.0, 1.0], [-20.0, -30.0, 1.0], [-30.0, -20.0, 1.0]]])  # off screen
    frags = rasterize_triangles(vertices, torch.arange(9).reshape(3, 3), 8)
    assert not frags.mask.any()


def test_degenerate_threshold_is_pytorch3d_ndc_area():
    # a sliver (doubled area 2e-5 px²) strictly around the centre of pixel (0, 0): PyTorch3D skips faces whose
    # doubled area is <= 1e-8 in NDC, i.e. 1e-8·(S/2)² px², so it is drawn at 8 px and skipped at 512 px
    sliver = torch.tensor([[[0.4, 0.49995, 2.0], [0.6, 0.49995, 2.0], [0.5, 0.50005, 2.0]]])
    assert rasterize_triangles(sliver, torch.tensor([[0, 1, 2]]), 8).face_index[0, 0, 0] == 0
    assert not rasterize_triangles(sliver, torch.tensor([[0, 1, 2]]), 512).mask.any()


def test_project_to_screen_official_convention():
    point = torch.tensor([[[0.1, 0.2, 10.0], [0.0, 0.0, 10.0]]])
    screen = project_to_screen(point)
    # focal 1015·512/224 = 2320: col + 0.5 = 256 + 2320·x/z, row + 0.5 = 256 − 2320·y/z
    assert torch.allclose(screen[0, 0], torch.tensor([256 + 23.2, 256 - 46.4, 10.0]))
    assert torch.allclose(screen[0, 1], torch.tensor([256.0, 256.0, 10.0]))


def _grid_face(n: int = 24):
    """A small frontal bump mesh in camera space and per-vertex colours in [0,1]."""
    u, v = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    x, y = 0.8 * u.flatten(), 1.0 * v.flatten()
    z = 10 - 0.4 * (1 - 0.5 * (u.flatten() ** 2 + v.flatten() ** 2))
    ids = torch.arange(n * n).reshape(n, n)
    quads = torch.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], -1).reshape(-1, 4)
    faces = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    colors = torch.stack([(u.flatten() + 1) / 2, (v.flatten() + 1) / 2, torch.full_like(x, 0.5)], -1)
    return torch.stack([x, y, z], -1), faces, colors


def test_render_secc_range_background_chunks_and_face0_quirk():
    vertices, faces, colors = _grid_face()
    mesh = SECCMesh(faces, colors)
    clip = vertices[None].repeat(3, 1, 1) + torch.tensor([[[0.0, 0.0, 0.0]], [[0.05, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])
    secc, mask = render_secc(clip, mesh, image_size=128, frames_per_chunk=2, face0_period=2, return_mask=True)
    assert secc.shape == (3, 3, 128, 128) and mask.shape == (3, 1, 128, 128) and secc.dtype == torch.float32
    assert torch.all(secc[mask.expand_as(secc) == 0] == -1.0)
    assert secc.min() >= -1 and secc.max() <= 1
    frags = rasterize_triangles(project_to_screen(clip, 128), faces, 128)
    face0 = frags.face_index == 0
    assert face0[0].any() and face0[2].any()
    # frames 0 and 2 (multiples of the period) draw triangle 0 as background, frame 1 does not
    assert torch.all(mask[0, 0][face0[0]] == 0) and torch.all(mask[2, 0][face0[2]] == 0)
    assert torch.equal(mask[1, 0].bool(), frags.mask[1])
    assert torch.equal(mask[0, 0].bool(), frags.mask[0] & ~face0[0])
    shifted = render_secc(clip[1:], mesh, image_size=128, face0_period=2, frame_offset=1)
    assert torch.equal(shifted, secc[1:])
    unquirked = render_secc(clip, mesh, image_size=128, frames_per_chunk=3, face0_period=None)
    assert torch.equal(unquirked[1], secc[1])
    covered = frags.mask[0]
    expected = interpolate_vertex_attributes(frags, faces, colors)[0] * 2 - 1
    assert torch.allclose(unquirked[0][:, covered], expected[:, covered], atol=1e-6)
    # red grows to the right (x right in the image), green upward (y up → smaller rows)
    row = unquirked[0, 0, 64]
    assert row[covered[64]].diff().min() >= 0
    col = unquirked[0, 1, :, 64]
    assert col[covered[:, 64]].diff().max() <= 0


def test_secc_mesh_removes_the_official_eye_triangles(official_data):
    num_vertices, num_faces = 35709, 70789
    f = torch.arange(num_faces)
    tri = torch.stack([f, f + 1, f + 2], -1) % num_vertices      # placeholder topology (synthetic BFM recipe)
    eye_faces = np.concatenate([np.load(official_data / "bfm_left_eye_faces.npy"),
                                np.load(official_data / "bfm_right_eye_faces.npy")])
    ncc = np.load(official_data / "ncc_code.npy")
    colors = torch.from_numpy(ncc.T.astype(np.float32))
    mesh = secc_mesh(tri, eye_faces, colors)
    dropped = np.unique(eye_faces - 1)
    assert dropped.size == 569 + 559
    assert mesh.faces.shape == (num_faces - dropped.size, 3)
    assert torch.equal(mesh.faces, tri[np.setdiff1d(np.arange(num_faces), dropped)])
    assert mesh.colors.shape == (num_vertices, 3) and mesh.colors.dtype == torch.float32
    assert torch.equal(mesh.colors[123], torch.from_numpy(ncc[:, 123]))
    assert torch.equal(remove_triangles(tri[:5], torch.tensor([1, 3, 3])), tri[[0, 2, 4]])
    with pytest.raises(ModelFileError, match="0-based"):
        secc_mesh(tri + 1, eye_faces, colors)
    with pytest.raises(ModelFileError, match="eye-triangle files do not fit"):
        secc_mesh(tri[:1000], eye_faces, colors)
    with pytest.raises(ModelFileError, match=r"shape \(35709, 2\): expected \[num_vertices, 3\]"):
        secc_mesh(tri, eye_faces, colors[:, :2])


@pytest.fixture(scope="module")
def secc_case(parity_dir, parity_cache):
    case = ParityCase.load(parity_dir / "case_geom_secc.safetensors")
    with torch.inference_mode():
        outputs = stage_module(case.stage).run(case)
    return case, outputs


def test_parity_secc_against_official_pytorch3d(secc_case):
    """case_geom_secc: official SECC_Renderer (PyTorch3D 0.7.8) for src, cano, 3 driving and 6 posed frames."""
    case, outputs = secc_case
    report = check_outputs(case, outputs)
    assert report.passed, report.summary()
    assert report.unchecked == ["proj_matrix"] and not report.missing_outputs
    pixel_checks = {c.key: c for c in report.checks if isinstance(c, PixelCheck)}
    for call, frames in (("src", 1), ("cano", 1), ("drv", 3), ("posed", 6)):
        for path in ("vertices", "3dmm") + (("pipeline",) if call != "posed" else ()):
            check = pixel_checks[f"secc_{call}@{path}"]
            # observed: at most 1 flipped edge pixel per image (the case allows 20), rms of the rest <= 2.1e-6
            assert len(check.n_bad) == frames and max(check.n_bad) <= 2 and not any(check.n_unexcused)
            assert max(check.rms) < 5e-6 and check.quirk_total > 0 and check.quirk_wrong == 0
        for path in ("vertices", "3dmm"):
            assert pixel_checks[f"mask_{call}@{path}"].n_bad == [0] * frames
        # the face-0 quirk: official mask = pix_to_face > 0 drops triangle 0 of each call's first mesh
        rows = torch.tensor(case.quirk_pixels(f"secc_{call}"))
        assert rows.shape[0] >= 5 and torch.all(rows[:, 0] == 0)
        for path in ("vertices", "3dmm"):
            secc, mask = outputs[f"secc_{call}@{path}"], outputs[f"mask_{call}@{path}"]
            assert torch.all(secc[rows[:, 0], :, rows[:, 1], rows[:, 2]] == -1.0)
            assert torch.all(mask[rows[:, 0], 0, rows[:, 1], rows[:, 2]] == 0)
            assert torch.all(secc[mask.expand_as(secc) == 0] == -1.0)
    # inference builds src from driving frame 0 (not the photo's fitted expression)
    # (bitwise in the official run; here the batched 3DMM matmul may differ in the last ulp from the single one)
    src_vs_drv0 = (outputs["secc_src@pipeline"][0] - outputs["secc_drv@pipeline"][0]).abs()
    assert int((src_vs_drv0 > 1e-5).any(0).sum()) <= 4
    assert torch.equal(outputs["face_buf"], case.stored["face_buf"])


def test_secc_pixel_metric_catches_official_convention_slips(secc_case):
    case, outputs = secc_case
    mesh = SECCMesh(case.tensor("face_buf").long(), case.tensor("vertex_colors"))
    vertices = case.tensor("face_vertex_src")
    reference, tolerance = case.stored["secc_src"], case.tensors_meta["secc_src"]["suggested_tolerance"]
    quirks = case.quirk_pixels("secc_src")
    # the face-0 quirk ignored: only the quirk pixels notice (7 bad pixels are within n_bad_max)
    secc, mask = render_secc(vertices, mesh, face0_period=None, return_mask=True)
    ignored = pixel_agreement("secc_src", "secc_src", secc, reference, tolerance, quirks)
    assert ignored.n_bad == [7] and ignored.quirk_wrong == 7 and not ignored.passed
    assert not mask_agreement("mask_src", "mask_src", mask, case.stored["mask_src"], 20, quirks).passed
    # a 0.01 px shift in x flips edge pixels beyond n_bad_max and lifts the rms
    shifted = vertices.clone()
    shifted[..., 0] += 0.01 * shifted[..., 2] / 2320
    slipped = pixel_agreement("secc_src", "secc_src", render_secc(shifted, mesh), reference, tolerance, quirks)
    assert slipped.n_bad[0] > 40 and slipped.rms[0] > tolerance["rms_max"] and not slipped.passed
