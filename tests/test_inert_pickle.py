"""Tensors read out of code-carrying pickles (torch.save with optimizer objects, NVIDIA persistence pickles)
without running anything: every payload here would run under a plain pickle.load, and none runs under ours."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch
from fakes.pickles import RunsCode, importable_persistence, persistence_pickle, persistent_network, writes_marker

from r3dp_core.errors import ModelFileError
from r3dp_core.inert_pickle import Inert, as_plain, load_inert, module_state_dict, persistent_state


def test_torch_save_with_optimizer_and_a_command_payload_loads_tensors_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    weight = torch.randn(4, 3)
    params = [torch.nn.Parameter(torch.randn(3))]
    checkpoint = {"audio_net": {"fc.weight": weight, "fc.bias": torch.arange(4, dtype=torch.int64)},
                  "null_vector": torch.randn(1, 1, 8), "epoch": 7,
                  "optimizer": torch.optim.Adam(params, lr=1e-3), "payload": RunsCode(writes_marker(marker))}
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)
    # the payload is live: an unrestricted load runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    loaded = load_inert(path)
    assert not marker.exists()
    torch.testing.assert_close(loaded["audio_net"]["fc.weight"], weight, atol=0, rtol=0)
    assert loaded["audio_net"]["fc.bias"].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(loaded["null_vector"], checkpoint["null_vector"], atol=0, rtol=0)
    assert loaded["epoch"] == 7
    assert isinstance(loaded["optimizer"], Inert) and loaded["optimizer"].name == "torch.optim.adam.Adam"
    assert isinstance(loaded["payload"], Inert) and loaded["payload"].name == "builtins.exec"
    assert loaded["payload"].args == (writes_marker(marker),)


def _persistence_pickle(marker) -> tuple[bytes, dict[str, torch.Tensor]]:
    """A generator with a mapping child, an ordinary torch module inside, a None parameter's absence and a
    non-persistent buffer, every persistent module carrying source that creates ``marker``."""
    plain = torch.nn.Linear(4, 2)       # an ordinary torch module inside, pickled the ordinary way
    tensors = {"w": torch.randn(3), "dataset_label_std": torch.ones(25), "mapping.fc0.weight": torch.randn(5, 4)}
    top = persistent_network(tensors, {"dataset_label_std"}, writes_marker(marker),
                             init_kwargs={"z_dim": 512, "rendering_kwargs": {"ray_start": 2.25, "box_warp": 1}},
                             non_persistent={"cache": torch.zeros(2)})
    top.meta["state"]["_modules"]["decoder"] = plain
    data = persistence_pickle({"G_ema": top, "augment_pipe": None})
    expected = {**tensors, "decoder.weight": plain.weight.detach(), "decoder.bias": plain.bias.detach()}
    return data, expected


def test_persistence_pickle_gives_the_state_dict_without_executing_its_source(tmp_path):
    marker = tmp_path / "source_ran"
    data, expected = _persistence_pickle(marker)
    path = tmp_path / "G.pkl"
    path.write_bytes(data)
    # the embedded source is live: with the persistence module importable, a plain load executes it
    with importable_persistence():
        pickle.loads(data)
    assert marker.exists()
    marker.unlink()

    loaded = load_inert(path)
    assert not marker.exists()
    generator = loaded["G_ema"]
    assert isinstance(generator, Inert) and generator.name == "torch_utils.persistence._reconstruct_persistent_obj"
    state_dict = module_state_dict(generator)
    assert set(state_dict) == set(expected)            # no None parameter, no non-persistent buffer
    for key, value in expected.items():
        torch.testing.assert_close(state_dict[key], value, atol=0, rtol=0)
    _, kwargs = persistent_state(generator)
    assert kwargs == {"z_dim": 512, "rendering_kwargs": {"ray_start": 2.25, "box_warp": 1}}


def test_a_plain_pickled_module_reads_as_its_state_dict(tmp_path):
    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(layer, protocol=2))
    state_dict = module_state_dict(load_inert(path))
    assert set(state_dict) == set(layer.state_dict())
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(state_dict[key], value, atol=0, rtol=0)


def test_dict_subclasses_are_read_as_plain_dicts(tmp_path):
    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = __name__, "EasyDict"
    globals()["EasyDict"] = EasyDict
    try:
        data = pickle.dumps({"kwargs": EasyDict(a=1, b=EasyDict(c=[1, 2]))}, protocol=4)
    finally:
        del globals()["EasyDict"]
    path = tmp_path / "d.pkl"
    path.write_bytes(data)
    assert as_plain(load_inert(path)) == {"kwargs": {"a": 1, "b": {"c": [1, 2]}}}


def test_a_tensor_reaching_past_its_stored_bytes_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    pkl = next(name for name in entries if name.endswith("data.pkl"))
    # size (4,) -> (400000,): same pickle length, a tensor far larger than its 16 stored bytes
    entries[pkl] = entries[pkl].replace(b"K\x04\x85", b"J\x80\x1a\x06\x00\x85")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="reaches element 399999 of a storage of 4"):
        load_inert(path)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(ModelFileError, match="refused: its pickle is malformed"):
        load_inert(path)


def test_a_memo_slot_no_pickler_writes_is_refused_before_unpickling(tmp_path):
    """LONG_BINPUT 0xFFFFFFF0 would make CPython allocate a 64 GiB memo table: refused from the opcodes alone."""
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x04N" + b"r\xf0\xff\xff\xff" + b".")
    with pytest.raises(ModelFileError, match="memo slot 4294967280 after 2 opcodes"):
        load_inert(path)
