"""Crafted motion ``.npy`` files are refused with a clear message and never crash the process (issue #23).

A pickle can ask numpy for an object dtype whose has-object flags it clears (BUILD state), and wrap 8 bytes of
its own in a 0-d array of it: numpy then reads those bytes as a pointer (segfault). Each crafted file is read
in a subprocess, so a crash shows as a signal in the return code instead of taking pytest down, and under a
4 GiB address-space limit, so a file that makes the reader allocate huge amounts fails instead of swapping.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from r3dp_core.pipeline.motion_files import load_official_motion, read_npy_dict

RECONSTRUCT = np.zeros(1).__reduce__()[0]   # numpy._core.multiarray._reconstruct (numpy.core in numpy 1.x)
SCALAR = np.float64(0).__reduce__()[0]      # numpy._core.multiarray.scalar
ADDRESS_SPACE_KIB = 4 << 20                 # 4 GiB; importing torch needs well under 1 GiB


class Reduce:
    """Pickles as ``func(*args)`` followed by BUILD ``state``: how the crafted files are written with Python's
    own pickler (every name they refer to is the real one, as an attacker's file would)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def dtype_state(order: str = "<", flags: int = 0, names=None, fields=None, size: int = -1):
    return (3, order, None, names, fields, size, -1, flags)


def dtype(typestring: str, state=None):
    return Reduce(np.dtype, (typestring, False, True), state or dtype_state())


def array(shape: tuple, of, data, fortran: bool = False):
    return Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, of, fortran, data))


#: The object dtype with its has-object flags cleared (numpy's own pickle of it has flags 63).
OBJECT_WITHOUT_FLAGS = dtype("O8", dtype_state("|", flags=0))


def container(content):
    """The 0-d object array ``np.save`` wraps a dict in, as numpy pickles it (its content as a list)."""
    return array((), dtype("O8", dtype_state("|", flags=63)), [content])


def write_npy(path: Path, payload: bytes) -> Path:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)
    return path


def code_that_writes(marker: Path) -> tuple:
    return os.system, (f"touch {marker}",)


# name -> (payload(marker) -> bytes, what the refusal says)
CRAFTED = {
    # the reported crash: a top-level 0-d array of the flag-less object dtype holding 8 raw bytes
    "object-dtype-without-flags": (lambda _: pickle.dumps(array((), OBJECT_WITHOUT_FLAGS, b"\x41" * 8), 2),
                                   r"builds an object array from raw bytes \(numpy would read them as memory "
                                   r"addresses\)"),
    "object-array-from-bytes-in-the-dict": (
        lambda _: pickle.dumps(container({"exp": array((4,), OBJECT_WITHOUT_FLAGS, b"\x41" * 32)}), 3),
        r"builds an object array from raw bytes"),
    "object-scalar-from-bytes": (
        lambda _: pickle.dumps(container({"exp": Reduce(SCALAR, (OBJECT_WITHOUT_FLAGS, b"\x41" * 8))}), 4),
        r"builds an object array or scalar from raw bytes"),
    "nested-object-array": (
        lambda _: pickle.dumps(np.array({"exp": np.array([np.zeros(3), None], dtype=object)}, dtype=object), 4),
        r"the dict holds an object array; only numeric, bool and text arrays are read"),
    "structured-array": (
        lambda _: pickle.dumps(np.array({"exp": np.zeros(4, dtype=[("a", "<f4"), ("b", "<f4")])}, dtype=object), 3),
        r"asks for the numpy dtype 'V8', which is not a plain number, bool or text type"),
    "void-scalar": (lambda _: pickle.dumps(np.array({"exp": np.zeros(1, dtype=[("a", "<f8")])[0]}, dtype=object), 4),
                    r"asks for the numpy dtype 'V8'"),
    "fields-in-a-float-dtype-state": (
        lambda _: pickle.dumps(container({"exp": array(
            (1,), dtype("f8", dtype_state(names=("a",), fields={"a": (OBJECT_WITHOUT_FLAGS, 0)}, size=8, flags=63)),
            b"\0" * 8)}), 3),
        r"gives the dtype 'f8' fields or a sub-array \(a structured dtype\)"),
    "shape-beyond-the-data": (lambda _: pickle.dumps(container({"exp": array((128, 64), dtype("f4"), bytes(16))}), 4),
                              r"an array of shape \(128, 64\) and dtype float32 needs 32768 bytes, but the file "
                              r"gives 16"),
    "huge-shape": (lambda _: pickle.dumps(container({"exp": array((10**9, 64), dtype("f4"), bytes(16))}), 4),
                   r"an array's shape \(1000000000, 64\) is larger than the whole file \(\d+ bytes\)"),
    "empty-array-of-absurd-shape": (lambda _: pickle.dumps(container({"exp": array((0, 2**40), dtype("f4"), b"")}), 4),
                                    r"an array's shape \(0, 1099511627776\) is larger than the whole file"),
    # handwritten opcodes: PROTO 2, NONE, LONG_BINPUT 0xFFFFFFF0 (a 64 GiB memo table), STOP
    "huge-memo-slot": (lambda _: b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b".",
                       r"stores to memo slot 4294967280 after 2 opcodes, which no pickler writes"),
    # PROTO 4, BINBYTES8 declaring 1 TiB of which 3 bytes follow
    "declared-length-beyond-the-file": (lambda _: b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.",
                                        r"pickle is malformed \(expected 1099511627776 bytes in a bytes8, but only "),
    "os-system": (lambda marker: pickle.dumps(container({"exp": Reduce(*code_that_writes(marker))}), 3),
                  r"refers to (posix|nt)\.system, which a coefficient file never needs; it was not loaded \(a pickle "
                  r"can run code\)"),
    "builtins-eval": (lambda marker: pickle.dumps(container({"exp": Reduce(eval, (f"open({str(marker)!r}, 'w')",))}),
                                                  2),
                      r"refers to (__builtin__|builtins)\.eval, which a coefficient file never needs"),
    "a-dict-without-the-array-around-it": (lambda _: pickle.dumps({"exp": np.zeros((2, 64))}, 4),
                                           r"is not the 0-d object array that np.save writes for a dict"),
    "invalid-unicode-scalar": (
        lambda _: pickle.dumps(container({"exp": Reduce(SCALAR, (dtype("U1", dtype_state(size=4)), b"\xff" * 4))}), 4),
        r"holds unicode text with invalid code points"),
}

LOADER = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_KIB << 10}, {ADDRESS_SPACE_KIB << 10}))
from r3dp_core.errors import InputError
from r3dp_core.pipeline.motion_files import load_motion_file
try:
    motion = load_motion_file(sys.argv[1])
except InputError as exc:
    print(exc)
    sys.exit(3)
print(f"loaded {{motion.num_frames}} frames")
"""


def _crafted(case: str, tmp_path: Path) -> tuple[Path, Path, str]:
    build, problem = CRAFTED[case]
    marker = tmp_path / "code-ran"
    return write_npy(tmp_path / f"{case}.npy", build(marker)), marker, problem


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "passive", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_file_is_refused_without_crashing(case, tmp_path):
    path, marker, problem = _crafted(case, tmp_path)
    result = _run([sys.executable, "-c", LOADER, str(path)], tmp_path)
    assert result.returncode == 3, f"exit {result.returncode} (a negative code is a signal)\n{result.stdout}" \
                                   f"{result.stderr}"
    message = result.stdout.strip()
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert re.search(problem, message), message
    assert not marker.exists()


#: Through `r3dp generate` (each run imports the whole CLI, so a sample: the reported crash, the other ways to an
#: object array, a memory bomb and pickled code; every case goes through the same loader and error path)
CLI_CASES = ["object-dtype-without-flags", "object-array-from-bytes-in-the-dict", "object-scalar-from-bytes",
             "nested-object-array", "huge-memo-slot", "os-system"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_generate_refuses_the_crafted_file_with_exit_2(case, tmp_path, shared_dir):
    path, marker, problem = _crafted(case, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "models").mkdir()
    # --dry-run reads the motion file right after the photo (before any model), as the real run does
    command = ["bash", "-c", f'ulimit -v {ADDRESS_SPACE_KIB} && exec "$0" "$@"', sys.executable, "-m",
               "r3dp_core.cli", "generate", "--image", str(shared_dir / "testdata" / "astronaut_512.png"),
               "--out", str(out_dir / "clip.mp4"), "--models-dir", str(tmp_path / "models"), "--motion", str(path),
               "--dry-run"]
    result = _run(command, tmp_path)
    message = result.stderr.strip()
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert message.startswith(f"r3dp generate: error: {path}: ") and "\n" not in message, message
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert re.search(problem, message), message
    assert list(out_dir.iterdir()) == [] and not marker.exists()


# ------------------------------------------------------------------------------------------ legit files still load

class Numpy1Pickler(pickle._Pickler):
    """Python's pure pickler, naming numpy's array functions under ``module``: ``numpy.core.multiarray`` is how
    numpy 1.x writes them (GLOBAL below protocol 4, STACK_GLOBAL from 4, as Python's pickler does)."""

    def __init__(self, file, protocol: int, module: str):
        super().__init__(file, protocol)
        self.module = module

    def save_global(self, obj, name=None):
        if obj is RECONSTRUCT or obj is SCALAR:
            if self.proto >= 4:
                self.save(self.module)
                self.save(obj.__name__)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{self.module}\n{obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def legit_content() -> dict:
    rng = np.random.default_rng(3)
    loop = ["again"]
    loop.append(loop)
    return {"exp": rng.normal(size=(6, 64)).astype(np.float32),
            "euler": np.asfortranarray(rng.normal(size=(6, 3))),                    # float64, Fortran order
            "trans": rng.normal(size=(6, 3)).astype(">f4"),                        # big-endian
            "id": rng.normal(size=(1, 80)).astype(np.float16),
            "frames": np.arange(6, dtype=np.int64), "valid": np.array([True, False, True]),
            "names": np.array(["ab", "cde"]), "raw": np.array([b"x", b"yz"]), "none_yet": np.zeros((0, 64), np.float32),
            "fps": np.float32(25.0), "count": np.int64(6), "tag": np.str_("talk"), "flag": np.bool_(True),
            "meta": {"source": "official tools", "sizes": (6, 64), "blob": b"\x00\xff", "nothing": None},
            "loop": loop}


def _assert_same(loaded, expected):
    if isinstance(expected, np.ndarray):
        assert isinstance(loaded, np.ndarray) and loaded.dtype == expected.dtype and loaded.shape == expected.shape
        assert np.array_equal(loaded, expected) and loaded.flags.writeable
        assert loaded.flags.f_contiguous == expected.flags.f_contiguous
    elif isinstance(expected, np.generic):
        assert type(loaded) is type(expected) and loaded == expected and loaded.dtype == expected.dtype
    elif isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key in expected:
            _assert_same(loaded[key], expected[key])
    else:
        assert loaded == expected


@pytest.mark.parametrize("module", ["numpy._core.multiarray", "numpy.core.multiarray"])
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_official_dicts_of_numpy_1_and_2_load_at_every_protocol(protocol, module, tmp_path):
    content = legit_content()
    buffer = io.BytesIO()
    Numpy1Pickler(buffer, protocol, module).dump(np.array(content, dtype=object))
    payload = buffer.getvalue()
    assert f"{module}\n_reconstruct".encode() in payload or module.encode() + b"\x94" in payload
    assert (b"_codecs\nencode" in payload) == (protocol == 2)  # protocol 2 stores bytes as _codecs.encode(text)
    path = write_npy(tmp_path / "official.npy", payload)
    loaded = read_npy_dict(path)
    loop = loaded.pop("loop")
    assert loop[0] == "again" and loop[1] is loop  # a self-referencing list stays one
    content.pop("loop")
    _assert_same(loaded, content)
    motion = load_official_motion(path)
    assert torch.equal(motion.exp, torch.from_numpy(content["exp"]))
    assert torch.equal(motion.euler, torch.from_numpy(content["euler"].astype(np.float32)))
    assert torch.equal(motion.trans, torch.from_numpy(content["trans"].astype(np.float32)))


def test_np_save_of_the_official_dict_loads(tmp_path):
    content = legit_content()
    content.pop("loop")
    np.save(tmp_path / "saved.npy", content, allow_pickle=True)
    _assert_same(read_npy_dict(tmp_path / "saved.npy"), content)
