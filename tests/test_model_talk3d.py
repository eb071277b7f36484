"""Talk3D's two model slots: its wav2vec2 (fetched from Hugging Face like HuBERT, imported by its config.json) and
EG3D's FFHQ generator pickle (imported by what it holds, read without running anything). Nothing leaves the machine:
the hub is a fake and the pickles are crafted here, each carrying code that plain ``pickle.load`` would run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from fakes.pickles import RunsCode, importable_persistence, persistence_pickle, persistent_network, writes_marker
from test_model_import import write_wav2vec2

from r3dp_core import cli, model_files
from r3dp_core.errors import ModelFileError
from r3dp_core.model_files import BY_KEY, fetch_hub_folder
from r3dp_core.model_import import import_models
from r3dp_core.talk3d.audio_features import WAV2VEC2_MODEL_ID, WAV2VEC2_SUBDIR, find_wav2vec2
from r3dp_core.talk3d.official_files import read_eg3d_generator


def write_transformers(folder: Path, **config) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def _missing(models: Path) -> set[str]:
    return {spec.key for spec, found in model_files.status(models) if found is None}


# ------------------------------------------------------------------------------------------------- the slots

def test_the_talk3d_slots_are_never_demanded_by_generate():
    wav2vec2, eg3d = BY_KEY["wav2vec2"], BY_KEY["eg3d_ffhq"]
    assert Path(wav2vec2.relpath) == WAV2VEC2_SUBDIR and wav2vec2.hub_repo == WAV2VEC2_MODEL_ID
    assert wav2vec2.required_for == ("talk3d",) and eg3d.required_for == ("personalise",)
    assert eg3d.relpath == "eg3d/ffhq-fixed-triplane512-128.pkl" and not eg3d.fetchable and not eg3d.official_drive
    assert "NVIDIA NGC" in eg3d.how_to_get() and "r3dp models import PATH" in eg3d.how_to_get()
    assert [spec.key for spec in model_files.MODEL_FILES if spec.talk3d_only] == [
        "wav2vec2", "eg3d_ffhq", "lpips_alexnet", "lpips_alex", "arcface_ir_se50", "wav2lip_syncnet"]


# ------------------------------------------------------------------------------------------------ the fetch

def _fake_hub(calls: list, vocab_size: int = 44):
    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        calls.append((repo_id, revision, local_dir))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "vocab_size": vocab_size}))
        (Path(local_dir) / "pytorch_model.bin").write_bytes(b"weights")

    return snapshot_download


def test_wav2vec2_is_fetched_from_main_into_its_slot_and_found_there(tmp_path):
    calls = []
    target = fetch_hub_folder("wav2vec2", tmp_path, snapshot_download=_fake_hub(calls))
    assert target == tmp_path / "wav2vec2" / "wav2vec2-large-xlsr-53-esperanto"
    assert calls == [(WAV2VEC2_MODEL_ID, "main", str(target))]       # no pinned revision is known
    assert BY_KEY["wav2vec2"].find(tmp_path) == target == find_wav2vec2(tmp_path)
    with pytest.raises(ModelFileError, match="32 output symbols; Talk3D's audio features need cpierse/"):
        fetch_hub_folder("wav2vec2", tmp_path / "other", snapshot_download=_fake_hub([], vocab_size=32))

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    with pytest.raises(Exception, match=f"Could not download wav2vec2 .*hf download {WAV2VEC2_MODEL_ID}"):
        fetch_hub_folder(BY_KEY["wav2vec2"], tmp_path / "offline", snapshot_download=offline)


# -------------------------------------------------------------------------------- transformers folders

def test_transformers_folders_go_to_their_slot_by_model_type(tmp_path, capsys):
    download = tmp_path / "download"
    write_transformers(download / "a" / "hubert-large-ls960-ft", model_type="hubert", hidden_size=1024)
    write_wav2vec2(download / "b" / "snapshot")                          # found by its config, not its name
    write_transformers(download / "wav2vec2-base-960h", model_type="wav2vec2", vocab_size=32)
    write_transformers(download / "bert", model_type="bert", hidden_size=768)
    models = tmp_path / "models"
    report = import_models(download, models)
    assert {(key, source.relative_to(download).as_posix()) for key, source, _ in report.placed} == {
        ("hubert", "a/hubert-large-ls960-ft"), ("wav2vec2", "b/snapshot")}
    assert report.refused == []
    skipped = {source.name: reason for source, reason in report.skipped}
    assert set(skipped) == {"wav2vec2-base-960h", "bert"}                # their weight files are not judged alone
    assert "32 output symbols" in skipped["wav2vec2-base-960h"] and WAV2VEC2_MODEL_ID in skipped["wav2vec2-base-960h"]
    assert skipped["bert"].startswith("a 'bert' transformers model; r3dp uses HuBERT")
    assert (models / WAV2VEC2_SUBDIR / "config.json").is_file() and find_wav2vec2(models) == models / WAV2VEC2_SUBDIR
    assert {"wav2vec2", "hubert"}.isdisjoint(_missing(models)) and "eg3d_ffhq" in _missing(models)

    assert cli.main(["models", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    listing = out.split("file(s) missing")[0].splitlines()
    line = {row.split()[0]: row for row in listing if row.startswith("  ")}
    assert "present" in line["wav2vec2"] and "(for talk3d: Talk3D's audio features" in line["wav2vec2"]
    assert "MISSING" in line["eg3d_ffhq"] and "(for personalise: the EG3D FFHQ generator" in line["eg3d_ffhq"]
    assert "(for " not in line["hubert"]
    assert "5 Talk3D file(s) missing (only Talk3D needs them, `r3dp generate` does not)" in out   # EG3D + losses
    assert "EG3D's pretrained models on NVIDIA NGC" in out.split("Talk3D file(s) missing")[1]


# ------------------------------------------------------------------------------------------ EG3D pickles

@pytest.fixture(scope="module")
def generator_layout(parity_dir) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, param|buffer) of r3dp's EG3D generator, from the fixed-tri-plane manifest."""
    manifest = json.loads((parity_dir / "manifest_eg3d_fixed_triplane.json").read_text())
    return [(entry["key"], tuple(entry["shape"]), entry["kind"]) for entry in manifest["entries"]]


def _generator(layout, source: str, leave_out: str | None = None):
    """A persistence-pickled generator; tensors are zero-stride views of one number (a few KB on disk)."""
    tensors = {key: torch.zeros(1).expand(shape) if shape else torch.zeros(())
               for key, shape, _ in layout if key != leave_out}
    buffers = {key for key, _, kind in layout if kind != "param"}
    return persistent_network(tensors, buffers, source, init_kwargs={"z_dim": 512})


def test_eg3d_pickles_are_judged_by_what_they_hold_and_none_of_their_code_runs(tmp_path, generator_layout, capsys):
    marker = tmp_path / "code_ran"
    source = writes_marker(marker)
    G = _generator(generator_layout, source)
    download = tmp_path / "download"
    (download / "eg3d").mkdir(parents=True)
    (download / "May").mkdir()
    files = {
        # the FFHQ pickle under a name that says nothing: a dict with G, D, G_ema and whatever training left
        "eg3d/network-snapshot-000400.pkl": {"G": G, "D": None, "G_ema": G, "training_set_kwargs": {"res": 512},
                                             "augment_pipe": RunsCode(source)},
        "May/G_tune.pkl": G,                                              # a person's fine-tuned generator
        "ffhq-incomplete.pkl": {"G_ema": _generator(generator_layout, source,
                                                    leave_out="superresolution.block0.conv0.weight")},
        "snapshot-stats.pkl": {"G": G, "stats": [1, 2]},
        "payload.pkl": RunsCode(source),
    }
    for name, obj in files.items():
        (download / name).write_bytes(persistence_pickle(obj))
    torch.save({"deltaplane_predictor": {}, "payload": RunsCode(source)}, download / "May" / "May_tune.pt")
    models = tmp_path / "models"
    assert cli.main(["models", "import", str(download), "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()                                            # nothing in any pickle ran

    slot = models / "eg3d" / "ffhq-fixed-triplane512-128.pkl"
    assert BY_KEY["eg3d_ffhq"].find(models) == slot
    assert slot.read_bytes() == (download / "eg3d" / "network-snapshot-000400.pkl").read_bytes()
    assert f"eg3d_ffhq            copied {download / 'eg3d' / 'network-snapshot-000400.pkl'} -> {slot}" in out
    skipped = {line.split(": ", 1)[0].split()[-1]: line.split(": ", 1)[1]
               for line in out.splitlines() if line.startswith("  skipped")}
    assert skipped[str(download / "May" / "G_tune.pkl")] == (
        "a personalised generator (G_tune.pkl): convert the person with `r3dp convert --talk3d`")
    assert skipped[str(download / "May" / "May_tune.pt")] == (
        "a Talk3D person's checkpoint: convert the person with `r3dp convert --talk3d`")
    assert "1 missing (e.g. superresolution.block0.conv0.weight)" in skipped[str(download / "ffhq-incomplete.pkl")]
    assert "not an EG3D generator (G_ema)" in skipped[str(download / "snapshot-stats.pkl")]
    assert skipped[str(download / "payload.pkl")] == "expected a pickled network, found <inert builtins.exec>"
    assert "REFUSED" not in out and not marker.exists()
    checked, init_kwargs = read_eg3d_generator(slot)
    assert len(checked.state_dict) == len(generator_layout) and init_kwargs == {"z_dim": 512}

    # the payloads are live: plain pickle runs them (this is what r3dp never does)
    pickle.loads((download / "payload.pkl").read_bytes())
    assert marker.read_text() == "ran"
    marker.unlink()
    with importable_persistence():
        pickle.loads((download / "May" / "G_tune.pkl").read_bytes())
    assert marker.read_text() == "ran"
