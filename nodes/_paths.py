"""Where the nodes find model files and keep shared motions/avatars: ComfyUI's ``folder_paths``.

``real3dportrait`` is registered as ``models/real3dportrait`` *in front of* whatever a user's
``extra_model_paths.yaml`` already declared under that key (those folders stay searched), and our file
extensions are merged into the entry instead of replacing it. Motions and avatars saved by the Save nodes live
in ``output/r3dp/{motions,avatars}`` and are listed from every folder registered under ``r3dp_motions`` /
``r3dp_avatars`` (so a shared folder can be added the same way as model folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from r3dp_core.errors import ModelFileError
from r3dp_core.model_files import BY_KEY

MODEL_FOLDER = "real3dportrait"
MOTION_FOLDER = "r3dp_motions"
AVATAR_FOLDER = "r3dp_avatars"

WEIGHT_EXTENSIONS = {".ckpt", ".safetensors", ".sft", ".pt", ".pth", ".bin"}
# .json lists HuBERT folders (their config.json); .mat/.npy the BFM; .task/.tflite the MediaPipe models.
MODEL_EXTENSIONS = WEIGHT_EXTENSIONS | {".json", ".mat", ".npy", ".task", ".tflite"}


def _merge_folder(folder_paths, name: str, default_path: str, extensions: set[str]) -> None:
    folder_paths.add_model_folder_path(name, default_path, is_default=True)
    paths, existing = folder_paths.folder_names_and_paths[name]
    folder_paths.folder_names_and_paths[name] = (paths, set(existing) | extensions)


def register_folders() -> None:
    """Idempotent; called when the node modules are imported (after extra_model_paths.yaml was applied)."""
    import folder_paths

    _merge_folder(folder_paths, MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER), MODEL_EXTENSIONS)
    output = folder_paths.get_output_directory()
    _merge_folder(folder_paths, MOTION_FOLDER, os.path.join(output, "r3dp", "motions"),
                  {".safetensors", ".npy"})  # .npy: official coefficient dicts
    _merge_folder(folder_paths, AVATAR_FOLDER, os.path.join(output, "r3dp", "avatars"), {".safetensors"})


def model_folders() -> list[str]:
    import folder_paths

    return folder_paths.get_folder_paths(MODEL_FOLDER)


def _model_files() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list(MODEL_FOLDER)


def _with_defaults(key: str, found: list[str]) -> list[str]:
    """The registry's expected names first (even when absent, so a shared workflow validates and the node can
    say where to get the file), then everything else found."""
    spec = BY_KEY[key]
    defaults = [spec.relpath, *spec.alternatives]
    present = [d for d in defaults if d in found]
    first = present or [spec.relpath]
    return first + sorted(f for f in found if f not in first)


def _posix(name: str) -> str:
    return name.replace(os.sep, "/")


def weight_file_options(key: str) -> list[str]:
    """Checkpoint-like files (any folder but HuBERT's), registry default first."""
    files = [_posix(f) for f in _model_files()]
    found = [f for f in files if Path(f).suffix.lower() in WEIGHT_EXTENSIONS and not f.startswith("hubert/")]
    return _with_defaults(key, found)


def suffix_options(key: str, suffixes: tuple[str, ...]) -> list[str]:
    files = [_posix(f) for f in _model_files()]
    return _with_defaults(key, [f for f in files if f.lower().endswith(suffixes)])


def folder_options(key: str) -> list[str]:
    """Folders holding a transformers model (``config.json`` + weights), for HuBERT."""
    files = [_posix(f) for f in _model_files()]
    folders = sorted({str(Path(f).parent.as_posix()) for f in files if Path(f).name == "config.json"})
    return _with_defaults(key, folders)


def _missing(key: str, name: str) -> ModelFileError:
    spec = BY_KEY[key]
    searched = "\n".join(f"  - {folder}" for folder in model_folders())
    return ModelFileError(f"{spec.purpose}: '{name}' was not found in any '{MODEL_FOLDER}' model folder:\n{searched}\n"
                          f"It belongs at {model_folders()[0]}/{spec.relpath} ({spec.size}): {spec.how_to_get()}. "
                          f"Give the command --models-dir \"{model_folders()[0]}\" to fill this folder, then press R "
                          "in ComfyUI to refresh the list.")


def resolve_model_file(key: str, name: str) -> Path:
    """Full path of a model file chosen in a dropdown, or a ``ModelFileError`` naming the file, the searched
    folders and where to get it."""
    import folder_paths

    path = folder_paths.get_full_path(MODEL_FOLDER, name)
    if path is None:
        raise _missing(key, name)
    return Path(path)


def resolve_model_folder(key: str, name: str) -> Path:
    relative = os.path.relpath(os.path.join("/", name), "/")
    for folder in model_folders():
        candidate = Path(folder) / relative
        if (candidate / "config.json").is_file():
            return candidate
    raise _missing(key, name)


def saved_file_options(folder: str) -> list[str]:
    import folder_paths

    return sorted(_posix(f) for f in folder_paths.get_filename_list(folder))


def resolve_saved_file(folder: str, name: str, what: str) -> Path:
    import folder_paths

    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        raise ModelFileError(f"{what} file '{name}' was not found in {searched}. Save one with the matching Save node "
                             "or copy the file there, then press R to refresh.")
    return Path(path)


def save_target(folder: str, prefix: str) -> Path:
    """A new, numbered file name ``<prefix>_00001.safetensors`` in the folder's default (first) location."""
    import folder_paths

    base = Path(folder_paths.get_folder_paths(folder)[0])
    prefix = prefix.strip().replace("\\", "/").strip("/") or "r3dp"
    if ".." in Path(prefix).parts:
        raise ModelFileError(f"The file name prefix {prefix!r} may not leave {base}.")
    directory = (base / prefix).parent
    stem = Path(prefix).name
    directory.mkdir(parents=True, exist_ok=True)
    taken = {p.name for p in directory.glob(f"{stem}_*.safetensors")}
    counter = 1
    while f"{stem}_{counter:05d}.safetensors" in taken:
        counter += 1
    return directory / f"{stem}_{counter:05d}.safetensors"


# --- personas: folders under <real3dportrait>/personas/NAME (persona.json + safetensors) ----------------------------

PERSONA_SUBFOLDER = "personas"


def persona_options() -> list[str]:
    """The complete personas (a ``persona.json`` present) in every ``real3dportrait`` model folder's ``personas/``,
    by folder name; a name in several folders is listed once (the first folder wins, as for model files)."""
    names = set()
    for folder in model_folders():
        root = Path(folder) / PERSONA_SUBFOLDER
        if root.is_dir():
            names.update(p.parent.name for p in root.glob("*/persona.json"))
    return sorted(names)


def check_persona_name(name: str) -> str:
    """A persona name is one folder name (no separators, not '.'/'..')."""
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ModelFileError(f"A persona name is one folder name (no '/' or '\\'), got {name!r}.")
    return name


def resolve_persona(name: str) -> Path:
    """The folder of persona ``name``, or a ``ModelFileError`` naming every folder searched and how to make one."""
    name = check_persona_name(name)
    for folder in model_folders():
        candidate = Path(folder) / PERSONA_SUBFOLDER / name
        if (candidate / "persona.json").is_file():
            return candidate
    searched = "\n".join(f"  - {Path(folder) / PERSONA_SUBFOLDER}" for folder in model_folders())
    raise ModelFileError(f"Persona '{name}' was not found (a folder with persona.json) in:\n{searched}\nTrain one with "
                         "the Personalise node or `r3dp personalise --out <that folder>/NAME`, then press R in ComfyUI "
                         "to refresh the list.")


def persona_target(name: str) -> Path:
    """Where the Personalise node writes persona ``name``: ``personas/NAME`` of the first model folder (an existing
    one of that name in another folder is continued there)."""
    name = check_persona_name(name)
    for folder in model_folders():
        candidate = Path(folder) / PERSONA_SUBFOLDER / name
        if candidate.is_dir():
            return candidate
    return Path(model_folders()[0]) / PERSONA_SUBFOLDER / name


def models_dir_with(key: str) -> Path:
    """The first ``real3dportrait`` folder holding a file of model slot ``key`` (else the first folder): the models
    folder a core stage that takes one ``models_dir`` (personalise) is given."""
    spec = BY_KEY[key]
    for folder in model_folders():
        if spec.find(Path(folder)) is not None:
            return Path(folder)
    return Path(model_folders()[0])
