"""Z-buffered triangle rasterisation in plain PyTorch (no compiled extensions).

Conventions
* Screen space: continuous pixel coordinates, x to the right, y down, origin at the top-left image corner;
  pixel (row r, col c) is sampled at its centre ``(c + 0.5, r + 0.5)``.
* A vertex is ``(x_screen, y_screen, depth)`` where depth is the positive view-space distance along the
  optical axis (not NDC), so perspective-correct interpolation weights are ``(l_i / z_i) / sum_j (l_j / z_j)``.
* A pixel is covered by a triangle when its centre lies inside or exactly on the triangle (all screen-space
  barycentrics >= 0). Both windings are drawn (no back-face culling); degenerate triangles are skipped.
  Triangles with a vertex at depth <= ``near`` are dropped whole (no near-plane clipping), which never
  happens for faces in front of the camera.
* The nearest triangle wins; exact depth ties go to the lower triangle index, so the result is deterministic.

Memory strategy
Every triangle lists the pixel centres of its screen bounding box (clipped to the image). These
(triangle, pixel) candidates are generated with ``repeat_interleave`` in chunks of about ``max_candidates``
pairs (a chunk is a run of consecutive triangles, so one chunk holds at most ``max_candidates + H*W`` pairs).
Each candidate that passes the inside test is reduced into a per-pixel int64 key
``(float32 depth bits << 32) | triangle index`` with ``scatter_reduce(amin)``: for positive floats the bit
pattern is monotonic, so one reduction does the depth test and the tie-break together and chunks compose
without a second pass. Working memory is O(B·H·W + max_candidates) regardless of the triangle count; the
loop is over chunks only, everything inside a chunk is vectorised. Small triangles (a BFM face at 512² covers
about 1-2 px per triangle) make the candidate count a small multiple of the covered area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NO_HIT = torch.iinfo(torch.int64).max
_LOW_32_BITS = 0xFFFFFFFF


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize_triangles`.

    face_index: [B,H,W] int64, index into ``faces`` of the visible triangle, -1 where nothing is drawn.
    bary:       [B,H,W,3] perspective-correct barycentric weights of that triangle's vertices (0 on background).
    depth:      [B,H,W] view-space depth of the visible surface, +inf on background.
    """

    face_index: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """[B,H,W] bool, True where a triangle is drawn."""
        return self.face_index >= 0


def _screen_barycentrics(px: torch.Tensor, py: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics of pixel centres (px, py) [N] in triangles tri [N,3,2] → [N,3].

    Measured from vertex 0 so the products stay small (pixel offsets, not absolute coordinates), which keeps
    float32 accurate for sub-pixel triangles.
    """
    dx = px + 0.5 - tri[:, 0, 0]
    dy = py + 0.5 - tri[:, 0, 1]
    e1x, e1y = tri[:, 1, 0] - tri[:, 0, 0], tri[:, 1, 1] - tri[:, 0, 1]
    e2x, e2y = tri[:, 2, 0] - tri[:, 0, 0], tri[:, 2, 1] - tri[:, 0, 1]
    inv_area = 1.0 / (e1x * e2y - e1y * e2x)
    l1 = (dx * e2y - dy * e2x) * inv_area
    l2 = (e1x * dy - e1y * dx) * inv_area
    return torch.stack([1.0 - l1 - l2, l1, l2], dim=-1)


def _perspective_correct(bary_screen: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen barycentrics [N,3] and vertex depths [N,3] → (perspective-correct weights [N,3], depth [N])."""
    w = bary_screen / depths
    inv_depth = w.sum(-1)
    return w / inv_depth[:, None], 1.0 / inv_depth


def rasterize_triangles(vertices: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                        near: float = 1e-6, max_candidates: int = 1 << 22) -> Fragments:
    """Rasterise a batch of meshes that share one triangle list.

    Args:
        vertices: [B,V,3] screen-space vertices ``(x_pixel, y_pixel, depth)`` (see module docstring), float.
        faces: [F,3] int64 vertex indices (0-based), shared by the batch.
        image_size: ``S`` or ``(H, W)``.
        near: triangles with any vertex depth <= near are not drawn.
        max_candidates: (triangle, pixel) pairs examined per chunk; bounds the working memory
            (about 60 bytes per pair).

    Returns:
        :class:`Fragments` with [B,H,W] maps on ``vertices.device``; barycentrics/depth in float32.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B,V,3], got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F,3], got {tuple(faces.shape)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    device = vertices.device
    batch, num_faces = vertices.shape[0], faces.shape[0]
    faces = faces.to(device=device, dtype=torch.long)
    # float32 is needed for the depth-bit key; half precision would also be too coarse for sub-pixel edges
    tris = vertices.float()[:, faces]                                      # [B,F,3,3]

    xy_min, xy_max = tris[..., :2].amin(2), tris[..., :2].amax(2)          # [B,F,2]
    col0 = torch.ceil(xy_min[..., 0] - 0.5).clamp(0, width)
    col1 = torch.floor(xy_max[..., 0] - 0.5).clamp(-1, width - 1)
    row0 = torch.ceil(xy_min[..., 1] - 0.5).clamp(0, height)
    row1 = torch.floor(xy_max[..., 1] - 0.5).clamp(-1, height - 1)
    e1 = tris[..., 1, :2] - tris[..., 0, :2]
    e2 = tris[..., 2, :2] - tris[..., 0, :2]
    drawable = ((tris[..., 2] > near).all(-1) & torch.isfinite(tris).all(-1).all(-1)
                & ((e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) != 0))
    ncols = (col1 - col0 + 1).clamp(min=0).long()
    nrows = (row1 - row0 + 1).clamp(min=0).long()
    counts = torch.where(drawable, ncols * nrows, 0).flatten()            # [B*F]

    tri_ids = counts.nonzero().squeeze(1)                                  # flat ids b*F + f
    counts = counts[tri_ids]
    col0, row0, ncols = col0.flatten()[tri_ids].long(), row0.flatten()[tri_ids].long(), ncols.flatten()[tri_ids]
    tris_flat = tris.reshape(-1, 3, 3)
    ends = counts.cumsum(0)
    starts = ends - counts
    total = int(ends[-1]) if ends.numel() else 0
    # chunk boundaries: runs of consecutive triangles holding about max_candidates pairs each
    targets = torch.arange(1, total // max_candidates + 1, device=device) * max_candidates
    cuts = torch.searchsorted(ends, targets, right=True)
    bounds = [0] + sorted(set(cuts.tolist()) - {0}) + [tri_ids.numel()]

    keys = torch.full((batch * height * width,), _NO_HIT, dtype=torch.int64, device=device)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        chunk_counts = counts[lo:hi]
        owner = torch.repeat_interleave(torch.arange(lo, hi, device=device), chunk_counts)
        offset = torch.arange(int(ends[hi - 1] - starts[lo]), device=device) - (starts[owner] - starts[lo])
        px = col0[owner] + offset % ncols[owner]
        py = row0[owner] + torch.div(offset, ncols[owner], rounding_mode="floor")
        tri = tris_flat[tri_ids[owner]]                                    # [N,3,3]
        bary = _screen_barycentrics(px.float(), py.float(), tri[..., :2])
        inside = (bary >= 0).all(-1)
        _, depth = _perspective_correct(bary, tri[..., 2])
        inside &= depth > near
        flat_tri = tri_ids[owner][inside]
        image = torch.div(flat_tri, num_faces, rounding_mode="floor")
        pixel = (image * height + py[inside]) * width + px[inside]
        key = (depth[inside].view(torch.int32).long() << 32) | (flat_tri - image * num_faces)
        keys.scatter_reduce_(0, pixel, key, reduce="amin")

    hit = keys != _NO_HIT
    face_index = torch.where(hit, keys & _LOW_32_BITS, -1).view(batch, height, width)
    bary = torch.zeros(batch * height * width, 3, device=device)
    depth = torch.full((batch * height * width,), float("inf"), device=device)
    pixels = hit.nonzero().squeeze(1)
    if pixels.numel():
        image = torch.div(pixels, height * width, rounding_mode="floor")
        rest = pixels - image * (height * width)
        py = torch.div(rest, width, rounding_mode="floor")
        px = rest - py * width
        tri = tris[image, face_index.flatten()[pixels]]
        bary_hit, depth_hit = _perspective_correct(_screen_barycentrics(px.float(), py.float(), tri[..., :2]),
                                                   tri[..., 2])
        bary[pixels] = bary_hit
        depth[pixels] = depth_hit
    return Fragments(face_index, bary.view(batch, height, width, 3), depth.view(batch, height, width))


def interpolate_vertex_attributes(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor,
                                  background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes over the visible triangles.

    Args:
        fragments: from :func:`rasterize_triangles` ([B,H,W] maps).
        faces: the [F,3] triangle list used for rasterisation.
        attributes: [V,C] shared by the batch, or [B,V,C] per image.
        background: value (scalar or [C]) written where no triangle is drawn.

    Returns:
        [B,C,H,W] in ``attributes.dtype`` (interpolated in float32).
    """
    batch, height, width = fragments.face_index.shape
    device = fragments.face_index.device
    attributes = attributes.to(device)
    channels = attributes.shape[-1]
    out = torch.empty(batch * height * width, channels, device=device, dtype=torch.float32)
    out[:] = torch.as_tensor(background, device=device, dtype=torch.float32)
    face_index = fragments.face_index.flatten()
    pixels = (face_index >= 0).nonzero().squeeze(1)
    if pixels.numel():
        corner_ids = faces.to(device=device, dtype=torch.long)[face_index[pixels]]          # [N,3]
        if attributes.ndim == 2:
            corners = attributes.float()[corner_ids]                                         # [N,3,C]
        else:
            image = torch.div(pixels, height * width, rounding_mode="floor")
            corners = attributes.float()[image[:, None], corner_ids]
        weights = fragments.bary.reshape(-1, 3)[pixels]
        out[pixels] = (weights[:, :, None] * corners).sum(1)
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2).to(attributes.dtype)
