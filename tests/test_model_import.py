"""`r3dp models import PATH` on fake official releases built here: the nested release layout and a flat folder,
as folders and as archives; wrong files in a slot are refused with their reason and nothing is written for them.

Checkpoints carry the official key names and shapes; their tensors are zero-stride views of one number, so a
full-size video checkpoint is a few hundred kilobytes on disk.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from r3dp_core import cli, model_files
from r3dp_core.checkpoint import load_checkpoint
from r3dp_core.errors import InputError
from r3dp_core.model_import import import_models, official_keys

RELEASE = Path("checkpoints") / "240210_real3dportrait_orig"
# Talk3D's slots (its audio model, the EG3D prior, the loss networks): no Real3D-Portrait download fills them
TALK3D = {"wav2vec2", "eg3d_ffhq", "lpips_alexnet", "lpips_alex", "arcface_ir_se50", "wav2lip_syncnet"}


def official_like(kind: str) -> dict[str, torch.Tensor]:
    """Every official key of ``kind`` with its official shape (values: zero-stride views, nearly no storage)."""
    return {key: torch.zeros(()) if not shape else torch.zeros(1).expand(shape)
            for key, shape in official_keys(kind).items()}


def write_ckpt(path: Path, state_dict: dict, config: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model": state_dict}, "global_step": 1}, path)
    if config is not None:
        (path.parent / "config.yaml").write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def bfm_folder(tmp_path_factory, parity_dir):
    import os

    os.environ.setdefault("R3DP_PARITY_CACHE", str(tmp_path_factory.mktemp("parity_cache")))
    from r3dp_core.parity.synth_bfm import ensure_synth_bfm

    return ensure_synth_bfm(parity_dir)


def write_hubert(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "hubert", "hidden_size": 1024}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def write_wav2vec2(folder: Path) -> Path:
    """Talk3D's wav2vec2 snapshot as far as r3dp checks it: a wav2vec2 CTC config with 44 symbols, weights."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "vocab_size": 44}))
    (folder / "pytorch_model.bin").write_bytes(b"weights")
    return folder


def official_release(root: Path, shared_dir: Path, parity_dir: Path, bfm_folder: Path) -> Path:
    """The official checkpoints folder + the deep_3drecon BFM bundle, as the downloads unpack."""
    video_config = json.loads((parity_dir / "config_secc2plane_torso.json").read_text())
    write_ckpt(root / RELEASE / "secc2plane_torso_orig" / "model_ckpt_steps_100000.ckpt",
               official_like("secc2plane_torso"), video_config)
    write_ckpt(root / RELEASE / "audio2secc_vae" / "model_ckpt_steps_400000.ckpt", official_like("audio2secc_vae"),
               json.loads((parity_dir / "config_audio2secc_vae.json").read_text()))
    write_ckpt(root / RELEASE / "secc2plane_orig" / "model_ckpt_steps_100000.ckpt", {"x": torch.zeros(1)})
    write_ckpt(root / "checkpoints" / "pretrained_ckpts" / "mit_b0.pth", {"x": torch.zeros(1)})
    bfm = root / "deep_3drecon" / "BFM"
    bfm.mkdir(parents=True)
    for name in ("BFM_model_front.mat", "index_mp468_from_mesh35709.npy"):
        shutil.copy(bfm_folder / name, bfm / name)
    (bfm / "01_MorphableModel.mat").write_bytes(b"not needed")
    for name in ("bfm_left_eye_faces.npy", "bfm_right_eye_faces.npy"):
        shutil.copy(shared_dir / "official_data" / name, root / "deep_3drecon" / name)
    return root


@pytest.fixture
def release(tmp_path, shared_dir, parity_dir, bfm_folder) -> Path:
    return official_release(tmp_path / "download", shared_dir, parity_dir, bfm_folder)


def _missing(models: Path) -> set[str]:
    return {spec.key for spec, found in model_files.status(models) if found is None}


def _check_release_imported(models: Path, report) -> None:
    placed = {key for key, _, _ in report.placed}
    assert placed == {"video_model", "audio_model", "bfm", "bfm_mediapipe_index", "bfm_left_eye_faces",
                      "bfm_right_eye_faces"}
    assert report.refused == []
    assert {spec.key for spec in report.missing} == _missing(models) == {"hubert", "face_landmarker", "segmenter",
                                                                         *TALK3D}
    video = load_checkpoint(models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt", expected="secc2plane_torso")
    assert len(video.state_dict) == 1030 and video.config["triplane_hid_dim"] == 32   # config.yaml came along
    assert (models / "audio2secc_vae" / "config.yaml").is_file()
    skipped = {path.name: reason for path, reason in report.skipped}
    assert "head-only" in skipped["model_ckpt_steps_100000.ckpt"] and "initialisation" in skipped["mit_b0.pth"]


def test_official_release_folder_is_checked_and_copied(release, tmp_path):
    models = tmp_path / "models"
    report = import_models(release, models)
    _check_release_imported(models, report)
    assert not (models / "BFM" / "BFM_model_front.mat").is_symlink()
    from r3dp_core.geometry.bfm import FaceModel3DMM

    bfm = FaceModel3DMM.from_file(models / "BFM" / "BFM_model_front.mat")
    assert bfm.n_vertices == 35709


def test_official_release_zip_through_the_cli(release, tmp_path, capsys):
    archive = shutil.make_archive(str(tmp_path / "Real3DPortrait"), "zip", release)
    models = tmp_path / "models"
    assert cli.main(["models", "import", archive, "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and "still missing" in out and "r3dp models fetch" in out
    assert _missing(models) == {"hubert", "face_landmarker", "segmenter", *TALK3D}
    assert [p.name for p in models.iterdir() if p.name.startswith(".import-")] == []   # the extraction is gone
    # a second import keeps what is there unless forced
    report = import_models(archive, models)
    assert report.placed == [] and len(report.kept) == 6


def test_flat_folder_as_tar_gz_with_hubert_and_convert(tmp_path, shared_dir, bfm_folder):
    flat = tmp_path / "flat"
    write_ckpt(flat / "model_ckpt_steps_400000.ckpt", official_like("audio2secc_vae"))   # found by its keys
    for name in ("BFM_model_front.mat", "index_mp468_from_mesh35709.npy"):
        shutil.copy(bfm_folder / name, flat / name)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", flat / "face_landmarker.task")
    (flat / "selfie_multiclass_256x256.tflite").write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    write_hubert(flat / "hubert-large-ls960-ft")
    write_wav2vec2(flat / "wav2vec2-large-xlsr-53-esperanto")
    archive = tmp_path / "models.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(flat, arcname=".")
    models = tmp_path / "models"
    report = import_models(archive, models, convert=True)
    assert report.refused == []
    assert {key for key, _, _ in report.placed} == {"audio_model", "bfm", "bfm_mediapipe_index", "face_landmarker",
                                                     "segmenter", "hubert", "wav2vec2"}
    converted = load_checkpoint(models / "audio2secc_vae.safetensors", expected="audio2secc_vae")
    assert set(converted.state_dict) == set(official_keys("audio2secc_vae"))
    assert converted.metadata["r3dp_model"] == "audio2secc_vae"
    assert (models / "hubert" / "hubert-large-ls960-ft" / "config.json").is_file()
    assert (models / "wav2vec2" / "wav2vec2-large-xlsr-53-esperanto" / "pytorch_model.bin").is_file()
    assert _missing(models) == {"video_model", "bfm_left_eye_faces", "bfm_right_eye_faces", *TALK3D} - {"wav2vec2"}


def test_link_places_symlinks_to_the_downloaded_files(release, tmp_path):
    models = tmp_path / "models"
    import_models(release, models, link=True)
    target = models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt"
    assert target.is_symlink() and target.resolve() == (release / RELEASE / "secc2plane_torso_orig" /
                                                         "model_ckpt_steps_100000.ckpt").resolve()
    with pytest.raises(InputError, match="--link needs a folder"):
        import_models(shutil.make_archive(str(tmp_path / "r"), "zip", release), tmp_path / "m2", link=True)


def test_wrong_files_in_their_slots_are_refused_with_the_reason(release, tmp_path, capsys):
    video = release / RELEASE / "secc2plane_torso_orig" / "model_ckpt_steps_100000.ckpt"
    write_ckpt(video, official_like("audio2secc_vae"))                          # the audio model in the video slot
    audio = official_like("audio2secc_vae")
    audio.pop("mouth_amp_embed")
    audio["blink_embed.weight"] = torch.zeros(3, 128)
    write_ckpt(release / RELEASE / "audio2secc_vae" / "model_ckpt_steps_400000.ckpt", audio)   # another version
    import scipy.io

    scipy.io.savemat(release / "deep_3drecon" / "BFM" / "BFM_model_front.mat", {"shapePC": np.zeros((3, 2))})
    np.save(release / "deep_3drecon" / "bfm_left_eye_faces.npy", np.arange(569))
    models = tmp_path / "models"
    assert cli.main(["models", "import", str(release), "--models-dir", str(models)]) == 1
    out = capsys.readouterr().out
    reasons = {path.relative_to(release).as_posix(): reason
               for path, reason in import_models(release, models).refused}
    assert "looks like Real3D-Portrait's audio model" in reasons[video.relative_to(release).as_posix()]
    assert "the video_model slot needs Real3D-Portrait's video model" in reasons[video.relative_to(release).as_posix()]
    audio_reason = reasons[f"{RELEASE.as_posix()}/audio2secc_vae/model_ckpt_steps_400000.ckpt"]
    assert "differ from the official audio2secc_vae" in audio_reason
    assert "1 missing (e.g. mouth_amp_embed)" in audio_reason and "blink_embed.weight (3, 128) instead of (2, 128)" \
        in audio_reason
    assert "01_MorphableModel" in reasons["deep_3drecon/BFM/BFM_model_front.mat"]
    assert "sha256" in reasons["deep_3drecon/bfm_left_eye_faces.npy"]
    assert out.count("REFUSED") == 4
    assert {"video_model", "audio_model", "bfm", "bfm_left_eye_faces"} <= _missing(models)   # nothing written
    assert not (models / "secc2plane_torso").exists()


def test_archives_that_escape_the_folder_and_bad_paths_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    with pytest.raises(InputError, match="outside the folder"):
        import_models(archive, tmp_path / "models")
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(InputError, match="does not exist"):
        import_models(tmp_path / "nowhere", tmp_path / "models")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="neither a folder nor an archive"):
        import_models(tmp_path / "notes.txt", tmp_path / "models")


# ------------------------------------------------------------------------- issue #23: imports never lose files

def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and not path.is_symlink()}


def test_importing_the_models_folder_into_itself_keeps_every_file(release, tmp_path, capsys):
    models = tmp_path / "models"
    import_models(release, models)
    before = _files(models)
    assert len(before) == 8   # six slots + the two config.yaml
    alias = tmp_path / "alias"
    alias.symlink_to(models, target_is_directory=True)
    for source, flags in ((models, ["--force"]), (models, ["--force", "--link"]), (alias, ["--force", "--link"])):
        assert cli.main(["models", "import", str(source), "--models-dir", str(models), *flags]) == 0
        out = capsys.readouterr().out
        assert out.count("already in place") == 6, out
        assert "copied" not in out and "linked" not in out
        assert _files(models) == before                                  # same files, same bytes, no links
        assert not any(path.is_symlink() for path in models.rglob("*"))
    report = import_models(alias, models, force=True)
    assert report.placed == [] and report.refused == [] and len(report.in_place) == 6


def test_a_converted_checkpoint_in_the_models_folder_is_not_copied_onto_itself(release, tmp_path, capsys):
    models = tmp_path / "models"
    import_models(release, models)
    converted = models / "secc2plane_torso.safetensors"          # the alternative slot, beside the .ckpt
    assert cli.main(["convert", str(models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt"),
                     str(converted)]) == 0
    before = converted.read_bytes()
    report = import_models(models, models, force=True)
    assert report.refused == [] and report.placed == []
    assert {key for key, _ in report.in_place} == {"video_model", "audio_model", "bfm", "bfm_mediapipe_index",
                                                   "bfm_left_eye_faces", "bfm_right_eye_faces"}
    assert converted.read_bytes() == before


def test_placing_a_file_onto_itself_is_refused_with_the_reason(tmp_path):
    from r3dp_core import model_import
    from r3dp_core.errors import ModelFileError

    slot = tmp_path / "models" / "face_landmarker.task"
    slot.parent.mkdir()
    slot.write_bytes(b"the only copy")
    (tmp_path / "alias").symlink_to(slot.parent, target_is_directory=True)
    for mode in ("copy", "link", "move"):
        with pytest.raises(ModelFileError, match="already is the file at .*nothing to copy"):
            model_import._place_file(tmp_path / "alias" / "face_landmarker.task", slot, mode)
        assert not slot.is_symlink() and slot.read_bytes() == b"the only copy"


def test_a_failed_copy_under_force_leaves_the_old_files_intact(release, tmp_path, monkeypatch):
    from r3dp_core import model_import

    models = tmp_path / "models"
    import_models(release, models)
    before = _files(models)
    copies = []

    def copy_that_breaks(source, target, *args, **kwargs):   # the disk fills up halfway through every copy
        data = Path(source).read_bytes()
        Path(target).write_bytes(data[: len(data) // 2])
        copies.append(Path(target))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_import.shutil, "copyfile", copy_that_breaks)
    report = import_models(release, models, force=True)
    assert len(copies) >= 6 and report.placed == []
    assert _files(models) == before                                       # every old file is whole
    reasons = [reason for _, reason in report.refused]
    assert len(reasons) == 6 and all("No space left on device" in r and "left as it was" in r for r in reasons)
    leftovers = [p.name for p in models.rglob("*") if p.name.startswith(".") or p.name.endswith(".partial")]
    assert leftovers == []                                                # the half-written copies are gone


def _zeros_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("BFM/zeros.bin", bytes(size))
    return path


def _zeros_tar_gz(path: Path, size: int, tmp: Path) -> Path:
    (tmp / "zeros.bin").write_bytes(bytes(size))
    with tarfile.open(path, "w:gz") as bundle:
        bundle.add(tmp / "zeros.bin", arcname="BFM/zeros.bin")
    return path


def test_an_archive_that_extracts_past_the_size_cap_is_refused(tmp_path, capsys):
    models = tmp_path / "models"
    for archive in (_zeros_zip(tmp_path / "bomb.zip", 3_000_000),
                    _zeros_tar_gz(tmp_path / "bomb.tar.gz", 3_000_000, tmp_path)):
        with pytest.raises(InputError, match=r"extracts? to 3\.0 MB or more, past the 1\.0 MB limit.*"
                                             r"--max-extracted-size"):
            import_models(archive, models, max_extracted_bytes=1_000_000, max_ratio=10_000)
        assert list(models.iterdir()) == []                               # the extraction folder is gone
        assert cli.main(["models", "import", str(archive), "--models-dir", str(models),
                         "--max-extracted-size", "1M", "--max-compression-ratio", "10000"]) == 2
        assert "past the 1.0 MB limit" in capsys.readouterr().err
    # under the caps the same archive extracts (and holds nothing r3dp uses)
    report = import_models(tmp_path / "bomb.zip", models, max_extracted_bytes=4_000_000, max_ratio=10_000)
    assert report.placed == [] and report.refused == []


def test_an_archive_over_the_compression_ratio_is_refused(tmp_path, capsys):
    models = tmp_path / "models"
    for archive in (_zeros_zip(tmp_path / "bomb.zip", 4_000_000),
                    _zeros_tar_gz(tmp_path / "bomb.tar.gz", 4_000_000, tmp_path)):
        ratio = 4_000_000 / archive.stat().st_size
        assert ratio > 200
        with pytest.raises(InputError, match=r"more than 200 times the archive's size.*decompression bomb.*"
                                             r"--max-compression-ratio"):
            import_models(archive, models)                                 # the default caps
        assert list(models.iterdir()) == []
        assert cli.main(["models", "import", str(archive), "--models-dir", str(models),
                         "--max-compression-ratio", str(int(ratio) + 1)]) == 0   # raised: it extracts
        assert "zeros.bin" not in capsys.readouterr().err
