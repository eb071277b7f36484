"""Where r3dp's model files live, which are present, and how to obtain the missing ones.

Inside ComfyUI the folder is ``models/real3dportrait`` (registered by the node pack with folder_paths);
standalone it is ``--models-dir``, else ``$R3DP_MODELS``, else ``~/.cache/r3dp/models``.

Two commands fill it, and only when the user runs them (nothing is ever downloaded at run time):
``r3dp models fetch`` downloads the files that have a public address (HTTP with timeout, retries, resume, size
and sha256 checks; HuBERT and Talk3D's wav2vec2 through ``huggingface_hub``), and with ``--official`` the
official checkpoints and BFM from their Google Drive folders (``gdrive.py``, after the user accepts their terms);
``r3dp models import PATH`` puts the files users download by hand (the official release, the BFM bundle, EG3D's
generator pickle) in their slots after checking them (``model_import.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFileError, R3DPError

OFFICIAL_README = "https://github.com/yerfor/Real3DPortrait#prepare-models"
IMPORT_COMMAND = "r3dp models import PATH"
FETCH_COMMAND = "r3dp models fetch"
OFFICIAL_FETCH_COMMAND = "r3dp models fetch --official"


@dataclass(frozen=True)
class ModelFile:
    """One file (or folder) r3dp needs, relative to the models folder."""

    key: str
    relpath: str
    purpose: str
    source: str
    size: str
    url: str | None = None      # direct download from the official source, if one exists
    sha256: str | None = None
    required_for: tuple[str, ...] = ("generate",)
    alternatives: tuple[str, ...] = ()   # other accepted relative paths (e.g. a converted .safetensors)
    size_bytes: int | None = None        # exact size where the official file is known byte for byte
    hub_repo: str | None = None          # a Hugging Face repository ``r3dp models fetch`` snapshots into the slot
    licence: str = ""
    official_drive: bool = False         # in the official Google Drive folders (``r3dp models fetch --official``)

    @property
    def fetchable(self) -> bool:
        """``r3dp models fetch`` can get it (a direct URL or a Hugging Face repository)."""
        return self.url is not None or self.hub_repo is not None

    def candidates(self, models_dir: Path) -> list[Path]:
        return [models_dir / p for p in (self.relpath, *self.alternatives)]

    def find(self, models_dir: Path) -> Path | None:
        return next((p for p in self.candidates(models_dir) if p.exists()), None)

    @property
    def fetch_command(self) -> str:
        """The command that downloads this slot (Talk3D's files only on request)."""
        return f"{FETCH_COMMAND} --talk3d" if self.talk3d_only else FETCH_COMMAND

    def how_to_get(self) -> str:
        """The exact command that fills this slot (and where the file comes from)."""
        if self.fetchable:
            return f"run `{self.fetch_command}` (it downloads it from {self.url or 'Hugging Face ' + self.hub_repo})"
        if self.official_drive:
            return (f"run `{OFFICIAL_FETCH_COMMAND}` (it downloads the official release from its public Google "
                    f"Drive folders once you accept its terms), or get it from {self.source} and run "
                    f"`{IMPORT_COMMAND}` with the downloaded folder or archive (it checks every file and puts it in "
                    "its place)")
        return (f"get it from {self.source}, then run `{IMPORT_COMMAND}` with the downloaded folder or archive "
                "(it checks every file and puts it in its place)")

    def missing_message(self, models_dir: Path) -> str:
        return f"Missing model file for {self.purpose}: {models_dir / self.relpath} — {self.how_to_get()}."

    @property
    def talk3d_only(self) -> bool:
        """Only Talk3D uses it (``required_for`` within ``TALK3D_PURPOSES``): ``generate`` never demands it."""
        return bool(self.required_for) and set(self.required_for) <= TALK3D_PURPOSES


#: Purposes of the files only Talk3D uses: ``talk3d`` (its audio features) and ``personalise`` (the EG3D prior a
#: person is fine-tuned from). Real3D-Portrait's ``generate`` never demands these slots.
TALK3D_PURPOSES = frozenset({"talk3d", "personalise"})


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("video_model", "secc2plane_torso/model_ckpt_steps_100000.ckpt",
              "the video model (Image→Triplane, Motion Adapter, renderer, HTB-SR)",
              f"the official Real3D-Portrait checkpoints (Google Drive/Baidu links in {OFFICIAL_README}); "
              "copy checkpoints/240210_real3dportrait_orig/secc2plane_torso_orig/ with its config.yaml",
              "≈ 0.6 GB", alternatives=("secc2plane_torso.safetensors",), licence="Real3D-Portrait release (research)",
              official_drive=True),
    ModelFile("audio_model", "audio2secc_vae/model_ckpt_steps_400000.ckpt",
              "the audio-to-motion model",
              f"the official Real3D-Portrait checkpoints ({OFFICIAL_README}); copy "
              "checkpoints/240210_real3dportrait_orig/audio2secc_vae/ with its config.yaml",
              "≈ 50 MB", required_for=("audio",), alternatives=("audio2secc_vae.safetensors",),
              licence="Real3D-Portrait release (research)", official_drive=True),
    ModelFile("hubert", "hubert/hubert-large-ls960-ft",
              "HuBERT speech features (facebook/hubert-large-ls960-ft)",
              "Hugging Face: huggingface-cli download facebook/hubert-large-ls960-ft --local-dir "
              "<models>/hubert/hubert-large-ls960-ft", "≈ 1.2 GB", required_for=("audio",),
              hub_repo="facebook/hubert-large-ls960-ft", licence="Apache-2.0"),
    ModelFile("bfm", "BFM/BFM_model_front.mat", "the BFM 3D morphable face model",
              "the BFM bundle linked in the official README (deep_3drecon/BFM/; Basel Face Model 2009 needs a "
              "free sign-up at https://faces.dmi.unibas.ch/bfm/)", "≈ 200 MB",
              licence="Basel Face Model 2009 (non-commercial)", official_drive=True),
    ModelFile("bfm_mediapipe_index", "BFM/index_mp468_from_mesh35709.npy",
              "the MediaPipe→BFM landmark index", "the same BFM bundle (deep_3drecon/BFM/)", "4 KB",
              licence="part of the BFM bundle", official_drive=True),
    ModelFile("bfm_left_eye_faces", "BFM/bfm_left_eye_faces.npy", "the SECC eye-hole triangles (left eye)",
              "the official Real3D-Portrait repository (deep_3drecon/bfm_left_eye_faces.npy, MIT)", "5 KB",
              url="https://raw.githubusercontent.com/yerfor/Real3DPortrait/main/deep_3drecon/bfm_left_eye_faces.npy",
              sha256="9651756ea2c0fac069a1edf858ed1f125eddc358fa74c529a370c1e7b5730d28", size_bytes=4680,
              licence="MIT"),
    ModelFile("bfm_right_eye_faces", "BFM/bfm_right_eye_faces.npy", "the SECC eye-hole triangles (right eye)",
              "the official Real3D-Portrait repository (deep_3drecon/bfm_right_eye_faces.npy, MIT)", "5 KB",
              url="https://raw.githubusercontent.com/yerfor/Real3DPortrait/main/deep_3drecon/bfm_right_eye_faces.npy",
              sha256="28cb5bbacf578d30a3d5006ec28c617fe5a3ecaeeeb87d9433a884e0f0301a2e", size_bytes=4648,
              licence="MIT"),
    ModelFile("face_landmarker", "face_landmarker.task", "MediaPipe face landmarks",
              "MediaPipe (Apache-2.0)", "3.8 MB",
              url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
                  "face_landmarker.task",
              sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
              size_bytes=3_758_596, required_for=("generate", "dry-run"), licence="Apache-2.0"),
    ModelFile("segmenter", "selfie_multiclass_256x256.tflite", "MediaPipe 6-class selfie segmentation",
              "MediaPipe (Apache-2.0)", "16 MB",
              url="https://storage.googleapis.com/mediapipe-models/image_segmenter/selfie_multiclass_256x256/"
                  "float32/latest/selfie_multiclass_256x256.tflite",
              licence="Apache-2.0"),  # no published digest, and "latest" may change: checked by size only
    # Talk3D's files (the ``talk3d`` / ``personalise`` purposes; see ``TALK3D_PURPOSES``).
    ModelFile("wav2vec2", "wav2vec2/wav2vec2-large-xlsr-53-esperanto",
              "Talk3D's audio features (wav2vec2 CTC, cpierse/wav2vec2-large-xlsr-53-esperanto)",
              "Hugging Face: hf download cpierse/wav2vec2-large-xlsr-53-esperanto --local-dir "
              "<models>/wav2vec2/wav2vec2-large-xlsr-53-esperanto", "≈ 1.3 GB", required_for=("talk3d",),
              hub_repo="cpierse/wav2vec2-large-xlsr-53-esperanto", licence="Apache-2.0 (as published on the Hub)"),
    ModelFile("eg3d_ffhq", "eg3d/ffhq-fixed-triplane512-128.pkl",
              "the EG3D FFHQ generator Talk3D personalises (ffhq-fixed-triplane512-128.pkl)",
              "EG3D's pretrained models on NVIDIA NGC (nvidia/research/eg3d); the fixed-tri-plane variant is not "
              "clearly documented there (EG3D issue #67)", "≈ 0.5 GB", required_for=("personalise",),
              alternatives=("eg3d/standin-tiny-triplane.safetensors",),   # the tiny stand-in (standins.py)
              licence="NVIDIA Source Code License (non-commercial)"),
    # The networks of Talk3D's training losses (``r3dp_core.talk3d.loss_networks``); without one, personalisation
    # leaves out its term. ``r3dp models import`` recognises each by its keys.
    ModelFile("lpips_alexnet", "loss/alexnet-owt-7be5be79.pth",
              "the AlexNet trunk of the LPIPS loss (personalisation)",
              "torchvision's ImageNet AlexNet (download.pytorch.org/models/alexnet-owt-7be5be79.pth, what "
              "lpips.LPIPS(net='alex') downloads; only its convolutional features are used)", "233 MB",
              url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
              sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", size_bytes=244_408_911,
              required_for=("personalise",), licence="BSD-3-Clause (torchvision)"),
    ModelFile("lpips_alex", "loss/lpips_alex_v0.1.pth", "the LPIPS v0.1 AlexNet heads (personalisation)",
              "richzhang/PerceptualSimilarity, lpips/weights/v0.1/alex.pth at tag v0.1.4 (the file the lpips 0.1.4 "
              "package ships)", "6 KB",
              url="https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/v0.1.4/lpips/weights/v0.1/alex.pth",
              sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", size_bytes=6009,
              required_for=("personalise",), licence="BSD-2-Clause"),
    ModelFile("arcface_ir_se50", "loss/model_ir_se50.pth",
              "the ArcFace IR-SE50 network of the identity loss (personalisation)",
              "the pSp/e4e release: model_ir_se50.pth, the 'IR-SE50 Model' download of the pixel2style2pixel README "
              "(Talk3D's docs/download_models.md fetches it from Dropbox); trained by TreB1eN/InsightFace_Pytorch",
              "≈ 175 MB", required_for=("personalise",),
              licence="code MIT (pSp/e4e); the weights were trained on MS-Celeb-1M, released for non-commercial "
                      "research only: treat them as research use"),
    ModelFile("wav2lip_syncnet", "loss/lipsync_expert.pth",
              "Wav2Lip's lip-sync expert of the lip-sync loss (personalisation; research/non-commercial use only)",
              "the Wav2Lip repository (github.com/Rudrabha/Wav2Lip, README: 'Expert Discriminator', "
              "lipsync_expert.pth)", "≈ 0.2 GB", required_for=("personalise",),
              licence="Wav2Lip: research and non-commercial use ONLY (commercial use needs a licence from its "
                      "authors, Sync Labs)"),
)

BY_KEY = {m.key: m for m in MODEL_FILES}


def default_models_dir(explicit: str | Path | None = None) -> Path:
    """``explicit`` → ``$R3DP_MODELS`` → ComfyUI's ``models/real3dportrait`` if running inside ComfyUI →
    ``~/.cache/r3dp/models``."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("R3DP_MODELS"):
        return Path(os.environ["R3DP_MODELS"]).expanduser()
    # Inside a running ComfyUI its folder_paths module is already loaded; r3dp_core never imports ComfyUI.
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None and hasattr(folder_paths, "models_dir"):
        return Path(folder_paths.models_dir) / "real3dportrait"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "r3dp" / "models"


def require(key: str, models_dir: Path) -> Path:
    """The path of a needed model file, or a ``ModelFileError`` that says where it goes and where it comes from."""
    spec = BY_KEY[key]
    found = spec.find(models_dir)
    if found is None:
        raise ModelFileError(spec.missing_message(models_dir))
    return found


def status(models_dir: Path) -> list[tuple[ModelFile, Path | None]]:
    return [(m, m.find(models_dir)) for m in MODEL_FILES]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------- downloads

DOWNLOAD_TIMEOUT_S = 30.0        # per connection attempt and per read: a stalled host fails instead of hanging
DOWNLOAD_ATTEMPTS = 4
DOWNLOAD_BACKOFF_S = 2.0         # waits 2, 4, 8 s between attempts
_BLOCK = 1 << 20


class DownloadError(R3DPError):
    """A download that cannot complete (host unreachable, file gone); the message names the manual step.
    ``http_status``: the server's refusal (e.g. 404), when it gave one."""

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class _Retry(Exception):
    """A failure worth another attempt (timeout, dropped connection, server error, short read)."""


def manual_step(spec: ModelFile, models_dir: Path) -> str:
    """What to do by hand when ``r3dp models fetch`` cannot reach the host."""
    where = spec.url or f"https://huggingface.co/{spec.hub_repo}"
    return (f"download {where} on a machine that can reach it and either copy it to {models_dir / spec.relpath} "
            f"or put it in a folder and run `{IMPORT_COMMAND}` with that folder")


def _total_from_content_range(header: str | None) -> int | None:
    """The full size in a ``Content-Range: bytes a-b/N`` or ``bytes */N`` header (None when absent or ``*``)."""
    match = re.search(r"/(\d+)\s*$", header or "")
    return int(match.group(1)) if match else None


def _transfer(request_url: str, partial: Path, opener, timeout: float, progress, on_response=None) -> int | None:
    """One attempt: continue ``partial`` from its current size. Returns the file's full size when the server
    told it (None otherwise); ``partial`` then holds the whole file.

    ``on_response(response)``, if given, sees each response before its body is written and may raise to refuse
    it (Google Drive answers some requests with a web page instead of the file).

    Raises ``_Retry`` for transient failures, ``DownloadError`` for permanent ones.
    """
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(request_url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = opener(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # nothing left after `offset`: the partial is complete, or longer than the file
            total = _total_from_content_range(exc.headers.get("Content-Range") if exc.headers else None)
            if total is not None and total == offset:
                return total
            partial.unlink(missing_ok=True)
            raise _Retry(f"the server refused to resume at byte {offset} (HTTP 416); starting over") from None
        if exc.code >= 500 or exc.code == 429:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"HTTP {exc.code} {exc.reason}", http_status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:  # DNS, refused connection, connect timeout
        raise _Retry(str(getattr(exc, "reason", exc))) from None
    with response:
        if on_response is not None:
            on_response(response)
        status = getattr(response, "status", 200)
        resumed = offset > 0 and status == 206
        if resumed:
            total = _total_from_content_range(response.headers.get("Content-Range"))
        else:  # a fresh download, or a server that ignored the Range header and sent everything
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = offset if resumed else 0
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                while block := response.read(_BLOCK):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except OSError as exc:  # read timeout or dropped connection: what arrived stays in the partial
            raise _Retry(f"the connection broke after {done} bytes ({exc})") from None
    if total is not None and done < total:
        raise _Retry(f"the connection closed after {done} of {total} bytes")
    return total


def download(spec: ModelFile, models_dir: Path, progress=None, opener=urllib.request.urlopen, *,
             timeout: float = DOWNLOAD_TIMEOUT_S, attempts: int = DOWNLOAD_ATTEMPTS,
             backoff: float = DOWNLOAD_BACKOFF_S, sleep=time.sleep) -> Path:
    """Download ``spec.url`` into its slot: resumable ``.partial`` (HTTP Range), ``timeout`` per connection and
    read, ``attempts`` tries with exponential back-off, size and sha256 checks, then an atomic rename.

    A ``.partial`` left by an earlier run is resumed only when the file has a published sha256, which will catch
    bytes that do not belong to it; without one (the segmenter) it is removed and the download starts over. A
    complete ``.partial`` (the server answers HTTP 416 to the resume request) is verified and moved into place.
    ``progress(done_bytes, total_bytes_or_None)`` is called after every block.

    Raises:
        DownloadError: the host cannot be reached after every attempt, or the file is gone (HTTP 4xx); the
            message names the manual step.
        ModelFileError: the downloaded file has the wrong size or sha256 (the partial file is removed).
    """
    if spec.url is None:
        raise R3DPError(f"{spec.relpath} cannot be downloaded automatically: {spec.source}.")
    target = models_dir / spec.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    if spec.sha256 is None:
        # Nothing could tell a stale partial (another version of the file, a broken earlier run) from a good
        # prefix: the size check alone would pass stale bytes + the rest. Within this run, retries do resume.
        partial.unlink(missing_ok=True)
    total = None
    for attempt in range(attempts):
        try:
            total = _transfer(spec.url, partial, opener, timeout, progress)
            break
        except _Retry as exc:
            if attempt == attempts - 1:
                raise DownloadError(f"Could not download {spec.key} from {spec.url} after {attempts} attempts "
                                    f"({exc}). The host may be unreachable from here (offline, proxy or firewall): "
                                    f"{manual_step(spec, models_dir)}. Running `{FETCH_COMMAND}` again resumes "
                                    "where it stopped.") from None
            sleep(backoff * 2**attempt)
        except DownloadError as exc:
            raise DownloadError(f"Could not download {spec.key} from {spec.url}: {exc}. "
                                f"{manual_step(spec, models_dir)}.", http_status=exc.http_status) from None
    verify_download(spec, partial, total)
    os.replace(partial, target)
    return target


def verify_download(spec: ModelFile, partial: Path, server_size: int | None) -> None:
    """Size (the registry's exact size, else the server's) and sha256 (where published); a bad file is removed."""
    actual = partial.stat().st_size
    expected = spec.size_bytes if spec.size_bytes is not None else server_size
    if expected is not None and actual != expected:
        partial.unlink()
        raise ModelFileError(f"{spec.relpath}: the download has {actual} bytes, expected {expected}; the partial "
                             f"file was removed, run `{FETCH_COMMAND}` again.")
    if spec.sha256 and (digest := sha256_of(partial)) != spec.sha256:
        partial.unlink()
        raise ModelFileError(f"{spec.relpath}: checksum mismatch (sha256 {digest}, expected {spec.sha256}); "
                             f"the partial file was removed, run `{FETCH_COMMAND}` again.")


# The Hugging Face models r3dp snapshots into the ``hubert`` and ``wav2vec2`` slots: ids, revisions and the
# folder checks (no torch needed). HuBERT: the snapshot the official Real3D-Portrait code pins. wav2vec2: Talk3D's
# preprocessing (RAD-NeRF's asr.py) loads it by name with no revision and no pinned snapshot is known, so the main
# branch. ``audio.hubert`` and ``talk3d.audio_features`` read these from here.
HUBERT_MODEL_ID = "facebook/hubert-large-ls960-ft"
HUBERT_REVISION = "ece5fabbf034c1073acae96d5401b25be96709d8"   # the snapshot the official code pins
HUBERT_FEATURE_DIM = 1024
WAV2VEC2_MODEL_ID = "cpierse/wav2vec2-large-xlsr-53-esperanto"
WAV2VEC2_REVISION = "main"
WAV2VEC2_LOGIT_DIM = 44       # the Esperanto CTC vocabulary ([UNK] 42, [PAD] 43)
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_transformers_config(folder: Path, needed_by: str) -> dict:
    import json

    config_path = folder / "config.json"
    try:
        return json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{config_path} cannot be read as a transformers config ({exc}); {needed_by}'s "
                             "config.json.") from None


def check_hubert_folder(folder: str | Path) -> None:
    """Check a HuBERT folder without loading it: ``config.json`` of a HuBERT with 1024-d features, and weights.

    Raises:
        ModelFileError: naming what is wrong and where to get the right model.
    """
    folder = Path(folder)
    config = _read_transformers_config(folder, f"HuBERT needs {HUBERT_MODEL_ID}")
    if not isinstance(config, dict) or config.get("model_type") != "hubert":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ModelFileError(f"{folder} holds a '{kind}' model, not HuBERT: the audio model needs {HUBERT_MODEL_ID}.")
    if config.get("hidden_size") != HUBERT_FEATURE_DIM:
        raise ModelFileError(f"{folder} holds a HuBERT with {config.get('hidden_size')}-d features; the audio model "
                             f"needs {HUBERT_MODEL_ID} ({HUBERT_FEATURE_DIM}-d).")
    if not any((folder / name).is_file() for name in HUB_WEIGHT_FILES):
        raise ModelFileError(f"{folder} has HuBERT's config.json but no weights ({' or '.join(HUB_WEIGHT_FILES)}); "
                             f"download {HUBERT_MODEL_ID} again.")


def check_wav2vec2_folder(folder: str | Path) -> None:
    """Check a wav2vec2 folder without loading it: a CTC ``config.json`` with the 44-symbol head, and weights.

    Raises:
        ModelFileError: naming what is wrong and where to get the right model.
    """
    folder = Path(folder)
    config = _read_transformers_config(folder, f"Talk3D needs {WAV2VEC2_MODEL_ID}")
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind != "wav2vec2":
        raise ModelFileError(f"{folder} holds a '{kind}' model, not wav2vec2: Talk3D's audio features need "
                             f"{WAV2VEC2_MODEL_ID}.")
    if config.get("vocab_size") != WAV2VEC2_LOGIT_DIM:
        raise ModelFileError(f"{folder} holds a wav2vec2 CTC model with {config.get('vocab_size')} output symbols; "
                             f"Talk3D's audio features need {WAV2VEC2_MODEL_ID} ({WAV2VEC2_LOGIT_DIM} symbols).")
    if not any((folder / name).is_file() for name in HUB_WEIGHT_FILES):
        raise ModelFileError(f"{folder} has wav2vec2's config.json but no weights "
                             f"({' or '.join(HUB_WEIGHT_FILES)}); download {WAV2VEC2_MODEL_ID} again.")


# slot key → (revision, folder check)
_HUB_FOLDER_RULES = {
    "hubert": (HUBERT_REVISION, check_hubert_folder),
    "wav2vec2": (WAV2VEC2_REVISION, check_wav2vec2_folder),
}


def _hub_folder_rules(key: str):
    if key not in _HUB_FOLDER_RULES:
        raise KeyError(f"{key} is not a Hugging Face folder r3dp fetches")
    return _HUB_FOLDER_RULES[key]


def fetch_hub_folder(spec: ModelFile | str, models_dir: Path, snapshot_download=None) -> Path:
    """Snapshot the Hugging Face repository of ``spec`` (a slot or its key: ``hubert``, ``wav2vec2``) at its
    revision into its slot with ``huggingface_hub`` (which shows progress and resumes), then check the folder.

    ``snapshot_download``: the hub call (``huggingface_hub.snapshot_download`` by default; tests pass a fake).

    Raises:
        DownloadError: the hub could not be reached (the message names the manual step).
        ModelFileError: the snapshot is not the model the slot needs.
    """
    spec = BY_KEY[spec] if isinstance(spec, str) else spec
    revision, check_folder = _hub_folder_rules(spec.key)
    target = models_dir / spec.relpath
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    try:
        snapshot_download(repo_id=spec.hub_repo, revision=revision, local_dir=str(target),
                          allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin", "*.txt"])
    except Exception as exc:  # huggingface_hub raises its own HTTP/offline/IO error types, which vary by version
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(f"Could not download {spec.key} ({spec.hub_repo}) from Hugging Face ({reason}). If "
                            f"this machine is offline or huggingface.co is blocked, run `hf download {spec.hub_repo} "
                            f"--local-dir DIR` elsewhere and `{IMPORT_COMMAND}` with DIR here, or copy DIR to "
                            f"{target}. Running `{spec.fetch_command}` again resumes.") from None
    check_folder(target)
    return target


def find_hub_folder(key: str, models_dir: str | Path | None = None) -> Path | None:
    """The local folder of the Hugging Face model in slot ``key`` (``hubert``, ``wav2vec2``): the slot in the
    models folder, else the Hugging Face cache's snapshot; None when neither has its ``config.json``."""
    spec = BY_KEY[key]
    folder = default_models_dir(models_dir) / spec.relpath
    if (folder / "config.json").is_file():
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.hub_repo, "config.json")
    except ImportError:
        return None
    return Path(cached).parent if isinstance(cached, str) else None
