"""``r3dp models import PATH``: put the files users download by hand into their slots, after checking them.

PATH is a folder or an archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``) in any of the layouts users end up
with: the official release (``checkpoints/240210_real3dportrait_orig/secc2plane_torso_orig/...``,
``.../audio2secc_vae/...``), the official ``deep_3drecon/BFM/...`` bundle, Hugging Face snapshots of HuBERT or
Talk3D's wav2vec2, EG3D's FFHQ generator pickle, or everything flat in one folder. Every file r3dp uses is found
by its name or folder (checkpoints of unknown name by their keys, transformers folders by their ``config.json``,
``.pkl`` files by what they hold), checked, and copied (or linked) to its slot:

- checkpoints: the model kind, then every key and shape strictly against the official key list shipped in
  ``r3dp_core/data/official_keys_*.tsv``, and the ``config.yaml`` beside them;
- ``BFM_model_front.mat``: the fields and shapes the 3DMM reads; the MediaPipe index: 468 integer ids;
- the eye-triangle files and the face landmarker: their published sha256;
- the segmenter: a TensorFlow Lite file; HuBERT: its ``config.json`` (a 1024-d HuBERT) and weights; Talk3D's
  wav2vec2: its ``config.json`` (a wav2vec2 CTC with the 44-symbol Esperanto head) and weights;
- a ``.pkl``: read inertly (nothing it names is looked up or run, see ``r3dp_core.inert_pickle``); a dict whose
  ``G_ema`` has every tensor of r3dp's EG3D generator is the FFHQ prior; a pickled bare generator (a person's
  ``G_tune.pkl``) and any other pickle are skipped with the reason;
- Talk3D's loss networks (torchvision's ``alexnet-owt-7be5be79.pth``, LPIPS' ``alex.pth``, ArcFace's
  ``model_ir_se50.pth``, Wav2Lip's ``lipsync_expert.pth``): by their keys and shapes, strictly against the networks
  of ``r3dp_core.talk3d.loss_networks`` (read with ``weights_only``), whatever their names.

A file that fails its check is refused with the reason and nothing is written for it. A file is never removed
before its replacement is complete: it is copied to a temporary file beside its slot, then renamed over it, so a
failed copy leaves the old file as it was; a file that already is its slot (the models folder imported into
itself, or through a link) is reported as in place and left alone. Archives are extracted by r3dp itself: no
member may land outside the folder or be a link, and the whole is capped (``max_extracted_bytes``, 20 GB by
default, and ``max_ratio``, 200 times the archive's own size) so that a decompression bomb is refused, with its
reason, before it fills the disk.
"""

from __future__ import annotations

import io
import os
import pickletools
import secrets
import shutil
import tarfile
import tempfile
import zipfile
import zlib
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
# Talk3D's loss networks (``r3dp_core.talk3d.loss_networks.LOSS_NETWORK_SLOTS``), recognised by their keys.
LOSS_NETWORK_SLOTS = ("lpips_alexnet", "lpips_alex", "arcface_ir_se50", "wav2lip_syncnet")
SLOT_OF_KIND = {kind: key for key, kind in CHECKPOINT_KINDS.items()}
# Official files in the release that r3dp does not need, with the reason shown to the user.
NOT_NEEDED = {
    "mit_b0.pth": "the ImageNet SegFormer weights are only an initialisation; the video model holds trained ones",
}
TFLITE_MAGIC = b"TFL3"
# Caps on what one archive may extract to (``r3dp models import --max-extracted-size/--max-compression-ratio``):
# the official downloads are a few GB and barely compressible (weights), so either cap means a bomb.
DEFAULT_MAX_EXTRACTED_BYTES = 20 * 10**9
DEFAULT_MAX_RATIO = 200.0
RATIO_CHECKED_FROM_BYTES = 1 << 20   # below 1 MiB extracted, a high ratio (a small file of zeros) is harmless
_BLOCK = 1 << 20


@dataclass
class ImportReport:
    """What ``import_models`` did: placed ``(key, source, target)``, kept slots already filled, refused and
    skipped ``(source, reason)``, notes, the registry entries still missing afterwards, and the slots whose file
    was the very file found (``in_place``: nothing to do)."""

    placed: list[tuple[str, Path, Path]] = field(default_factory=list)
    kept: list[tuple[str, Path]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: list[model_files.ModelFile] = field(default_factory=list)
    in_place: list[tuple[str, Path]] = field(default_factory=list)   # the source already is the slot's file


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
    model_files.check_hubert_folder(path)


def verify_wav2vec2(path: Path) -> None:
    model_files.check_wav2vec2_folder(path)


# Transformers folders: slot key → verifier.
FOLDER_VERIFIERS: dict[str, Callable[[Path], None]] = {"hubert": verify_hubert, "wav2vec2": verify_wav2vec2}


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


def format_bytes(n: float) -> str:
    """``3.0 MB``, ``20.0 GB``: decimal units, as disks and downloads are sized."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns


class _ExtractionBudget:
    """The running total of an archive's content, refused as soon as it passes either cap."""

    def __init__(self, archive: Path, max_bytes: int, max_ratio: float):
        self.archive, self.max_bytes, self.max_ratio = archive, max_bytes, max_ratio
        self.archive_bytes = max(archive.stat().st_size, 1)
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.max_bytes:
            raise InputError(
                f"{self.archive}: it extracts to {format_bytes(self.total)} or more, past the "
                f"{format_bytes(self.max_bytes)} limit; it is not a model bundle r3dp knows (the official ones are a "
                "few GB), or a decompression bomb. Nothing was written. If you trust it and have the disk space, "
                "raise the limit (--max-extracted-size SIZE, or max_extracted_bytes=) or extract it yourself and "
                "import the folder.")
        if self.total > RATIO_CHECKED_FROM_BYTES and self.total > self.max_ratio * self.archive_bytes:
            raise InputError(
                f"{self.archive}: its content ({format_bytes(self.total)} or more) is more than {self.max_ratio:g} "
                f"times the archive's size ({format_bytes(self.archive_bytes)}); model weights barely compress, so "
                "this is a decompression bomb or not a model bundle. Nothing was written. If you trust it, raise "
                "the limit (--max-compression-ratio N, or max_ratio=) or extract it yourself and import the folder.")


def _copy_member(stream, dest: Path, declared: int, name: str, archive: Path) -> None:
    """Copy one member's data, refusing more bytes than its header declared (the budget counted those)."""
    written = 0
    with open(dest, "wb") as out:
        while block := stream.read(_BLOCK):
            written += len(block)
            if written > declared:
                raise InputError(f"{archive}: the member {name!r} holds more data than its header declares "
                                 f"({declared} bytes); the archive is damaged or crafted. Nothing was written.")
            out.write(block)


def extract_archive(archive: Path, into: Path, *, max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES,
                    max_ratio: float = DEFAULT_MAX_RATIO) -> None:
    """Extract a .zip or .tar(.gz) into the empty folder ``into``; a member that would land outside it (absolute
    path, ``..``) or is a link or a device is refused, and so is an archive whose content passes
    ``max_extracted_bytes`` in all or ``max_ratio`` times the archive's size (a decompression bomb). A tar is read
    as a stream and judged member by member, so a bomb is refused at its first header, before its data is
    decompressed. On refusal, what was extracted stays in ``into`` for the caller to remove."""
    root = into.resolve()
    budget = _ExtractionBudget(archive, max_extracted_bytes, max_ratio)

    def destination(name: str) -> Path:
        if not _inside(root, name):
            raise InputError(f"{archive}: the member {name!r} would be written outside the folder; refusing to "
                             "extract this archive.")
        return root / name

    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                members = bundle.infolist()
                for info in members:             # names and sizes from the central directory, before any data
                    destination(info.filename)
                    budget.add(info.file_size)
                for info in members:
                    dest = destination(info.filename)
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(info) as stream:
                        _copy_member(stream, dest, info.file_size, info.filename, archive)
            return
        with tarfile.open(archive, mode="r|*") as bundle:
            for member in bundle:
                dest = destination(member.name)
                if not (member.isfile() or member.isdir()):
                    raise InputError(f"{archive}: the member {member.name!r} is a link or a special file; refusing "
                                     "to extract this archive.")
                budget.add(member.size if member.isfile() else 0)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(bundle.extractfile(member), dest, member.size, member.name, archive)
    except OSError as exc:
        if exc.errno is not None:   # the disk or the folder, not the archive (a damaged gzip has no errno)
            raise InputError(f"{archive} could not be extracted into {into} ({exc.strerror}): free some space "
                             "there or check its permissions, then import again.") from None
        raise InputError(f"{archive} cannot be extracted ({exc}); it is damaged or incomplete: download it "
                         "again.") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, NotImplementedError, zlib.error) as exc:
        raise InputError(f"{archive} cannot be extracted ({exc}); it is damaged or incomplete: download it "
                         "again.") from None


# ------------------------------------------------------------------------------------------------- the scan

@dataclass
class Candidate:
    key: str | None          # the slot, or None when only the file's keys can tell
    path: Path


def _transformers_folders(root: Path) -> list[Path]:
    """Folders holding a transformers ``config.json`` next to weights (HuBERT or wav2vec2 candidates)."""
    return sorted(config.parent for config in root.rglob("config.json")
                  if any((config.parent / name).exists() for name in model_files.HUB_WEIGHT_FILES))


def _transformers_slot(folder: Path) -> tuple[str | None, str]:
    """The slot of a transformers folder by its ``config.json``'s ``model_type`` (``hubert``; ``wav2vec2`` with
    Talk3D's 44-symbol head), or None and the reason it is skipped."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return None, f"its config.json cannot be read as a transformers config ({exc})"
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind == "hubert":
        return "hubert", ""
    if kind == "wav2vec2" and config.get("vocab_size") == model_files.WAV2VEC2_LOGIT_DIM:
        return "wav2vec2", ""
    if kind == "wav2vec2":
        try:
            model_files.check_wav2vec2_folder(folder)
        except ModelFileError as exc:
            return None, str(exc)
    return None, (f"a '{kind}' transformers model; r3dp uses HuBERT ({model_files.BY_KEY['hubert'].hub_repo}) and "
                  f"Talk3D's wav2vec2 ({model_files.WAV2VEC2_MODEL_ID})")


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
    folders = _transformers_folders(root)
    for folder in folders:
        key, reason = _transformers_slot(folder)
        if key is None:
            skipped.append((folder, reason))
        else:
            candidates.append(Candidate(key, folder))
    names = {name.lower(): key for key, (name, _) in BY_NAME.items()}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(folder in path.parents for folder in folders):
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
        elif path.suffix.lower() == ".pkl":
            candidates.append(Candidate(None, path))    # judged by what it holds (``_classify``)
    return candidates, skipped


TALK3D_PERSON = "convert the person with `r3dp convert --talk3d`"


def _pickle_holds_dict(path: Path) -> bool:
    """Whether the pickle's top-level object is a plain dict (its first opcode after PROTO/FRAME is EMPTY_DICT),
    from its first bytes, without unpickling anything (the FFHQ pickle is a dict; a pickled generator is not)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if len(names) != 1:
                    return False
                with archive.open(names[0]) as fh:
                    head = fh.read(64)
        else:
            with open(path, "rb") as fh:
                head = fh.read(64)
        for opcode, _, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name not in ("PROTO", "FRAME"):
                return opcode.name == "EMPTY_DICT"
    except (OSError, ValueError, zipfile.BadZipFile):
        pass
    return False


def _classify_pickle(path: Path) -> tuple[str | None, str]:
    """A ``.pkl`` by what it holds, read inertly (nothing in it is run): EG3D's FFHQ generator pickle (a dict
    whose ``G_ema`` matches r3dp's generator) fills ``eg3d_ffhq``; a pickled bare generator is a person's
    ``G_tune.pkl``; anything else is skipped with the reason. The keys and shapes are those of every EG3D
    512-128 FFHQ generator: the fixed-tri-plane variant cannot be told from the others by its tensors."""
    from .talk3d.official_files import read_eg3d_generator

    try:
        read_eg3d_generator(path)
    except ModelFileError as exc:
        return None, str(exc)
    if not _pickle_holds_dict(path):
        return None, f"a personalised generator (G_tune.pkl): {TALK3D_PERSON}"
    return "eg3d_ffhq", ""


def _classify(path: Path) -> tuple[str | None, str]:
    """The slot of a file with an uninformative name, from what it holds, or None and the reason it is skipped:
    a checkpoint by its keys (a loss network's file strictly, by ``loss_networks.identify_file``), a ``.pkl`` by
    ``_classify_pickle``."""
    from .checkpoint import load_checkpoint
    from .talk3d.loss_networks import identify_file
    from .talk3d.official_files import is_talk3d_checkpoint

    if path.suffix.lower() == ".pkl":
        return _classify_pickle(path)
    if is_talk3d_checkpoint(path):
        return None, f"a Talk3D person's checkpoint: {TALK3D_PERSON}"
    loss_slot, reason = identify_file(path)     # the loss networks' files have generic names: judged by their keys
    if loss_slot is not None or reason:
        return loss_slot, reason
    slot = SLOT_OF_KIND.get(load_checkpoint(path).kind)
    return slot, "" if slot else "not a model file r3dp uses"


# ---------------------------------------------------------------------------------------------- placement

def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file or folder (the same path, a link to it, a hard link, a linked folder above)."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:   # one of them does not exist (or is a dangling link)
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(new: Path, target: Path) -> None:
    """Put the complete ``new`` at ``target``. A file or link is replaced by one atomic rename; a folder in the
    way (or a folder arriving over anything) is first renamed aside and removed only once ``new`` is in place,
    and put back if that fails."""
    def is_real_dir(path: Path) -> bool:
        return path.is_dir() and not path.is_symlink()

    if os.path.lexists(target) and (is_real_dir(target) or is_real_dir(new)):
        aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        os.replace(target, aside)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(aside, target)
            raise
        _remove(aside)
    else:
        os.replace(new, target)


def _place_file(source: Path, target: Path, mode: str) -> None:
    """Put ``source`` (a file or a folder) at ``target``: ``mode`` "copy", "link" (a symlink to it) or "move"
    (rename; for r3dp's own temporary files). The copy or link is made under a temporary name beside the slot and
    renamed over it when complete: whatever was at ``target`` stays whole until then, and a failed copy leaves it
    as it was. A source that already is ``target`` (the same path, or through links) is refused."""
    if same_file(source, target):
        raise ModelFileError(f"it already is the file at {target} (the models folder, or a link to it, was given as "
                             "the source); nothing to copy")
    if source.is_dir() and (target.resolve() in source.resolve().parents or
                            source.resolve() in target.resolve().parents):
        raise ModelFileError(f"the folder and its slot {target} lie one inside the other; copy it elsewhere first")
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        try:
            _swap_in(source, target)
            return
        except OSError:
            pass   # another disk: copy instead
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"
    try:
        if mode == "link":
            os.symlink(source.resolve(), temporary, target_is_directory=source.is_dir())
        elif source.is_dir():
            shutil.copytree(source, temporary, copy_function=shutil.copyfile)
        else:
            shutil.copyfile(source, temporary)
        _swap_in(temporary, target)
    finally:
        if os.path.lexists(temporary):
            _remove(temporary)


def _checkpoint_target(key: str, source: Path, models_dir: Path, convert: bool) -> Path:
    spec = model_files.BY_KEY[key]
    if convert or source.suffix == ".safetensors":
        return models_dir / spec.alternatives[0]
    return models_dir / spec.relpath


def _place_checkpoint(key: str, source: Path, loaded, target: Path, mode: str, convert: bool,
                      report: ImportReport) -> None:
    from .checkpoint import write_converted

    if convert:
        write_converted(loaded, target)
        return
    _place_file(source, target, mode)
    if source.suffix == ".safetensors":
        return
    config = source.parent / "config.yaml"
    if config.is_file():
        if not same_file(config, target.parent / "config.yaml"):
            _place_file(config, target.parent / "config.yaml", mode)
    else:
        report.notes.append(f"{source} has no config.yaml beside it; the official configuration is assumed")


def import_models(path: str | Path, models_dir: Path, *, link: bool = False, convert: bool = False,
                  force: bool = False, move: bool = False,
                  max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES,
                  max_ratio: float = DEFAULT_MAX_RATIO) -> ImportReport:
    """Check every model file found in ``path`` (folder or archive) and put it in its slot of ``models_dir``.

    Args:
        link: symlink the files instead of copying them (folders only; the files must stay where they are).
        convert: write checkpoints as ``.safetensors`` (the ``r3dp convert`` format) instead of copying them.
        force: replace files already in their slots (otherwise those slots are kept). A replaced file stays whole
            until its replacement is complete.
        move: move the files of a folder instead of copying them (for folders that are discarded afterwards,
            such as r3dp's own downloads); an archive's extracted files are always moved.
        max_extracted_bytes, max_ratio: an archive whose content is larger in all, or more than ``max_ratio``
            times the archive's size, is refused before it fills the disk (a decompression bomb).

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
    if link and move:
        raise InputError("link and move exclude each other: a moved file cannot also stay where it was.")
    models_dir.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    if source.is_file():
        # extracted inside the models folder so that placing a file is a rename on the same disk
        with tempfile.TemporaryDirectory(prefix=".import-", dir=models_dir) as tmp:
            extract_archive(source, Path(tmp), max_extracted_bytes=max_extracted_bytes, max_ratio=max_ratio)
            _import_folder(Path(tmp), models_dir, mode="move", convert=convert, force=force, report=report)
    else:
        _import_folder(source, models_dir, mode="link" if link else "move" if move else "copy", convert=convert,
                       force=force, report=report)
    report.missing = [spec for spec, found in model_files.status(models_dir) if found is None]
    return report


def _import_folder(root: Path, models_dir: Path, *, mode: str, convert: bool, force: bool,
                   report: ImportReport) -> None:
    candidates, skipped = scan(root)
    report.skipped += skipped
    filled: dict[str, Path] = {}
    for candidate in candidates:
        key, path = candidate.key, candidate.path
        target = existing = None
        try:
            if key is None:
                key, reason = _classify(path)
                if key is None:
                    report.skipped.append((path, reason))
                    continue
            spec = model_files.BY_KEY[key]
            if key in filled:
                report.skipped.append((path, f"the {key} slot was already filled from {filled[key]}"))
                continue
            existing = spec.find(models_dir)
            target = (_checkpoint_target(key, path, models_dir, convert) if key in CHECKPOINT_KINDS
                      else models_dir / spec.relpath)
            if any(same_file(path, slot) for slot in (target, existing) if slot is not None):
                # the models folder (or a link to it) imported into itself: nothing to copy, nothing to remove
                report.in_place.append((key, existing or target))
                filled[key] = existing or target
                continue
            if existing is not None and not force:
                report.kept.append((key, existing))
                filled[key] = existing
                continue
            if key in CHECKPOINT_KINDS:
                loaded = verify_checkpoint(path, key)
                _place_checkpoint(key, path, loaded, target, mode, convert, report)
            elif key == "eg3d_ffhq" or key in LOSS_NETWORK_SLOTS:   # checked by its keys when it was classified
                _place_file(path, target, mode)
            else:
                (FOLDER_VERIFIERS.get(key) or BY_NAME[key][1])(path)
                _place_file(path, target, mode)
        except ModelFileError as exc:
            report.refused.append((path, str(exc)))
            continue
        except OSError as exc:   # the copy failed (disk full, permissions): the slot keeps what it had
            kept = "the file already there was left as it was" if existing is not None else "nothing was written"
            report.refused.append((path, f"it could not be put at {target or models_dir} "
                                         f"({exc.strerror or exc}); {kept}"))
            continue
        filled[key] = path
        report.placed.append((key, path, target))
