"""End-to-end fixtures: a real ComfyUI with this pack installed, synthetic models and short inputs.

Runs only when ``COMFYUI_DIR`` (a ComfyUI checkout) and ``COMFYUI_PYTHON`` (an interpreter that runs it, with
this pack's requirements installed) are set; everything lives in a temporary base directory (custom_nodes,
models, input, output, user), so the checkout and the user's models are never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .comfy_client import REPO_ROOT, ComfyServer, install_pack
from .fixtures import write_inputs, write_models, write_persona_models


def _comfy_env() -> tuple[Path, str] | None:
    directory, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not directory or not python:
        return None
    return Path(directory), python


def pytest_collection_modifyitems(config, items):
    if _comfy_env() is None:
        skip = pytest.mark.skip(reason="set COMFYUI_DIR and COMFYUI_PYTHON to run the ComfyUI end-to-end tests")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def e2e_base(tmp_path_factory, shared_dir: Path) -> dict:
    """Temporary ComfyUI base directory: the pack, synthetic models (BFM through extra_model_paths.yaml) and inputs."""
    base = tmp_path_factory.mktemp("comfyui-base")
    install_pack(base / "custom_nodes")
    extra_root = base / "shared_models"
    write_models(base / "models" / "real3dportrait", extra_root, shared_dir)
    persona = write_persona_models(base / "models" / "real3dportrait")
    extra = base / "extra_model_paths.yaml"
    extra.write_text(f"r3dp_e2e:\n    base_path: {base}\n    real3dportrait: {extra_root.name}\n")
    clip = write_inputs(base / "input", shared_dir)
    return {"base": base, "extra_model_paths": extra, "persona": persona, **clip}


@pytest.fixture(scope="session")
def comfy(e2e_base):
    env = _comfy_env()
    if env is None:
        pytest.skip("set COMFYUI_DIR and COMFYUI_PYTHON")
    server = ComfyServer(env[0], env[1], e2e_base["base"], e2e_base["extra_model_paths"])
    try:
        server.wait_ready()
        # a fresh user folder would open the template browser over the canvas
        server.post("/settings/Comfy.TutorialCompleted", True)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def workflows_dir() -> Path:
    return REPO_ROOT / "workflows"
