"""The official Talk3D files (trainer checkpoint, EG3D persistence pickles, inversion tensors) read with nothing run,
converted to safetensors and to a persona (`r3dp convert`)."""

from __future__ import annotations

import json

import pytest
import torch
from fakes.pickles import RunsCode, persistence_pickle, persistent_network, writes_marker

from r3dp_core.cli import main
from r3dp_core.errors import ModelFileError
from r3dp_core.parity.case import synth_state_dict
from r3dp_core.talk3d.model import MODULES, load_talk3d
from r3dp_core.talk3d.official_files import read_eg3d_generator, read_talk3d_checkpoint
from r3dp_core.talk3d.persona import read_persona


@pytest.fixture(scope="module")
def talk3d_weights(parity_dir):
    return synth_state_dict(parity_dir, "talk3d")


@pytest.fixture(scope="module")
def generator_weights(parity_dir):
    manifest = json.loads((parity_dir / "manifest_eg3d_fixed_triplane.json").read_text())
    kinds = {entry["key"]: entry["kind"] for entry in manifest["entries"]}
    return synth_state_dict(parity_dir, "eg3d_fixed_triplane"), kinds


def _official_checkpoint(weights, path, marker, superresolution=None):
    """The trainer's torch.save dict: nested state dicts, null_vector, pickled optimizer/scheduler objects."""
    nested = {name: {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
              for name in MODULES}
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.Adam(params)
    checkpoint = {**nested, "null_vector": weights["null_vector"], "epoch": 3, "iter": 1200,
                  "optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 10),
                  "payload": RunsCode(writes_marker(marker))}
    if superresolution is not None:
        checkpoint["superresolution"] = superresolution
    torch.save(checkpoint, path)


def _persistence_pickle(weights, kinds, path, marker, wrap_in_dict=False):
    """A pickled generator as NVIDIA's persistence writes it: every module carries source that runs on load."""
    generator = persistent_network(weights, {k for k, kind in kinds.items() if kind != "param"}, writes_marker(marker),
                                   init_kwargs={"z_dim": 512, "rendering_kwargs": {"box_warp": 1}})
    path.write_bytes(persistence_pickle({"G": generator, "D": None, "G_ema": generator} if wrap_in_dict
                                        else generator))


def test_checkpoint_loads_strictly_and_its_pickled_objects_never_run(tmp_path, talk3d_weights):
    marker = tmp_path / "ran"
    path = tmp_path / "talk3d.pt"
    _official_checkpoint(talk3d_weights, path, marker, superresolution={"stylegan_decoder.w": torch.zeros(3)})
    checkpoint = read_talk3d_checkpoint(path)
    assert not marker.exists()
    assert checkpoint.superresolution is None
    notes = " ".join(checkpoint.networks.notes)
    assert "GFPGAN" in notes and "optimizer" in notes and "payload" in notes
    model = load_talk3d(checkpoint.networks.state_dict)      # strict
    assert sum(p.numel() for p in model.parameters()) == 17_586_277
    for key, value in talk3d_weights.items():
        assert torch.equal(checkpoint.networks.state_dict[key], value), key


def test_checkpoint_missing_or_misshapen_tensors_are_named(tmp_path, talk3d_weights):
    weights = dict(talk3d_weights)
    del weights["audio_net.encoder_fc1.0.weight"]
    path = tmp_path / "missing.pt"
    _official_checkpoint(weights, path, tmp_path / "ran")
    with pytest.raises(ModelFileError, match=r"1 missing \(e.g. audio_net.encoder_fc1.0.weight\)"):
        read_talk3d_checkpoint(path)
    weights = dict(talk3d_weights, null_vector=torch.zeros(1, 2, 64))
    _official_checkpoint(weights, path, tmp_path / "ran")
    with pytest.raises(ModelFileError, match=r"null_vector \(1, 2, 64\) instead of \(1, 1, 64\)"):
        read_talk3d_checkpoint(path)


@pytest.mark.parametrize("wrap_in_dict", [False, True], ids=["G_tune.pkl", "ffhq_G_ema"])
def test_generator_pickle_reads_without_running_its_embedded_source(tmp_path, generator_weights, wrap_in_dict):
    weights, kinds = generator_weights
    marker = tmp_path / "source_ran"
    path = tmp_path / "G.pkl"
    _persistence_pickle(weights, kinds, path, marker, wrap_in_dict)
    checked, init_kwargs = read_eg3d_generator(path)
    assert not marker.exists()
    assert init_kwargs == {"z_dim": 512, "rendering_kwargs": {"box_warp": 1}}
    assert set(checked.state_dict) == set(weights) and not checked.extras
    for key, value in weights.items():
        assert torch.equal(checked.state_dict[key], value), key
    from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator
    TriPlaneGenerator().load_state_dict(checked.state_dict, strict=True)
    assert any("G_ema" in note for note in checked.notes) == wrap_in_dict


def _official_person(tmp_path, talk3d_weights, generator_weights, frames=12):
    weights, kinds = generator_weights
    folder = tmp_path / "May"
    (folder / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "ran"
    # an FFHQ-style pickle lacks VIVE3D's dataset_label_std: filled in (unused by inference)
    _persistence_pickle({k: v for k, v in weights.items() if k != "dataset_label_std"}, kinds,
                        folder / "G_tune.pkl", marker)
    sr = {k[len("superresolution."):]: v + 1 for k, v in weights.items() if k.startswith("superresolution.")}
    _official_checkpoint(talk3d_weights, folder / "checkpoints" / "May_tune.pt", marker, superresolution=sr)
    torch.save(torch.randn(1, 512), folder / "inversion_w_person.pt")
    torch.save(torch.randn(frames, 2) * 0.1, folder / "inversion_0-0_angles.pt")
    torch.save(torch.randn(frames, 3) * 10, folder / "angles.pt")
    torch.save(torch.rand(frames, 6, 2) * 2 - 1, folder / "landmarks.pt")
    rows = [" frame, face_id, timestamp, confidence, success, AU12_r, AU45_r"]
    rows += [f"{i + 1}, 0, {i * 0.04:.2f}, 0.98, 1, 0.5, {i * 0.1:.2f}" for i in range(frames + 2)]
    (folder / "au.csv").write_text("\n".join(rows) + "\n")
    return folder, marker


def test_convert_talk3d_person_to_a_persona(tmp_path, talk3d_weights, generator_weights, capsys):
    folder, marker = _official_person(tmp_path, talk3d_weights, generator_weights)
    out = tmp_path / "personas" / "may"
    assert main(["convert", "--talk3d", str(folder), str(out)]) == 0
    assert not marker.exists()
    printed = capsys.readouterr().out
    assert "fine-tuned EG3D super-resolution" in printed and "dataset_label_std was absent" in printed
    assert "blink: 14 rows for 12 frames; the first 12 kept" in printed
    persona = read_persona(out)
    assert persona.num_frames == 12 and persona.info["made_by"] == "r3dp convert --talk3d"
    assert torch.equal(persona.w_person, torch.load(folder / "inversion_w_person.pt", weights_only=True))
    assert torch.equal(persona.tracks["yaw_pitch"], torch.load(folder / "inversion_0-0_angles.pt", weights_only=True))
    assert torch.allclose(persona.tracks["blink"], torch.arange(12) * 0.1)
    weights, _ = generator_weights
    key = "superresolution.block0.conv0.weight"
    assert torch.equal(persona.generator[key], weights[key] + 1)     # the fine-tuned SR replaced the generator's
    assert torch.equal(persona.generator["dataset_label_std"], torch.ones(25))
    load_talk3d(persona.networks)


def test_convert_single_files_to_safetensors(tmp_path, talk3d_weights, capsys):
    from safetensors.torch import load_file

    path = tmp_path / "ckpt.pt"
    _official_checkpoint(talk3d_weights, path, tmp_path / "ran")
    assert main(["convert", str(path), str(tmp_path / "talk3d.safetensors")]) == 0
    converted = load_file(str(tmp_path / "talk3d.safetensors"))
    assert set(converted) == set(talk3d_weights)
    assert "talk3d, 426 tensors" in capsys.readouterr().out


def test_convert_talk3d_refuses_an_incomplete_folder(tmp_path, capsys):
    (tmp_path / "person").mkdir()
    assert main(["convert", "--talk3d", str(tmp_path / "person"), str(tmp_path / "out")]) == 2
    assert "has no G_tune.pkl" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
