"""``r3dp models import PATH``: put the files users download by hand into their slots, after checking them.

PATH is a folder or an archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``) in any of the layouts users end up
with: the official release (``checkpoints/240210_real3dportrait_orig/secc2plane_torso_orig/...``,
``.../audio2secc_vae/...``), the official ``deep_3drecon/BFM/...`` bundle, a Hugging Face snapshot of HuBERT,
or everything flat in one folder. Every file r3dp uses is found by its name or folder (checkpoints of unknown
name by their keys), checked, and copied (or linked) to its slot:

- checkpoints: the model kind, then every key and shape strictly against the official key list shipped in
  ``r3dp_core/data/official_keys_*.tsv``, and the ``config.yaml`` beside them;
- ``BFM_model_front.mat``: the fields and shapes the 3DMM reads; the MediaPipe index: 468 integer ids;
- the eye-triangle files and the face landmarker: their published sha256;
- the segmenter: a TensorFlow Lite file; HuBERT: its ``config.json`` (a 1024-d HuBERT) and weights.

A file that fails its check is refused with the reason and nothing is written for it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from . import model_files
from .errors import InputError, ModelFileError

CHECKPOINT_SUFFIXES = {".ckpt", ".safetensors", ".pt", ".pth"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
CHECKPOINT_KINDS = {"video_model": "secc2plane_torso", "audio_model": "audio2secc_vae"}
SLOT_OF_KIND = {kind: key for key, kind in CHECKPOINT_KINDS.items()}
# Official files in the release that r3dp does not need, with the reason shown to the user.
NOT_NEEDED = {
    "mit_b0.pth": "the ImageNet SegFormer weights are only an initialisation; the video model holds trained ones",
}
TFLITE_MAGIC = b"TFL3"


@dataclass
class ImportReport:
    """What ``import_models`` did: placed ``(key, source, target)``, kept slots already filled, refused and
    skipped ``(source, reason)``, notes, and the registry entries still missing afterwards."""

    placed: list[tuple[str, Path, Path]] = field(default_factory=list)
    kept: list[tuple[str, Path]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: list[model_files.ModelFile] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- official key lists

@cache
def official_keys(kind: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of the official state dict of ``kind`` ("secc2plane_torso" or "audio2secc_vae")."""
    text = resources.files("r3dp_core").joinpath("data", f"official_keys_{kind}.tsv").read_text()
    shapes = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("key\t"):
            continue
        key, shape, _ = line.split("\t")
        inner = shape.strip("[]").strip()
        shapes[key] = tuple(int(d) for d in inner.split(",")) if inner else ()
    return shapes


def key_mismatch(kind: str, state_dict) -> str:
    """A sentence describing how ``state_dict`` differs from the official ``kind`` (empty when identical)."""
    from .checkpoint import compare_keys

    class _Shape:  # compare_keys reads ``.shape`` of the expected entries
        def __init__(self, shape):
            self.shape = shape

    expected = {key: _Shape(shape) for key, shape in official_keys(kind).items()}
    mismatch = compare_keys(expected, state_dict)
    return mismatch.describe() if mismatch else ""


# ------------------------------------------------------------------------------------------------ verifiers

def verify_checkpoint(path: Path, key: str):
    """Load ``path`` (safely) and check it is the official model of slot ``key``, strict keys and shapes;
    returns the ``LoadedCheckpoint``. Raises ``ModelFileError`` with the reason."""
    from .checkpoint import MODEL_DESCRIPTIONS, load_checkpoint

    kind = CHECKPOINT_KINDS[key]
    loaded = load_checkpoint(path)
    if loaded.kind != kind:
        raise ModelFileError(f"it looks like {MODEL_DESCRIPTIONS[loaded.kind]}, but the {key} slot needs "
                             f"{MODEL_DESCRIPTIONS[kind]}")
    if problem := key_mismatch(kind, loaded.state_dict):
        raise ModelFileError(f"its weights differ from the official {kind} ({problem}); it is another version or "
                             "a modified model")
    if kind == "secc2plane_torso" and loaded.config:
        from .models.secc2plane_torso import Secc2PlaneTorsoConfig

        Secc2PlaneTorsoConfig.from_hparams(loaded.config)  # refuses variants this port does not implement
    return loaded


def verify_bfm(path: Path) -> None:
    from .geometry.bfm import check_bfm_file

    check_bfm_file(path)


def verify_mp468_index(path: Path) -> None:
    import numpy as np

    try:
        index = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"it cannot be read as a .npy array ({exc})") from None
    if index.shape != (468,) or index.dtype.kind not in "iu":
        raise ModelFileError(f"it holds {index.dtype} {index.shape}, not 468 integer BFM vertex ids")


def verify_digest(key: str) -> Callable[[Path], None]:
    spec = model_files.BY_KEY[key]

    def check(path: Path) -> None:
        size = path.stat().st_size
        if spec.size_bytes is not None and size != spec.size_bytes:
            raise ModelFileError(f"it has {size} bytes, the official file {spec.size_bytes}")
        if (digest := model_files.sha256_of(path)) != spec.sha256:
            raise ModelFileError(f"its sha256 is {digest}, the official file's {spec.sha256}")

    return check


def verify_tflite(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[4:8] != TFLITE_MAGIC:
        raise ModelFileError("it is not a TensorFlow Lite model (no TFL3 identifier)")


def verify_hubert(path: Path) -> None:
    from .audio.hubert import check_hubert_folder

    check_hubert_folder(path)


# Files recognised by their exact name: slot key → (file name, verifier).
BY_NAME: dict[str, tuple[str, Callable[[Path], None]]] = {
    "bfm": ("BFM_model_front.mat", verify_bfm),
    "bfm_mediapipe_index": ("index_mp468_from_mesh35709.npy", verify_mp468_index),
    "bfm_left_eye_faces": ("bfm_left_eye_faces.npy", verify_digest("bfm_left_eye_faces")),
    "bfm_right_eye_faces": ("bfm_right_eye_faces.npy", verify_digest("bfm_right_eye_faces")),
    "face_landmarker": ("face_landmarker.task", verify_digest("face_landmarker")),
    "segmenter": ("selfie_multiclass_256x256.tflite", verify_tflite),
}


# ------------------------------------------------------------------------------------------------- archives

def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def extract_archive(archive: Path, into: Path) -> None:
    """Extract a .zip or .tar(.gz) into ``into``; a member that would land outside it (absolute path, ``..``) or
    a link is refused."""
    root = into.resolve()
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                for name in bundle.namelist():
                    if not _inside(root, name):
                        raise InputError(f"{archive}: the member {name!r} would be written outside the folder; "
                                         "refusing to extract this archive.")
                bundle.extractall(root)
            return
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()) or not _inside(root, member.name):
                    raise InputError(f"{archive}: the member {member.name!r} is a link or would be written outside "
                                     "the folder; refusing to extract this archive.")
            bundle.extractall(root, members=members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{archive} cannot be extracted ({exc}); it is damaged or incomplete: download it "
                         "again.") from None


# ------------------------------------------------------------------------------------------------- the scan

@dataclass
class Candidate:
    key: str | None          # the slot, or None when only the file's keys can tell
    path: Path


def _hubert_folders(root: Path) -> list[Path]:
    """Folders holding a transformers ``config.json`` next to weights (HuBERT candidates)."""
    from .audio.hubert import HUBERT_WEIGHT_FILES

    return sorted(config.parent for config in root.rglob("config.json")
                  if any((config.parent / name).exists() for name in HUBERT_WEIGHT_FILES))


def _checkpoint_hint(path: Path, root: Path) -> str | None:
    """The slot a checkpoint's name or folders point to: ``video_model``, ``audio_model``, ``""`` for the
    head-only model r3dp does not use, or None (decide by the keys)."""
    words = "/".join(path.relative_to(root).parts).lower()
    if "secc2plane_torso" in words:
        return "video_model"
    if "audio2secc" in words:
        return "audio_model"
    if "secc2plane" in words:
        return ""
    return None


def scan(root: Path) -> tuple[list[Candidate], list[tuple[Path, str]]]:
    """Every file under ``root`` that may fill a slot, and those that are known but not needed."""
    candidates, skipped = [], []
    hubert = _hubert_folders(root)
    candidates += [Candidate("hubert", folder) for folder in hubert]
    names = {name.lower(): key for key, (name, _) in BY_NAME.items()}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(folder in path.parents for folder in hubert):
            continue
        if path.name in NOT_NEEDED:
            skipped.append((path, NOT_NEEDED[path.name]))
        elif path.name.lower() in names:
            candidates.append(Candidate(names[path.name.lower()], path))
        elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
            hint = _checkpoint_hint(path, root)
            if hint == "":
                skipped.append((path, "the head-only model (secc2plane); r3dp uses secc2plane_torso"))
            else:
                candidates.append(Candidate(hint, path))
    return candidates, skipped


def _classify(path: Path) -> str | None:
    """The slot of a checkpoint with an uninformative name, from its keys (None: not a model r3dp uses)."""
    from .checkpoint import load_checkpoint

    return SLOT_OF_KIND.get(load_checkpoint(path).kind)


# ---------------------------------------------------------------------------------------------- placement

def _place_file(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if link:
        os.symlink(source.resolve(), target, target_is_directory=source.is_dir())
        return
    partial = target.with_name(target.name + ".partial")
    try:
        if source.is_dir():
            shutil.copytree(source, partial)
        else:
            shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        else:
            partial.unlink(missing_ok=True)


def _place_checkpoint(key: str, source: Path, loaded, models_dir: Path, link: bool, convert: bool,
                      report: ImportReport) -> Path:
    from .checkpoint import write_converted

    spec = model_files.BY_KEY[key]
    if convert:
        target = models_dir / spec.alternatives[0]
        write_converted(loaded, target)
        return target
    if source.suffix == ".safetensors":
        target = models_dir / spec.alternatives[0]
        _place_file(source, target, link)
        return target
    target = models_dir / spec.relpath
    _place_file(source, target, link)
    config = source.parent / "config.yaml"
    if config.is_file():
        _place_file(config, target.parent / "config.yaml", link)
    else:
        report.notes.append(f"{source} has no config.yaml beside it; the official configuration is assumed")
    return target


def import_models(path: str | Path, models_dir: Path, *, link: bool = False, convert: bool = False,
                  force: bool = False) -> ImportReport:
    """Check every model file found in ``path`` (folder or archive) and put it in its slot of ``models_dir``.

    Args:
        link: symlink the files instead of copying them (folders only; the files must stay where they are).
        convert: write checkpoints as ``.safetensors`` (the ``r3dp convert`` format) instead of copying them.
        force: replace files already in their slots (otherwise those slots are kept).

    Returns:
        An ``ImportReport``; ``report.missing`` lists what the folder still lacks.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"{source} does not exist; give the folder or archive (.zip, .tar.gz) you downloaded.")
    if source.is_file() and not _is_archive(source):
        raise InputError(f"{source} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)}).")
    if link and source.is_file():
        raise InputError("--link needs a folder: an archive is extracted and its files cannot be linked. Extract it "
                         "first, or import without --link.")
    models_dir.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    if source.is_file():
        # extracted inside the models folder so that placing a file is a rename on the same disk
        with tempfile.TemporaryDirectory(prefix=".import-", dir=models_dir) as tmp:
            extract_archive(source, Path(tmp))
            _import_folder(Path(tmp), models_dir, link=False, convert=convert, force=force, report=report)
    else:
        _import_folder(source, models_dir, link=link, convert=convert, force=force, report=report)
    report.missing = [spec for spec, found in model_files.status(models_dir) if found is None]
    return report


def _import_folder(root: Path, models_dir: Path, *, link: bool, convert: bool, force: bool,
                   report: ImportReport) -> None:
    candidates, skipped = scan(root)
    report.skipped += skipped
    filled: dict[str, Path] = {}
    for candidate in candidates:
        key, path = candidate.key, candidate.path
        try:
            if key is None:
                key = _classify(path)
                if key is None:
                    report.skipped.append((path, "not a model file r3dp uses"))
                    continue
            spec = model_files.BY_KEY[key]
            if key in filled:
                report.skipped.append((path, f"the {key} slot was already filled from {filled[key]}"))
                continue
            existing = spec.find(models_dir)
            if existing is not None and not force:
                report.kept.append((key, existing))
                filled[key] = existing
                continue
            if key in CHECKPOINT_KINDS:
                loaded = verify_checkpoint(path, key)
                target = _place_checkpoint(key, path, loaded, models_dir, link, convert, report)
            else:
                (verify_hubert if key == "hubert" else BY_NAME[key][1])(path)
                target = models_dir / spec.relpath
                _place_file(path, target, link)
        except ModelFileError as exc:
            report.refused.append((path, str(exc)))
            continue
        filled[key] = path
        report.placed.append((key, path, target))
