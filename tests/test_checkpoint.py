"""Safe checkpoint loading, layout normalisation, wrong-slot detection and `r3dp convert`."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from r3dp_core.checkpoint import compare_keys, detect_kind, load_checkpoint, load_into, strip_wrappers
from r3dp_core.cli import main as cli_main
from r3dp_core.errors import ModelFileError


@pytest.fixture(scope="module")
def video_sd(synth_state_dict):
    return synth_state_dict("secc2plane_torso")


def _save_nested(sd, path: Path):
    torch.save({"state_dict": {"model": sd, "disc": {"conv.weight": torch.ones(2)}}, "global_step": 100000,
                "epoch": 3, "optimizer_states": [{"lr": 1e-5}]}, path)


def _save_flat(sd, path: Path):
    flat = {f"model.{k}": v for k, v in sd.items()}
    flat["disc.conv.weight"] = torch.ones(2)
    torch.save({"state_dict": flat, "global_step": 100000}, path)


class _RunsCode:
    """A pickle payload that would create a marker file if it were ever executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_convert_reproduces_exact_tensors(tmp_path, video_sd, layout):
    ckpt = tmp_path / "model_ckpt_steps_100000.ckpt"
    (_save_nested if layout == "nested" else _save_flat)(video_sd, ckpt)
    (tmp_path / "config.yaml").write_text("htbsr_head_threshold: 0.9\ntriplane_hid_dim: 32\n")
    out = tmp_path / "video.safetensors"
    assert cli_main(["convert", str(ckpt), str(out)]) == 0
    with safe_open(str(out), framework="pt") as fh:
        assert set(fh.keys()) == set(video_sd)
        for key in video_sd:
            got = fh.get_tensor(key)
            assert got.dtype == video_sd[key].dtype and got.shape == video_sd[key].shape, key
            assert torch.equal(got, video_sd[key]), key
        meta = fh.metadata()
    assert meta["r3dp_model"] == "secc2plane_torso"
    assert json.loads(meta["r3dp_config"]) == {"htbsr_head_threshold": 0.9, "triplane_hid_dim": 32}
    assert len(video_sd) == 1030
    reloaded = load_checkpoint(out, expected="secc2plane_torso")
    assert reloaded.config["triplane_hid_dim"] == 32


def test_orig_mod_prefix_is_stripped():
    sd = {"state_dict": {"model._orig_mod.decoder.net.0.weight": torch.ones(2, 2), "other.x": torch.ones(1)}}
    assert list(strip_wrappers(sd)) == ["decoder.net.0.weight"]


def test_plain_state_dict_loads(tmp_path, synth_state_dict):
    sd = synth_state_dict("audio2secc_vae")
    path = tmp_path / "a2m.pth"
    torch.save(sd, path)
    loaded = load_checkpoint(path, expected="audio2secc_vae")
    assert loaded.kind == "audio2secc_vae" and len(loaded.state_dict) == 231
    assert all(torch.equal(loaded.state_dict[k], sd[k]) for k in sd)


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model": {"decoder.net.0.weight": torch.ones(2)}}, "payload": _RunsCode(marker)}, ckpt)
    with pytest.raises(ModelFileError, match=r"Refusing to load .*evil\.ckpt.*never unpickles"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    # The CLI reports it in one paragraph, exit status 2, no traceback.
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, "-m", "r3dp_core.cli", "convert", str(ckpt), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not out.exists()


def test_plain_pickle_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "legacy.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _RunsCode(marker)}, fh)
    with pytest.raises(ModelFileError):
        load_checkpoint(path)
    assert not marker.exists()


def test_numpy_scalars_in_trainer_metadata_are_allowed(tmp_path):
    import numpy as np
    path = tmp_path / "with_numpy.ckpt"
    torch.save({"state_dict": {"model": {"vae.decoder.w": torch.ones(1), "vae.prior_flow.w": torch.ones(1)}},
                "best_score": np.float64(0.5)}, path)
    assert load_checkpoint(path).kind == "audio2secc_vae"


def test_truncated_and_empty_files(tmp_path, synth_state_dict):
    sd = synth_state_dict("audio2secc_vae")
    full = tmp_path / "full.ckpt"
    torch.save({"state_dict": {"model": sd}}, full)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="damaged or incomplete.*download it again"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_checkpoint(empty)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelFileError, match="Cannot read .*safetensors"):
        load_checkpoint(broken)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_wrong_model_in_slot_is_named(tmp_path, synth_state_dict):
    audio = tmp_path / "audio.ckpt"
    torch.save({"state_dict": {"model": synth_state_dict("audio2secc_vae")}}, audio)
    with pytest.raises(ModelFileError, match="looks like Real3D-Portrait's audio model.*expects Real3D-Portrait's "
                                             "video model"):
        load_checkpoint(audio, expected="secc2plane_torso")
    sd_file = tmp_path / "sd15.safetensors"
    from safetensors.torch import save_file
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(2),
               "first_stage_model.decoder.conv_in.weight": torch.ones(2)}, str(sd_file))
    with pytest.raises(ModelFileError, match="Stable Diffusion"):
        load_checkpoint(sd_file, expected="secc2plane_torso")
    assert detect_kind(["spade_generator.G_middle_0.conv_0.weight"]) == "liveportrait"
    assert detect_kind(["foo.bar"]) == "unknown"


def test_convert_rejects_unrelated_files(tmp_path):
    path = tmp_path / "lp.pth"
    torch.save({"G_middle_0.conv_0.weight": torch.ones(1)}, path)
    assert cli_main(["convert", str(path), str(tmp_path / "x.safetensors")]) == 2
    assert cli_main(["convert", str(path), str(tmp_path / "x.bin")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_strict_key_summary_is_readable():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    sd = module.state_dict()
    bad = dict(sd)
    bad.pop("1.bias")
    bad["0.weight"] = torch.zeros(5, 3)
    bad["extra.weight"] = torch.zeros(1)
    mismatch = compare_keys(sd, bad)
    assert mismatch.missing == ["1.bias"] and mismatch.unexpected == ["extra.weight"]
    assert mismatch.wrong_shape == [("0.weight", (5, 3), (4, 3))]
    expected = (r"1 missing \(e\.g\. 1\.bias\); 1 unexpected \(e\.g\. extra\.weight\); "
                r"1 with the wrong shape \(e\.g\. 0\.weight \(5, 3\) instead of \(4, 3\)\)")
    with pytest.raises(ModelFileError, match=expected):
        load_into(module, bad, source="test.ckpt")
    load_into(module, sd)
