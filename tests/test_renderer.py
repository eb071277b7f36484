"""Tri-plane volume renderer: parity with the official renderer, chunk/batch invariance, and its pieces."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from r3dp_core.errors import InputError
from r3dp_core.models.decoder import OSGDecoder
from r3dp_core.parity import ParityCase, run_case
from r3dp_core.parity.stage_volume_render import build_decoder
from r3dp_core.render import (
    PLANE_AXES,
    RenderConfig,
    RenderNoise,
    RenderOutput,
    march_rays,
    ray_box_intersection,
    ray_limits,
    render_triplanes,
    sample_importance,
    sample_pdf,
    sample_rays,
    split_camera,
)
from r3dp_core.render import noise as noise_module
from r3dp_core.render.noise import frame_noise
from r3dp_core.render.ray_marcher import clamp_depth_per_frame
from r3dp_core.render.triplane import project_onto_planes, sample_triplanes

SMALL = RenderConfig(resolution=32)


def make_camera(yaw: float = 0.0, focal: float = 2985.29 / 700, distance: float = 2.861) -> torch.Tensor:
    """EG3D camera ``[1,25]`` on a circle around the box centre, looking at it (OpenCV axes)."""
    c, s = math.cos(yaw), math.sin(yaw)
    # Columns: camera x, y, z axes in world coordinates (yaw 0 gives the official frontal diag(1,-1,-1)).
    rotation = torch.tensor([[c, 0.0, -s], [0.0, -1.0, 0.0], [-s, 0.0, -c]], dtype=torch.float64)
    center = torch.tensor([distance * s, 0.006, distance * c], dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3], c2w[:3, 3] = rotation, center
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float64)
    return torch.cat([c2w.flatten(), intrinsics.flatten()]).float()[None]


def smooth_planes(seed: int, batch: int = 1, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3 * 32, 9, 9, generator=g)
    return 2 * F.interpolate(coarse, size=size, mode="bilinear", align_corners=True).reshape(batch, 3, 32, size, size)


@pytest.fixture(scope="module")
def decoder() -> OSGDecoder:
    torch.manual_seed(0)
    model = OSGDecoder().eval()
    with torch.no_grad():  # gain 3 as in the synthetic weights, so opacity varies along the rays
        for layer in (model.net[0], model.net[2]):
            layer.weight.mul_(3)
            layer.bias.uniform_(-0.2, 0.2)
    return model


def render(planes, decoder, camera, noise, **kwargs):
    with torch.no_grad():
        return render_triplanes(planes, decoder, camera, SMALL, noise=noise, **kwargs)


def assert_same_render(a, b, exact: bool = True):
    """Identical renders. With ``exact=False`` the images may differ by float32 kernel noise only: torch's
    SIMD kernels compute softplus/sigmoid of the last few elements of a tensor (and of each thread's share)
    with scalar libm, which can differ by an ulp, so a ray at a chunk edge may differ slightly. A real
    difference in the per-frame statistics moves whole rays by far more than 1e-5."""
    for field in ("is_ray_valid", "ray_origins", "ray_directions"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    for field in ("feature_image", "depth", "weights"):
        x, y = getattr(a, field), getattr(b, field)
        if exact:
            assert torch.equal(x, y), field
        else:
            assert (x - y).abs().max() <= 1e-5, field
            assert (x == y).float().mean() >= 0.99, field


# --- parity ---------------------------------------------------------------------------------------------

def test_volume_render_case_matches_official(parity_dir):
    report = run_case(parity_dir / "case_volume_render.safetensors")
    assert report.passed, report.summary()
    checked = {check.name for check in report.checks}
    assert {"feature_image", "weights_image", "depth_image", "is_ray_valid", "ray_directions",
            "dbg_weights_coarse_row64", "dbg_depths_fine_row64", "dbg_weights_final_row64"} <= checked
    assert not report.unchecked, report.summary()


def test_decoder_mounts_with_official_keys(parity_dir):
    decoder = build_decoder(ParityCase.load(parity_dir / "case_volume_render.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert shapes == {"net.0.weight": (64, 32), "net.0.bias": (64,), "net.2.weight": (33, 64), "net.2.bias": (33,)}
    # Equalized-lr gains 1/sqrt(in) on both layers, softplus between, widened sigmoid on the features.
    x = torch.randn(1, 3, 5, 32)
    w0, b0, w2, b2 = (decoder.state_dict()[k] for k in ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"))
    hidden = F.softplus(x.mean(1) @ (w0 / math.sqrt(32)).T + b0)
    out = hidden @ (w2 / math.sqrt(64)).T + b2
    with torch.no_grad():
        features, density = decoder(x)
    torch.testing.assert_close(density, out[..., :1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, torch.sigmoid(out[..., 1:]) * 1.002 - 0.001, rtol=1e-5, atol=1e-6)


# --- invariance: chunks, batches, shared planes ------------------------------------------------------------

def test_chunking_does_not_change_the_result(decoder):
    # Two frames, the second with a wide field of view so its corner rays miss the box (per-frame stand-in
    # ray range); chunks that split frames (100 rays, not a divisor of 1024) and that group them (4096).
    camera = torch.cat([make_camera(0.3), make_camera(-0.5, focal=1.0)])
    planes = smooth_planes(1, batch=2)
    noise = RenderNoise.draw(2, 32 * 32, SMALL, torch.Generator().manual_seed(3))
    whole = render(planes, decoder, camera, noise, max_rays_per_chunk=10**9)
    assert not whole.is_ray_valid[1].all() and whole.is_ray_valid[0].all()
    for chunk in (100, 1024, 4096):
        assert_same_render(render(planes, decoder, camera, noise, max_rays_per_chunk=chunk), whole, exact=False)


def test_depth_clamp_range_is_per_frame_over_all_chunks(decoder):
    # A density far below zero makes softplus underflow to 0: every ray has zero weight, its depth is NaN ->
    # inf and the clamp sets it to the largest sample depth of its frame, whatever chunk the ray was in.
    empty = OSGDecoder().eval()
    empty.load_state_dict(decoder.state_dict())
    with torch.no_grad():
        empty.net[2].bias[0] = -1e4
    camera = torch.cat([make_camera(0.0), make_camera(0.6, focal=1.0)])
    planes = smooth_planes(8)
    noise = RenderNoise.draw(2, 32 * 32, SMALL, torch.Generator().manual_seed(9))
    whole = render(planes, empty, camera, noise, max_rays_per_chunk=10**9)
    assert whole.weights.eq(0).all() and whole.feature_image.eq(-1).all()
    _, end, _ = ray_limits(whole.ray_origins, whole.ray_directions, 1.0)
    for i in range(2):
        frame_depth = whole.depth[i].unique()
        assert frame_depth.numel() == 1, frame_depth
        # The largest sample depth lies within one jitter step past the largest ray end of the frame.
        assert end[i].max() <= frame_depth.item() <= end[i].max() + 1.0 / 47
    assert whole.depth[0, 0, 0, 0] != whole.depth[1, 0, 0, 0]
    assert_same_render(render(planes, empty, camera, noise, max_rays_per_chunk=100), whole)


def test_batched_frames_equal_single_frame_renders(decoder):
    # Frame 0 misses the box at its corners; frame 1 is closer, so all its rays start nearer than any of
    # frame 0's. Statistics taken over the batch instead of per frame would move frame 0's missing rays.
    camera = torch.cat([make_camera(0.7, focal=1.0), make_camera(0.2, distance=2.0)])
    planes = smooth_planes(2, batch=2)
    noise = RenderNoise.draw(2, 32 * 32, SMALL, torch.Generator().manual_seed(4))
    both = render(planes, decoder, camera, noise, max_rays_per_chunk=300)
    start, _, valid = ray_limits(both.ray_origins, both.ray_directions, 1.0)
    assert not valid[0].all() and valid[1].all()
    assert start[1].max() < start[0][valid[0]].min()
    rays = 32 * 32
    for i in range(2):
        single_noise = RenderNoise(noise.stratified[i:i + 1], noise.importance[i * rays:(i + 1) * rays])
        single = render(planes[i:i + 1], decoder, camera[i:i + 1], single_noise)
        frame = RenderOutput(**{f.name: getattr(both, f.name)[i:i + 1] for f in dataclasses.fields(both)})
        assert_same_render(frame, single, exact=False)


def test_shared_planes_broadcast_over_cameras(decoder):
    camera = torch.cat([make_camera(0.1), make_camera(-0.4)])
    planes = smooth_planes(5)
    noise = RenderNoise.draw(2, 32 * 32, SMALL, torch.Generator().manual_seed(6))
    shared = render(planes, decoder, camera, noise)
    copied = render(planes.expand(2, -1, -1, -1, -1).contiguous(), decoder, camera, noise)
    assert_same_render(shared, copied, exact=False)


# --- pieces ------------------------------------------------------------------------------------------

def test_camera_split_and_ray_directions():
    camera = make_camera(0.0, focal=1.0)
    cam2world, intrinsics = split_camera(camera)
    assert cam2world.shape == (1, 4, 4) and intrinsics[0, 0, 0] == 1.0
    origins, directions = sample_rays(cam2world, intrinsics, 4)
    assert origins.shape == directions.shape == (1, 16, 3)
    torch.testing.assert_close(origins[0, 5], cam2world[0, :3, 3])
    # Ray m = row*4 + col goes through camera point ((col+0.5)/4 - 0.5, (row+0.5)/4 - 0.5, 1).
    row, col = 1, 3
    local = torch.tensor([(col + 0.5) / 4 - 0.5, (row + 0.5) / 4 - 0.5, 1.0])
    expected = F.normalize(cam2world[0, :3, :3] @ local, dim=0)
    torch.testing.assert_close(directions[0, row * 4 + col], expected)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 16))
    with pytest.raises(InputError, match=r"camera must be \[B, 25\]"):
        split_camera(torch.zeros(1, 16))


def test_slab_test_on_analytic_rays():
    s3 = math.sqrt(3)
    origins = torch.tensor([[0.0, 0.0, 2.0],      # straight down -z, two zero direction components
                            [0.2, 0.1, -3.0],     # +z with a negative zero in y
                            [2.0, 0.0, 2.0],      # parallel to the box, beside it: misses
                            [-2.0, -2.0, -2.0],   # diagonal through the corners
                            [0.0, 0.0, 0.0],      # starts inside: start is negative, not clamped
                            [0.0, 0.7, 0.0]])     # parallel to x, above the box: misses
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, -0.0, 1.0], [0.0, 0.0, -1.0],
                               [1 / s3, 1 / s3, 1 / s3], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = ray_box_intersection(origins, directions, 1.0)
    torch.testing.assert_close(near[:, 0], torch.tensor([1.5, 2.5, -1.0, 1.5 * s3, -0.5, -1.0]))
    torch.testing.assert_close(far[:, 0], torch.tensor([2.5, 3.5, -2.0, 2.5 * s3, 0.5, -2.0]))

    # Per frame: misses take (min, max) of the frame's valid *starts*; a frame with no hit keeps -1/-2.
    frames_o = torch.stack([origins[:4], origins[[2, 5, 2, 5]]])
    frames_d = torch.stack([directions[:4], directions[[2, 5, 2, 5]]])
    start, end, valid = ray_limits(frames_o, frames_d, 1.0)
    assert valid[..., 0].tolist() == [[True, True, False, True], [False] * 4]
    torch.testing.assert_close(start[0, 2], torch.tensor([1.5]))
    torch.testing.assert_close(end[0, 2], torch.tensor([1.5 * s3]))  # max start, not max end (2.5*sqrt3)
    assert start[1].eq(-1).all() and end[1].eq(-2).all()


def test_plane_projection_uses_inverse_axes():
    points = torch.randn(2, 7, 3)
    projected = project_onto_planes(points)
    for k in range(3):
        torch.testing.assert_close(projected[k], (points @ torch.linalg.inv(PLANE_AXES[k]))[..., :2])
    assert torch.equal(projected[2], points[..., [2, 0]])  # plane 2 is (z, x), not (z, y)
    # grid x indexes W: a plane that is 1 only in its last column is seen at x = +box/2 on plane 0.
    planes = torch.zeros(1, 3, 1, 4, 4)
    planes[0, 0, 0, :, -1] = 1
    at_edge = sample_triplanes(planes, torch.tensor([[[0.375, 0.0, 0.0], [-0.375, 0.0, 0.0]]]), 1.0)
    assert at_edge.shape == (1, 3, 2, 1)
    assert at_edge[0, 0, :, 0].tolist() == [1.0, 0.0]


def test_sample_pdf_on_a_hand_built_cdf():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[3.0, 1.0]])          # cdf [0, 0.75, 1] on bins 0, 1, 2 (bin 3 is never used)
    u = torch.tensor([[0.0, 0.375, 0.75, 0.875]])
    samples = sample_pdf(bins, weights, u, eps=0.0)
    torch.testing.assert_close(samples, torch.tensor([[0.0, 0.5, 1.0, 1.5]]))
    # u past the last cdf step: both gathered indices clamp to the last cdf entry, the zero-width segment's
    # denominator becomes 1, and the sample is that entry's bin.
    torch.testing.assert_close(sample_pdf(bins, weights, torch.tensor([[1.0]])), torch.tensor([[2.0]]))
    # Evenly spread uniforms land in proportion to the weights.
    even = (torch.arange(1000.0) + 0.5)[None] / 1000
    assert (sample_pdf(bins, weights, even, eps=0.0) < 1).sum() == 750
    # A flat segment (zero weight) is skipped, and eps keeps an all-zero ray sampleable.
    flat = sample_pdf(bins, torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[0.25, 0.5, 0.75]]), eps=0.0)
    torch.testing.assert_close(flat, torch.tensor([[0.5, 2.0, 2.5]]))
    empty = sample_pdf(bins, torch.zeros(1, 3), torch.tensor([[0.5]]))
    torch.testing.assert_close(empty, torch.tensor([[1.5]]))


def test_importance_samples_follow_the_dilated_weights():
    depths = torch.arange(6.0)[None]                  # mid-points 0.5 .. 4.5
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    # max-pool/avg-pool: [0, .5, 1, .5, 0] + 0.01; inner three [.51, 1.01, .51] on mid-points 0.5, 1.5, 2.5, 3.5
    fine = sample_importance(depths, weights, torch.tensor([[0.5, 0.0, 0.999999]]))
    torch.testing.assert_close(fine, torch.tensor([[2.0, 0.5, 3.5]]), atol=1e-5, rtol=0)
    cdf1 = (0.51 + 1e-5) / (2.03 + 3e-5)
    below_first_step = sample_importance(depths, weights, torch.tensor([[cdf1 / 2]]))
    torch.testing.assert_close(below_first_step, torch.tensor([[1.0]]), atol=1e-5, rtol=0)


def test_marcher_weights_depth_and_zero_weight_rays():
    depths = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])[..., None]
    densities = torch.full((2, 3, 1), 1.0 + math.log(math.e - 1))   # softplus(x - 1) = 1
    features = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])[..., None]
    out = march_rays(features, densities, depths)
    a = 1 - math.exp(-1)
    torch.testing.assert_close(out.weights[0, :, 0], torch.tensor([a, (1 - a) * a]))
    torch.testing.assert_close(out.features[0], torch.tensor([(a * 0.5 + (1 - a) * a) * 2 - 1]))
    torch.testing.assert_close(out.depth[0], torch.tensor([(a * 1.5 + (1 - a) * a * 2.5) / (a + (1 - a) * a)]))
    # Zero-length intervals: no weight, depth NaN -> inf, then clamped to the frame's largest sample depth.
    assert out.weights[1].sum() == 0 and out.depth[1].item() == math.inf
    clamped = clamp_depth_per_frame(out.depth.reshape(1, 2, 1), torch.tensor([1.0]), torch.tensor([3.0]))
    assert clamped[0, :, 0].tolist()[1] == 3.0


def test_seeded_draws_are_reproducible(decoder):
    camera = make_camera(0.2)
    planes = smooth_planes(7)
    first = render(planes, decoder, camera, None, generator=torch.Generator().manual_seed(11))
    again = render(planes, decoder, camera, None, generator=torch.Generator().manual_seed(11))
    assert_same_render(first, again)
    injected = render(planes, decoder, camera, RenderNoise.draw(1, 1024, SMALL, torch.Generator().manual_seed(11)))
    assert_same_render(first, injected)
    other = render(planes, decoder, camera, None, generator=torch.Generator().manual_seed(12))
    assert not torch.equal(first.feature_image, other.feature_image)
    assert first.rgb.shape == (1, 3, 32, 32) and torch.equal(first.rgb, first.feature_image[:, :3])


def test_wrong_noise_and_plane_shapes_are_rejected(decoder):
    camera = make_camera()
    planes = smooth_planes(0)
    bad = RenderNoise(torch.rand(1, 1024, 48, 1), torch.rand(1000, 48))
    with pytest.raises(InputError, match=r"RenderNoise.importance must be \[1024, 48\]"):
        render(planes, decoder, camera, bad)
    with pytest.raises(InputError, match="planes batch 3 must be 1 or match the 2 camera"):
        render(smooth_planes(0, batch=3), decoder, torch.cat([camera, camera]), None)
    fewer = dataclasses.replace(SMALL, num_fine_samples=8)
    with torch.no_grad():
        out = render_triplanes(planes, decoder, camera, fewer, resolution=8, generator=torch.Generator())
    assert out.feature_image.shape == (1, 32, 8, 8) and out.weights.max() <= 1


def test_half_precision_planes_render_in_float32(decoder):
    camera = make_camera(0.1)
    planes = smooth_planes(10).half()
    noise = RenderNoise.draw(1, 8 * 8, SMALL, torch.Generator().manual_seed(13))
    with torch.no_grad():
        half = render_triplanes(planes, decoder, camera, SMALL, resolution=8, noise=noise)
        full = render_triplanes(planes.float(), decoder, camera, SMALL, resolution=8, noise=noise)
    assert half.feature_image.dtype == torch.float32
    assert_same_render(half, full)


# --- counter-based noise ----------------------------------------------------------------------------------

def _reference_uniform(seed: int, frame: int, ray: int, sample: int, per_ray: int) -> float:
    """One draw of ``frame_noise`` in Python integers (no overflow possible): the definition of the noise."""
    def mix(x: int) -> int:
        for shift, multiplier in ((16, 0x21F0AAAD), (15, 0x735A2D97)):
            x ^= x >> shift
            x = x * multiplier & 0xFFFFFFFF
        return x ^ (x >> 15)

    seed %= 1 << 64
    keys = [mix(mix(mix(salt ^ (seed & 0xFFFFFFFF)) ^ (seed >> 32)) ^ frame) for salt in (0x9E3779B9, 0x85EBCA77)]
    return (mix(mix((ray * per_ray + sample) ^ keys[0]) ^ keys[1]) >> 8) / 2**24


@pytest.mark.parametrize("seed", [0, 42, -1, 2**64 - 1, 2**40 + 3])
def test_frame_noise_follows_its_integer_definition(seed):
    noise = frame_noise(range(3, 5), 16, 5, 4, seed)
    assert noise.stratified.shape == (2, 16, 5, 1) and noise.importance.shape == (32, 4)
    assert noise.stratified.dtype == noise.importance.dtype == torch.float32
    for frame_index, frame in enumerate((3, 4)):
        for ray in (0, 7, 15):
            for sample in range(5):
                assert noise.stratified[frame_index, ray, sample, 0].item() == \
                    _reference_uniform(seed, frame, ray, sample, 9)
            for sample in range(4):
                assert noise.importance[frame_index * 16 + ray, sample].item() == \
                    _reference_uniform(seed, frame, ray, 5 + sample, 9)


def test_frame_noise_is_the_same_in_any_chunk_and_block(monkeypatch):
    clip = frame_noise(range(0, 6), 100, 6, 5, seed=9)
    part = frame_noise(range(2, 5), 100, 6, 5, seed=9)
    assert torch.equal(part.stratified, clip.stratified[2:5])
    assert torch.equal(part.importance, clip.importance[200:500])
    # Blocks of 9 rows (99 elements // 11 per ray), which split frames and rays unevenly.
    monkeypatch.setattr(noise_module, "CPU_ELEMENTS_PER_BLOCK", 99)
    blocked = frame_noise(range(0, 6), 100, 6, 5, seed=9)
    assert torch.equal(blocked.stratified, clip.stratified) and torch.equal(blocked.importance, clip.importance)
    assert not torch.equal(frame_noise(range(0, 6), 100, 6, 5, seed=10).stratified, clip.stratified)
    # Seeds are taken modulo 2^64, and the upper word counts.
    def draws(seed: int) -> torch.Tensor:
        return frame_noise(range(1), 4, 2, 2, seed).importance

    assert torch.equal(draws(-1), draws(2**64 - 1)) and not torch.equal(draws(0), draws(2**32))


def _accelerators() -> list[str]:
    devices = ["cuda"] if torch.cuda.is_available() else []
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


@pytest.mark.parametrize("device", _accelerators())
def test_frame_noise_on_an_accelerator_equals_the_cpu_noise(device):
    here = frame_noise(range(5, 8), 128 * 128, 48, 48, seed=3, device=device)
    assert here.stratified.device.type == here.importance.device.type == device
    cpu = frame_noise(range(5, 8), 128 * 128, 48, 48, seed=3)
    assert torch.equal(here.stratified.cpu(), cpu.stratified) and torch.equal(here.importance.cpu(), cpu.importance)


def test_frame_noise_is_uniform_and_independent():
    """786k draws (2 frames of 64² rays x 96 samples): uniform marginals and no correlation between
    neighbouring samples, rays, frames, the two passes, or neighbouring seeds."""
    scipy_stats = pytest.importorskip("scipy.stats")
    noise = frame_noise(range(2), 64 * 64, 48, 48, seed=1234)
    coarse = noise.stratified[..., 0].double()                      # [2, 4096, 48]
    fine = noise.importance.reshape(2, 64 * 64, 48).double()
    values = torch.cat([coarse.flatten(), fine.flatten()])
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / values.numel())
    assert scipy_stats.kstest(values.numpy(), "uniform").pvalue > 1e-3
    counts = torch.histc(values, bins=256, min=0, max=1).numpy()
    assert scipy_stats.chisquare(counts).pvalue > 1e-3

    def assert_uncorrelated(a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.flatten(), b.flatten()
        r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(r) < 4.5 / math.sqrt(a.numel()), r
        # Pairs fill the unit square evenly (16 x 16 cells).
        cells = (a * 16).long() * 16 + (b * 16).long()
        assert scipy_stats.chisquare(torch.bincount(cells, minlength=256).numpy()).pvalue > 1e-3

    assert_uncorrelated(coarse[..., :-1], coarse[..., 1:])                  # neighbouring samples
    assert_uncorrelated(coarse[:, :-1], coarse[:, 1:])                      # neighbouring rays
    assert_uncorrelated(coarse[:, :-64], coarse[:, 64:])                    # the pixel below
    assert_uncorrelated(coarse[0], coarse[1])                               # consecutive frames
    assert_uncorrelated(coarse, fine)                                       # the two passes
    other_seed = frame_noise(range(2), 64 * 64, 48, 48, seed=1235).stratified[..., 0].double()
    assert_uncorrelated(coarse, other_seed)                                 # neighbouring seeds
