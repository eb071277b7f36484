"""Comparing a stage's outputs with a parity case's references.

A check passes when ``|x - ref| <= atol + rtol*|ref|`` holds elementwise and ``rms(x - ref) <= rms_max``
(the case's ``suggested_tolerance``). Large tensors are stored as crops or lattices; the same views are
taken of the stage's full-size output before comparing. Tensors without a suggested tolerance (integer
indices, masks) must match exactly.
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
    checks: list[Check] = field(default_factory=list)
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
    """Per-sample, per-channel mean/std of a tri-plane ``[B,3,C,H,W]``: catches channel permutations outside the
    crops. The sidecar stores them sample after sample, ``[B·3·C]`` (``[3·C]`` for one sample)."""
    if tolerance is None or "per_channel_mean" not in info or got.ndim != 5:
        return []
    per_channel = got.detach().to("cpu", torch.float64).reshape(-1, got.shape[-2] * got.shape[-1])
    # Stored to 7 decimals; a mean of errors bounded by atol is bounded by atol too.
    stats_tol = {"atol": float(tolerance["atol"]) + 1e-6, "rtol": 0.0, "rms_max": float(tolerance["atol"]) + 1e-6}
    checks = []
    for stat, values in (("mean", per_channel.mean(1)), ("std", per_channel.std(1))):
        ref = torch.tensor(info[f"per_channel_{stat}"], dtype=torch.float64)
        checks.append(compare_tensor(name, f"{name}.per_channel_{stat}", values, ref, stats_tol))
    return checks
