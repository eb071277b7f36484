"""Shared fixtures. Tests read ../shared (spec, parity cases, test data); they never download anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("R3DP_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "parity").is_dir():
        pytest.skip(f"shared reference folder not found at {path} (set R3DP_SHARED)")
    return path


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    return shared_dir / "parity"


@pytest.fixture(scope="session")
def official_data(shared_dir: Path) -> Path:
    """The official repository's small data files (NCC code, eye triangles, landmark index)."""
    return shared_dir / "official_data"


@pytest.fixture(scope="session")
def landmarker_model(shared_dir: Path) -> Path:
    """MediaPipe's ``face_landmarker.task``."""
    return shared_dir / "models" / "face_landmarker.task"


@pytest.fixture(scope="session")
def portrait_path(shared_dir: Path) -> Path:
    """A 512² photo with one small face."""
    return shared_dir / "testdata" / "astronaut_512.png"


@pytest.fixture(scope="session")
def synth_state_dict(parity_dir: Path):
    """``synth_state_dict("secc2plane_torso" | "audio2secc_vae")`` → deterministic synthetic weights (cached)."""
    from r3dp_core.parity.case import synth_state_dict as build

    def get(model: str) -> dict[str, torch.Tensor]:
        return build(parity_dir, model)

    return get


@pytest.fixture(scope="session")
def parity_cache(tmp_path_factory):
    """Builds the synthetic BFM once per session (about 5 s) unless R3DP_PARITY_CACHE points at a kept one."""
    if not os.environ.get("R3DP_PARITY_CACHE"):
        os.environ["R3DP_PARITY_CACHE"] = str(tmp_path_factory.getbasetemp() / "r3dp_parity_cache")
    return os.environ["R3DP_PARITY_CACHE"]


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two CI cores; more threads only add contention and nondeterministic reduction orders.
    torch.set_num_threads(2)
    yield
