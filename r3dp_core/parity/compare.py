"""Comparing a stage's outputs with a parity case's references.

A check passes when ``|x - ref| <= atol + rtol*|ref|`` holds elementwise and ``rms(x - ref) <= rms_max``
(the case's ``suggested_tolerance``). Large tensors are stored as crops or lattices; the same views are
taken of the stage's full-size output before comparing. Tensors without a suggested tolerance (integer
indices, masks) must match exactly. Rasterised maps, whose tolerance gives ``n_bad_max``, are scored per image
with the pixel metric of :class:`PixelCheck` instead.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import torch

_LATTICE = re.compile(r"index_select\(-2, L\)\.index_select\(-1, L\) with L = (\[[\d,\s]+\])")
_SLICE = re.compile(r"^\[\s*\.\.\.\s*,(.*)\]$")


def parse_view(spec: str):
    """Turn a sidecar view description into a function ``full tensor -> stored view``.

    Understands ``full``, ``[..., a:b, c:d]`` (any number of trailing slices) and the plane lattice
    ``x.index_select(-2, L).index_select(-1, L) with L = [...]``.
    """
    spec = spec.strip()
    if spec in ("full", ""):
        return lambda x: x
    if m := _LATTICE.search(spec):
        index = torch.tensor(ast.literal_eval(m.group(1)), dtype=torch.long)
        return lambda x: x.index_select(-2, index.to(x.device)).index_select(-1, index.to(x.device))
    if m := _SLICE.match(spec):
        slices = []
        for part in m.group(1).split(","):
            lo, hi = part.strip().split(":")
            slices.append(slice(int(lo) if lo else None, int(hi) if hi else None))
        return lambda x: x[(Ellipsis, *slices)]
    raise ValueError(f"unknown stored-view description {spec!r}")


@dataclass
class Check:
    """One compared tensor view."""

    name: str
    key: str
    shape: tuple[int, ...]
    max_abs: float
    rms: float
    atol: float
    rtol: float
    rms_max: float
    violations: int
    exact: bool = False
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.violations == 0 and self.rms <= self.rms_max

    def row(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        tol = "exact" if self.exact else f"atol {self.atol:.0e} rms_max {self.rms_max:.0e}"
        extra = f"  ({self.violations} elements out of tolerance)" if self.violations else ""
        return (f"{status} {self.key:<44} max_abs {self.max_abs:.3e}  rms {self.rms:.3e}  [{tol}]"
                f"{extra}{'  ' + self.note if self.note else ''}")


@dataclass
class Report:
    """Outcome of one case: every check plus what could not be checked."""

    case: str
    checks: list[Check | PixelCheck] = field(default_factory=list)
    missing_outputs: list[str] = field(default_factory=list)
    missing_references: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (bool(self.checks) and not self.missing_outputs and not self.missing_references
                and all(c.passed for c in self.checks))

    def summary(self) -> str:
        lines = [f"case {self.case}"]
        lines += [c.row() for c in self.checks]
        for name in self.missing_outputs:
            lines.append(f"FAIL {name:<44} output not produced by the stage")
        for key in self.missing_references:
            lines.append(f"FAIL {key:<44} listed in the sidecar but not stored in the case file")
        if self.unchecked:
            lines.append(f"     not checked (not produced): {', '.join(self.unchecked)}")
        missing = len(self.missing_outputs) + len(self.missing_references)
        passed = sum(c.passed for c in self.checks)
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: {self.case}: {passed}/{len(self.checks) + missing} checks within tolerance "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)


def compare_tensor(name: str, key: str, got: torch.Tensor, ref: torch.Tensor, tolerance: dict | None,
                   note: str = "") -> Check:
    """Elementwise + rms comparison of one view. Without a tolerance the match must be exact."""
    if tuple(got.shape) != tuple(ref.shape):
        return Check(name, key, tuple(ref.shape), float("inf"), float("inf"), 0, 0, 0, ref.numel() or 1,
                     note=f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    compute = torch.float64
    got64 = got.detach().to("cpu", compute)
    ref64 = ref.detach().to("cpu", compute)
    diff = (got64 - ref64).abs()
    nonfinite = ~torch.isfinite(got64) & ~(got64 == ref64)
    diff = torch.where(nonfinite, torch.full_like(diff, float("inf")), torch.nan_to_num(diff, nan=0.0))
    max_abs = float(diff.max()) if diff.numel() else 0.0
    rms = float(diff.pow(2).mean().sqrt()) if diff.numel() else 0.0
    if tolerance is None:
        violations = int((diff > 0).sum())
        return Check(name, key, tuple(ref.shape), max_abs, rms, 0.0, 0.0, 0.0, violations, exact=True, note=note)
    atol, rtol, rms_max = float(tolerance["atol"]), float(tolerance.get("rtol", 0.0)), float(tolerance["rms_max"])
    bound = atol + rtol * ref64.abs()
    violations = int((diff > bound).sum())
    return Check(name, key, tuple(ref.shape), max_abs, rms, atol, rtol, rms_max, violations, note=note)


def channel_stats_checks(name: str, got: torch.Tensor, info: dict, tolerance: dict | None) -> list[Check]:
    """Per-sample, per-channel mean/std of a tri-plane ``[B,3,C,H,W]`` (or channel-stacked ``[B,3C,H,W]``): catches
    channel permutations outside the crops. The sidecar stores them sample after sample, ``[B·3·C]`` (``[3·C]`` for
    one sample), flat or nested per sample."""
    if tolerance is None or "per_channel_mean" not in info or got.ndim not in (4, 5):
        return []
    per_channel = got.detach().to("cpu", torch.float64).reshape(-1, got.shape[-2] * got.shape[-1])
    # Stored to 7 decimals; a mean of errors bounded by atol is bounded by atol too.
    stats_tol = {"atol": float(tolerance["atol"]) + 1e-6, "rtol": 0.0, "rms_max": float(tolerance["atol"]) + 1e-6}
    checks = []
    for stat, values in (("mean", per_channel.mean(1)), ("std", per_channel.std(1))):
        ref = torch.tensor(info[f"per_channel_{stat}"], dtype=torch.float64).reshape(-1)
        checks.append(compare_tensor(name, f"{name}.per_channel_{stat}", values, ref, stats_tol))
    return checks


@dataclass
class PixelCheck:
    """Per-image pixel agreement of a rasterised map (README §14.4 of the parity cases).

    Rasterisation is discontinuous: a pixel centre within rounding of a triangle edge may pick the other
    triangle, which changes the pixel by up to the whole range at silhouettes. So an image passes when at most
    ``n_bad_max`` pixels miss ``atol + rtol·|ref|``, each of those equals (within ``excuse_tol``) a reference
    pixel of its 3x3 neighbourhood, the rest agree to ``rms_max``, and the listed quirk pixels match exactly.
    A mask passes when at most ``n_bad_max`` pixels differ, each where the reference's 3x3 neighbourhood holds
    both values (a mask edge).
    """

    name: str
    key: str
    n_bad: list[int]
    n_unexcused: list[int]
    rms: list[float] | None
    n_bad_max: int
    rms_max: float | None
    quirk_total: int = 0
    quirk_wrong: int = 0
    max_abs: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        rms_ok = self.rms is None or self.rms_max is None or all(r <= self.rms_max for r in self.rms)
        return (max(self.n_bad, default=0) <= self.n_bad_max and not any(self.n_unexcused) and rms_ok
                and self.quirk_wrong == 0)

    def row(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        what = "bad px" if self.rms is not None else "mismatched px"
        text = f"{status} {self.key:<44} {what} {self.n_bad} (max {self.n_bad_max})"
        if any(self.n_unexcused):
            text += f"  not at an edge {self.n_unexcused}"
        if self.rms is not None:
            limit = f" (max {self.rms_max:.0e})" if self.rms_max is not None else ""
            text += f"  rms of the rest [{', '.join(f'{r:.1e}' for r in self.rms)}]{limit}"
        if self.quirk_total:
            text += f"  quirk px {self.quirk_total - self.quirk_wrong}/{self.quirk_total} exact"
        return text + (f"  {self.note}" if self.note else "")


def _neighbour_offsets():
    return [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _quirk_mismatches(got: torch.Tensor, ref: torch.Tensor, quirk_pixels) -> tuple[int, int]:
    """(listed, wrong): quirk pixels ``[b,row,col]`` where ``got`` differs from the reference in any channel."""
    if not quirk_pixels:
        return 0, 0
    b, r, c = torch.tensor(quirk_pixels, dtype=torch.long).unbind(1)
    wrong = (got[b, :, r, c] != ref[b, :, r, c]).any(1)
    return len(quirk_pixels), int(wrong.sum())


def pixel_agreement(name: str, key: str, got: torch.Tensor, ref: torch.Tensor, tolerance: dict,
                    quirk_pixels=(), excuse_tol: float = 0.1) -> PixelCheck:
    """Pixel metric of an image batch ``[B,C,H,W]`` (see :class:`PixelCheck`); ``tolerance`` holds atol, rtol,
    n_bad_max and optionally rms_max and excuse_tol."""
    n_bad_max = int(tolerance["n_bad_max"])
    if tuple(got.shape) != tuple(ref.shape):
        return PixelCheck(name, key, [n_bad_max + 1], [0], None, n_bad_max, None,
                          note=f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    got = got.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    excuse_tol = float(tolerance.get("excuse_tol", excuse_tol))
    rms_max = float(tolerance["rms_max"]) if "rms_max" in tolerance else None
    height, width = ref.shape[-2:]
    diff = (got - ref).abs()
    bad = (diff > float(tolerance["atol"]) + float(tolerance.get("rtol", 0.0)) * ref.abs()).any(1)   # [B,H,W]
    n_bad, n_unexcused, rms = [], [], []
    for b in range(ref.shape[0]):
        rows, cols = bad[b].nonzero(as_tuple=True)
        excuse = torch.full(rows.shape, float("inf"), dtype=torch.float64)
        for dy, dx in _neighbour_offsets():
            near = ref[b][:, (rows + dy).clamp(0, height - 1), (cols + dx).clamp(0, width - 1)]
            excuse = torch.minimum(excuse, (got[b][:, rows, cols] - near).abs().amax(0))
        good = ~bad[b]
        n_bad.append(int(rows.numel()))
        n_unexcused.append(int((excuse > excuse_tol).sum()))
        rms.append(float(diff[b][:, good].pow(2).mean().sqrt()) if good.any() else 0.0)
    listed, wrong = _quirk_mismatches(got, ref, quirk_pixels)
    return PixelCheck(name, key, n_bad, n_unexcused, rms, n_bad_max, rms_max, listed, wrong,
                      max_abs=float(diff.max()) if diff.numel() else 0.0)


def mask_agreement(name: str, key: str, got: torch.Tensor, ref: torch.Tensor, n_bad_max: int,
                   quirk_pixels=()) -> PixelCheck:
    """Mask metric of ``[B,1,H,W]`` 0/1 masks (see :class:`PixelCheck`)."""
    if tuple(got.shape) != tuple(ref.shape):
        return PixelCheck(name, key, [n_bad_max + 1], [0], None, n_bad_max, None,
                          note=f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    got, ref = got.detach().cpu() > 0.5, ref.detach().cpu() > 0.5
    # a 3x3 max / min over the in-image neighbourhood: does it hold a 1 / a 0?
    has_one = torch.nn.functional.max_pool2d(ref.float(), 3, stride=1, padding=1) > 0.5
    has_zero = -torch.nn.functional.max_pool2d(-ref.float(), 3, stride=1, padding=1) < 0.5
    mismatch = got != ref
    at_edge = has_one & has_zero
    n_bad = [int(m.sum()) for m in mismatch]
    n_unexcused = [int((m & ~e).sum()) for m, e in zip(mismatch, at_edge)]
    listed, wrong = _quirk_mismatches(got, ref, quirk_pixels)
    return PixelCheck(name, key, n_bad, n_unexcused, None, n_bad_max, None, listed, wrong,
                      max_abs=float(mismatch.any()))
