"""Tensors read out of code-carrying pickles (torch.save with optimizer objects, NVIDIA persistence pickles)
without running anything: every payload here would run under a plain pickle.load, and none runs under ours."""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
import zipfile

import pytest
import torch

from r3dp_core.errors import ModelFileError
from r3dp_core.inert_pickle import Inert, as_plain, load_inert, module_state_dict, persistent_state


class _RunsCommand:
    """Pickles as ``os.system(command)``: whoever unpickles it runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _touch(marker) -> str:
    return f"touch {marker}"


def test_torch_save_with_optimizer_and_a_command_payload_loads_tensors_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    weight = torch.randn(4, 3)
    params = [torch.nn.Parameter(torch.randn(3))]
    checkpoint = {"audio_net": {"fc.weight": weight, "fc.bias": torch.arange(4, dtype=torch.int64)},
                  "null_vector": torch.randn(1, 1, 8), "epoch": 7,
                  "optimizer": torch.optim.Adam(params, lr=1e-3), "payload": _RunsCommand(_touch(marker))}
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
    assert isinstance(loaded["payload"], Inert) and loaded["payload"].name in ("posix.system", "nt.system")
    assert loaded["payload"].args == (_touch(marker),)


def _persistence_module(marker) -> types.ModuleType:
    """A stand-in for NVIDIA's torch_utils.persistence: reconstructing an object executes its stored source."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(compile(meta["module_src"], "<persistent>", "exec"), {})  # noqa: S102 — what the real one does
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    return module


class _Persistent:
    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def _module_state(params: dict, buffers: dict, modules: dict, non_persistent=(), init_kwargs=None) -> dict:
    return {"training": False, "_parameters": collections.OrderedDict(params),
            "_buffers": collections.OrderedDict(buffers), "_non_persistent_buffers_set": set(non_persistent),
            "_modules": collections.OrderedDict(modules), "_init_args": (), "_init_kwargs": init_kwargs or {}}


def _persistence_pickle(tmp_path, marker) -> tuple[bytes, dict[str, torch.Tensor]]:
    module = _persistence_module(marker)
    sys.modules["torch_utils"] = types.ModuleType("torch_utils")
    sys.modules["torch_utils.persistence"] = module
    try:
        source = f"open({str(marker)!r}, 'w').write('source ran')\nclass TriPlaneGenerator: pass\n"
        child = _Persistent(module._reconstruct_persistent_obj, {
            "type": "class", "version": 6, "module_src": source, "class_name": "MappingNetwork",
            "state": _module_state({"fc0.weight": torch.nn.Parameter(torch.randn(5, 4))}, {}, {})})
        plain = torch.nn.Linear(4, 2)       # an ordinary torch module inside, pickled the ordinary way
        top = _Persistent(module._reconstruct_persistent_obj, {
            "type": "class", "version": 6, "module_src": source, "class_name": "TriPlaneGenerator",
            "state": _module_state(
                {"w": torch.nn.Parameter(torch.randn(3)), "unused": None},
                {"dataset_label_std": torch.ones(25), "cache": torch.zeros(2)},
                {"mapping": child, "decoder": plain}, non_persistent={"cache"},
                init_kwargs={"z_dim": 512, "rendering_kwargs": {"ray_start": 2.25, "box_warp": 1}})})
        data = pickle.dumps({"G_ema": top, "augment_pipe": None}, protocol=4)
    finally:
        del sys.modules["torch_utils.persistence"], sys.modules["torch_utils"]
    expected = {"w": top.meta["state"]["_parameters"]["w"].detach(),
                "dataset_label_std": torch.ones(25),
                "mapping.fc0.weight": child.meta["state"]["_parameters"]["fc0.weight"].detach(),
                "decoder.weight": plain.weight.detach(), "decoder.bias": plain.bias.detach()}
    return data, expected


def test_persistence_pickle_gives_the_state_dict_without_executing_its_source(tmp_path):
    marker = tmp_path / "source_ran"
    data, expected = _persistence_pickle(tmp_path, marker)
    path = tmp_path / "G.pkl"
    path.write_bytes(data)
    # the embedded source is live: with the persistence module importable, a plain load executes it
    sys.modules["torch_utils"] = types.ModuleType("torch_utils")
    sys.modules["torch_utils.persistence"] = _persistence_module(marker)
    try:
        pickle.loads(data)
    finally:
        del sys.modules["torch_utils.persistence"], sys.modules["torch_utils"]
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
