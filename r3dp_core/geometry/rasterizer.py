"""Z-buffered triangle rasterisation in plain PyTorch (no compiled extensions).

Conventions
* Screen space: continuous pixel coordinates, x to the right, y down, origin at the top-left image corner;
  pixel (row r, col c) is sampled at its centre ``(c + 0.5, r + 0.5)``.
* A vertex is ``(x_screen, y_screen, depth)`` where depth is the positive view-space distance along the
  optical axis (not NDC), so perspective-correct interpolation weights are ``(l_i / z_i) / sum_j (l_j / z_j)``.
* A pixel is covered by a triangle when its centre lies strictly inside it (all screen-space barycentrics
  > 0), as in PyTorch3D, which the official SECC renderer uses: a centre exactly on an edge belongs to
  neither triangle. Both windings are drawn (no back-face culling). Triangles whose doubled area is at most
  1e-8 in PyTorch3D's NDC units (the shorter image side spans 2) are skipped as degenerate, as PyTorch3D does.
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
without a second pass. (MPS lacks int64 min-reductions; there the chunks are visited twice with float
reductions, depth first, then the lowest triangle id at that depth.) Working memory is
O(B·H·W + max_candidates) regardless of the triangle count; the loop is over chunks only, everything inside a
chunk is vectorised. Small triangles (a BFM face at 512² covers
about 1-2 px per triangle) make the candidate count a small multiple of the covered area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NO_HIT = torch.iinfo(torch.int64).max
_LOW_32_BITS = 0xFFFFFFFF
# PyTorch3D's kEpsilon: faces with |doubled area| <= this in NDC are not drawn (rasterize_meshes_cpu.cpp)
_DEGENERATE_NDC_AREA = 1e-8


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


def _edge_planes(tris: torch.Tensor, col0: torch.Tensor, row0: torch.Tensor) -> torch.Tensor:
    """Per-triangle affine coefficients [N,9] of the screen barycentrics in the pixel offset (i, k) from the
    first pixel centre of its bounding box: ``l1 = c1 + a1·i + b1·k``, ``l2 = c2 + a2·i + b2·k``, then the
    inverse vertex depths. Measuring from the box keeps every product small, so float32 stays accurate at
    sub-pixel scale on large images.
    """
    e1x, e1y = tris[:, 1, 0] - tris[:, 0, 0], tris[:, 1, 1] - tris[:, 0, 1]
    e2x, e2y = tris[:, 2, 0] - tris[:, 0, 0], tris[:, 2, 1] - tris[:, 0, 1]
    inv_area = 1.0 / (e1x * e2y - e1y * e2x)
    ox = col0 + 0.5 - tris[:, 0, 0]
    oy = row0 + 0.5 - tris[:, 0, 1]
    return torch.stack([(ox * e2y - oy * e2x) * inv_area, e2y * inv_area, -e2x * inv_area,
                        (e1x * oy - e1y * ox) * inv_area, -e1y * inv_area, e1x * inv_area,
                        1.0 / tris[:, 0, 2], 1.0 / tris[:, 1, 2], 1.0 / tris[:, 2, 2]], dim=-1)


def _evaluate(planes: torch.Tensor, i: torch.Tensor, k: torch.Tensor):
    """Screen barycentrics (l0, l1, l2) and inverse depth at offsets (i, k) [N] for planes [N,9]."""
    l1 = planes[:, 0] + planes[:, 1] * i + planes[:, 2] * k
    l2 = planes[:, 3] + planes[:, 4] * i + planes[:, 5] * k
    l0 = 1.0 - l1 - l2
    inv_depth = l0 * planes[:, 6] + l1 * planes[:, 7] + l2 * planes[:, 8]
    return l0, l1, l2, inv_depth


def rasterize_triangles(vertices: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                        near: float = 1e-6, max_candidates: int = 1 << 21, depth_test: str | None = None
                        ) -> Fragments:
    """Rasterise a batch of meshes that share one triangle list.

    Args:
        vertices: [B,V,3] screen-space vertices ``(x_pixel, y_pixel, depth)`` (see module docstring), float.
        faces: [F,3] int64 vertex indices (0-based), shared by the batch.
        image_size: ``S`` or ``(H, W)``.
        near: triangles with any vertex depth <= near are not drawn.
        max_candidates: (triangle, pixel) pairs examined per chunk; bounds the working memory
            (about 120 bytes each at the peak).
        depth_test: ``'packed'`` (one int64 ``amin`` per chunk) or ``'two_pass'`` (float ``amin`` only, every chunk
            visited twice); None picks two_pass on MPS, which lacks int64 min-reductions, else packed. Both give
            identical fragments.

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
    if batch * num_faces >= 2 ** 31:
        raise ValueError("too many triangles in one call; rasterise fewer images at a time")
    faces = faces.to(device=device, dtype=torch.long)
    # float32 is needed for the depth-bit key; half precision would also be too coarse for sub-pixel edges
    tris = vertices.float()[:, faces].reshape(-1, 3, 3)                    # [B*F,3,3]

    xy_min, xy_max = tris[..., :2].amin(1), tris[..., :2].amax(1)          # [B*F,2]
    col0 = torch.ceil(xy_min[:, 0] - 0.5).clamp(0, width)
    col1 = torch.floor(xy_max[:, 0] - 0.5).clamp(-1, width - 1)
    row0 = torch.ceil(xy_min[:, 1] - 0.5).clamp(0, height)
    row1 = torch.floor(xy_max[:, 1] - 0.5).clamp(-1, height - 1)
    e1 = tris[:, 1, :2] - tris[:, 0, :2]
    e2 = tris[:, 2, :2] - tris[:, 0, :2]
    min_doubled_area = _DEGENERATE_NDC_AREA * (min(height, width) / 2) ** 2
    drawable = ((tris[..., 2] > near).all(-1) & torch.isfinite(tris).all(-1).all(-1)
                & ((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() > min_doubled_area))
    ncols = (col1 - col0 + 1).clamp(min=0).long()
    counts = torch.where(drawable, ncols * (row1 - row0 + 1).clamp(min=0).long(), 0)

    # from here on only triangles with candidate pixels ("compact" ids, in flat b*F + f order)
    tri_ids = counts.nonzero().squeeze(1)
    counts, ncols = counts[tri_ids], ncols[tri_ids]
    col0, row0 = col0[tri_ids], row0[tri_ids]
    planes = _edge_planes(tris[tri_ids], col0, row0)
    col0, row0 = col0.long(), row0.long()
    image_of = torch.div(tri_ids, num_faces, rounding_mode="floor")
    ends = counts.cumsum(0)
    starts = ends - counts
    total = int(ends[-1]) if ends.numel() else 0
    # chunk boundaries: runs of consecutive triangles holding about max_candidates pairs each
    targets = torch.arange(1, total // max_candidates + 1, device=device) * max_candidates
    cuts = torch.searchsorted(ends, targets, right=True)
    bounds = [0] + sorted(set(cuts.tolist()) - {0}) + [tri_ids.numel()]

    def visible_candidates():
        """Per chunk: (compact triangle id, flat pixel index, depth) of the candidates that pass the inside test."""
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            owner = torch.repeat_interleave(torch.arange(lo, hi, device=device), counts[lo:hi])
            offset = torch.arange(int(ends[hi - 1] - starts[lo]), device=device) - (starts[owner] - starts[lo])
            k = torch.div(offset, ncols[owner], rounding_mode="floor")
            i = offset - k * ncols[owner]
            l0, l1, l2, inv_depth = _evaluate(planes[owner], i.float(), k.float())
            depth = 1.0 / inv_depth
            inside = (l0 > 0) & (l1 > 0) & (l2 > 0) & (depth > near)
            owner, i, k = owner[inside], i[inside], k[inside]
            yield owner, (image_of[owner] * height + row0[owner] + k) * width + col0[owner] + i, depth[inside]

    num_pixels = batch * height * width
    if depth_test is None:
        depth_test = "two_pass" if device.type == "mps" else "packed"
    if depth_test == "packed":
        # one reduction of (depth bits << 32) | compact id; compact ids follow face order within an image
        keys = torch.full((num_pixels,), _NO_HIT, dtype=torch.int64, device=device)
        for owner, pixel, depth in visible_candidates():
            keys.scatter_reduce_(0, pixel, (depth.view(torch.int32).long() << 32) | owner, reduce="amin")
        pixels = (keys != _NO_HIT).nonzero().squeeze(1)
        compact = keys[pixels] & _LOW_32_BITS
    elif depth_test == "two_pass":
        # float reductions only (MPS has no int64 min): nearest depth first, then the lowest id at that depth;
        # ids are exact in float32 below 2^24
        if tri_ids.numel() >= 2 ** 24:
            raise ValueError("too many triangles in one call for the two-pass depth test; rasterise fewer images")
        zbuf = torch.full((num_pixels,), float("inf"), device=device)
        for _, pixel, depth in visible_candidates():
            zbuf.scatter_reduce_(0, pixel, depth, reduce="amin")
        winner = torch.full((num_pixels,), float("inf"), device=device)
        for owner, pixel, depth in visible_candidates():
            front = depth == zbuf[pixel]
            winner.scatter_reduce_(0, pixel[front], owner[front].float(), reduce="amin")
        pixels = torch.isfinite(winner).nonzero().squeeze(1)
        compact = winner[pixels].long()
    else:
        raise ValueError(f"depth_test must be 'packed', 'two_pass' or None, got {depth_test!r}")
    face_index = torch.full((num_pixels,), -1, dtype=torch.int64, device=device)
    face_index[pixels] = tri_ids[compact] - image_of[compact] * num_faces
    rest = pixels % (height * width)
    l0, l1, l2, inv_depth = _evaluate(planes[compact], (rest % width - col0[compact]).float(),
                                      (torch.div(rest, width, rounding_mode="floor") - row0[compact]).float())
    bary = torch.zeros(num_pixels, 3, device=device)
    bary[pixels] = torch.stack([l0, l1, l2], -1) * planes[compact, 6:] / inv_depth[:, None]
    depth = torch.full((num_pixels,), float("inf"), device=device)
    depth[pixels] = 1.0 / inv_depth
    return Fragments(face_index.view(batch, height, width), bary.view(batch, height, width, 3),
                     depth.view(batch, height, width))


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
