"""The node pack's entry points: import-safe without ComfyUI, V3 only, r3dp_core free of ComfyUI."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pack_root_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location("r3dp_pack_root", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WEB_DIRECTORY == "./web"
    assert callable(module.comfy_entrypoint)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # a V1 mapping would make ComfyUI skip the V3 entry point
    assert "comfy_api" not in sys.modules


def test_r3dp_core_never_imports_comfyui():
    offenders = []
    for path in (REPO / "r3dp_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("comfy", "comfy_api",
                                                                                     "folder_paths", "nodes")]
    assert offenders == []


def test_r3dp_core_imports_in_a_clean_interpreter():
    code = "import sys, r3dp_core, r3dp_core.checkpoint, r3dp_core.parity; assert 'comfy_api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_pyproject_metadata():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert "comfyui" not in project["name"].lower()
    assert project["scripts"]["r3dp"] == "r3dp_core.cli:main"
    assert "test" in project["optional-dependencies"]
    comfy = meta["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert project["urls"]["Repository"]


def test_registry_icon_is_in_the_repository_and_square():
    """``[tool.comfy] Icon`` points into this repository's main branch: the file must exist, square, at most 400 px."""
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    icon_url = meta["tool"]["comfy"]["Icon"]
    repository = meta["project"]["urls"]["Repository"].replace("https://github.com/", "")
    prefix = f"https://raw.githubusercontent.com/{repository}/main/"
    assert icon_url.startswith(prefix), icon_url
    icon = REPO / icon_url[len(prefix):]
    assert icon.is_file(), f"{icon} (named by [tool.comfy] Icon) is missing"
    import cv2
    image = cv2.imread(str(icon), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape[0] == image.shape[1] <= 400, getattr(image, "shape", None)
    assert image.std() > 10, "the icon is a blank square"


def test_docs_figure_script_imports():
    """docs/make_paste_back_figure.py imports every pipeline name at module level, so a renamed one fails here."""
    spec = importlib.util.spec_from_file_location("make_paste_back_figure", REPO / "docs" / "make_paste_back_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_requirements_follow_manager_conventions():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    names = {ln.split("=")[0].split(">")[0].split("<")[0].strip().lower() for ln in lines}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert all(not any(op in ln for op in "=<>") for ln in lines), "requirements must stay unpinned"
    opencv = {n for n in names if n.startswith("opencv")}
    assert opencv == {"opencv-contrib-python"}, "exactly one OpenCV provider (the one mediapipe needs)"


def test_readme_test_command_is_the_one_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == "python -m pytest -q"
    assert "python -m pytest -q" in readme
