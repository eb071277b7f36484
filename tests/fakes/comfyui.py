"""A stand-in for the parts of ComfyUI the pack's nodes use: ``comfy_api`` (V3 ``io``/``ui``), ``folder_paths``,
``comfy.model_management`` and ``comfy.utils``. Keyword-exact like ComfyUI 0.3.64, so a wrong argument fails
in the tests too; the real ComfyUI is exercised by ``tests/e2e``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


class Input:
    io_type = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy


class Output:
    io_type = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def comfy_type(io_type, input_cls=Input):
    return type(f"T_{io_type}", (), {"io_type": io_type, "Input": type("Input", (input_cls,), {"io_type": io_type}),
                                     "Output": type("Output", (Output,), {"io_type": io_type})})


class IntInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                 force_input=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.default, self.min, self.max = default, min, max


class FloatInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                 max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.default, self.min, self.max = default, min, max


class StringInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                 placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.default = default


class BooleanInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, label_on=None,
                 label_off=None, socketless=None, force_input=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.default = default


class ComboInput(Input):
    def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.options, self.default = options, default


class MultiTypeInput(Input):
    """``io.MultiType.Input``: one input accepting several socket types; its ``io_type`` is ComfyUI's
    comma-joined union (``get_io_type``)."""

    def __init__(self, id, types, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy)
        self.io_types = [t.io_type for t in types]
        self.io_type = ",".join(dict.fromkeys(self.io_types))


@dataclasses.dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand = args, ui, expand


class ComfyNode:
    hidden = None


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"


def fake_io():
    module = types.ModuleType("comfy_api.v0_0_2.io")
    module.ComfyNode, module.Schema, module.NodeOutput = ComfyNode, Schema, NodeOutput
    module.Hidden, module.UploadType = Hidden, UploadType
    module.Custom = comfy_type
    module.Int = comfy_type("INT", IntInput)
    module.Float = comfy_type("FLOAT", FloatInput)
    module.String = comfy_type("STRING", StringInput)
    module.Boolean = comfy_type("BOOLEAN", BooleanInput)
    module.Combo = comfy_type("COMBO", ComboInput)
    module.MultiType = SimpleNamespace(Input=MultiTypeInput)
    for name in ("Image", "Mask", "Audio", "Video"):
        setattr(module, name, comfy_type(name.upper()))
    return module


def fake_ui():
    module = types.ModuleType("comfy_api.v0_0_2.ui")
    module.PreviewText = lambda value, **_: {"text": (value,)}
    return module


class Interrupted(Exception):
    pass


class FolderPaths(types.ModuleType):
    """The parts of ComfyUI's folder_paths the nodes use, same semantics."""

    def __init__(self, base: Path):
        super().__init__("folder_paths")
        self.models_dir = str(base / "models")
        self.folder_names_and_paths = {}
        self.base = base

    def add_model_folder_path(self, folder_name, full_folder_path, is_default=False):
        if folder_name in self.folder_names_and_paths:
            paths, _ = self.folder_names_and_paths[folder_name]
            if full_folder_path in paths:
                if is_default and paths[0] != full_folder_path:
                    paths.remove(full_folder_path)
                    paths.insert(0, full_folder_path)
            elif is_default:
                paths.insert(0, full_folder_path)
            else:
                paths.append(full_folder_path)
        else:
            self.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(self, name):
        return self.folder_names_and_paths[name][0][:]

    def get_filename_list(self, name):
        paths, extensions = self.folder_names_and_paths[name]
        found = set()
        for folder in paths:
            for root, _, files in os.walk(folder):
                for file in files:
                    relative = os.path.relpath(os.path.join(root, file), folder)
                    if not extensions or os.path.splitext(file)[1].lower() in extensions:
                        found.add(relative)
        return sorted(found)

    def get_full_path(self, name, filename):
        for folder in self.folder_names_and_paths.get(name, ([], None))[0]:
            path = os.path.join(folder, filename)
            if os.path.isfile(path):
                return path
        return None

    def get_input_directory(self):
        return str(self.base / "input")

    def get_output_directory(self):
        return str(self.base / "output")

    def get_temp_directory(self):
        return str(self.base / "temp")

    def get_save_image_path(self, filename_prefix, output_dir, image_width=0, image_height=0):
        """ComfyUI's numbering of saved files (``%width%``/``%height%`` only): ``(folder, name, counter, subfolder,
        prefix)``, the counter one past the highest ``<name>_NNNNN_`` already in the folder."""
        filename_prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
            raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        taken = [int(f[len(filename) + 1:].split("_")[0]) for f in os.listdir(folder)
                 if f.startswith(filename + "_") and f[len(filename) + 1:].split("_")[0].isdigit()]
        return folder, filename, max(taken, default=0) + 1, subfolder, filename_prefix

    def get_annotated_filepath(self, name):
        return os.path.join(self.get_input_directory(), name)

    def exists_annotated_filepath(self, name):
        return os.path.exists(self.get_annotated_filepath(name))

    def filter_files_content_types(self, files, content_types):
        media = {".wav": "audio", ".mp3": "audio", ".flac": "audio", ".mp4": "video", ".png": "image"}
        return [f for f in files if media.get(os.path.splitext(f)[1].lower()) in content_types]


@contextlib.contextmanager
def fake_comfyui(base: Path, pack_root: Path) -> Iterator[SimpleNamespace]:
    """Fake ComfyUI modules in ``sys.modules`` and the pack at ``pack_root`` imported against them, with ComfyUI's
    folders (input, output, temp, models) under ``base``; everything is undone on exit.

    Yields ``nodes`` (the pack's module), ``base``, ``folder_paths``, ``models`` (the pack's model folder) and
    ``state``: what the nodes reported (``progress``, ``freed``) and the interrupt switch (``interrupt_after``
    checks, then ``Interrupted``).
    """
    for sub in ("input", "output", "temp", "models/real3dportrait", "extra"):
        (base / sub).mkdir(parents=True)
    folder_paths = FolderPaths(base)
    # a user's extra_model_paths.yaml entry under our key, applied before custom nodes load
    folder_paths.folder_names_and_paths["real3dportrait"] = ([str(base / "extra")], {".json"})
    state = SimpleNamespace(progress=[], freed=[], interrupt_after=None, checks=0)

    def throw_if_interrupted():
        state.checks += 1
        if state.interrupt_after is not None and state.checks > state.interrupt_after:
            raise Interrupted()

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.node_id = node_id

        def update_absolute(self, value, total=None, preview=None):
            state.progress.append((self.node_id, value, total, preview))

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.free_memory = lambda size, device: state.freed.append((size, device))
    mm.soft_empty_cache = lambda: None
    mm.should_use_fp16 = lambda device=None: False
    mm.throw_exception_if_processing_interrupted = throw_if_interrupted
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy_pkg = types.ModuleType("comfy")
    comfy_pkg.model_management, comfy_pkg.utils = mm, utils
    api = types.ModuleType("comfy_api")
    v002 = types.ModuleType("comfy_api.v0_0_2")
    v002.io, v002.ui = fake_io(), fake_ui()
    v002.ComfyExtension = type("ComfyExtension", (), {})
    api.v0_0_2 = v002
    fakes = {"folder_paths": folder_paths, "comfy": comfy_pkg, "comfy.model_management": mm, "comfy.utils": utils,
             "comfy_api": api, "comfy_api.v0_0_2": v002}
    with pytest.MonkeyPatch.context() as patch:
        for name, module in fakes.items():
            patch.setitem(sys.modules, name, module)
        for name in [m for m in sys.modules if m == "nodes" or m.startswith("nodes.")]:
            patch.delitem(sys.modules, name)
        patch.syspath_prepend(str(pack_root))
        nodes = importlib.import_module("nodes")
        yield SimpleNamespace(nodes=nodes, base=base, folder_paths=folder_paths, state=state,
                              models=base / "models" / "real3dportrait")
        for name in [m for m in sys.modules if m == "nodes" or m.startswith("nodes.")]:
            del sys.modules[name]


def hidden(unique_id="7", dynprompt=None):
    return SimpleNamespace(unique_id=unique_id, dynprompt=dynprompt)


def bound(node_cls, **hidden_values):
    """A copy of a node class with its hidden inputs set, as ComfyUI's PREPARE_CLASS_CLONE does."""
    return type(node_cls.__name__, (node_cls,), {"hidden": hidden(**hidden_values)})
