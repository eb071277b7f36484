"""`r3dp models fetch`: downloads against a local HTTP server on 127.0.0.1 (resume, a complete partial answered
with 416, wrong sha256, timeouts, 404) and HuBERT and wav2vec2 through a fake ``snapshot_download``. Nothing
leaves the machine."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r3dp_core import cli, model_files
from r3dp_core.errors import ModelFileError
from r3dp_core.model_files import BY_KEY, HUBERT_REVISION, DownloadError, download, fetch_hub_folder

PAYLOAD = bytes(range(256)) * 40 + b"tail"   # 10,244 bytes


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` (name → bytes) with HTTP Range support; records every request's Range header."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.delay_s = 0.0
        self.cut_after: int | None = None   # send only this many bytes of a full response, then close

    def handle_error(self, request, client_address):
        # the client hanging up (the timeout test) is expected; anything else is a bug in the test server
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        server: FileServer = self.server
        server.ranges.append(self.headers.get("Range"))
        time.sleep(server.delay_s)
        data = server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            self.wfile.write(body[: server.cut_after])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = FileServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _spec(server: FileServer, name: str = "file.bin", data: bytes = PAYLOAD, **changes) -> model_files.ModelFile:
    server.files[name] = data
    fields = {"url": f"{server.url}/{name}", "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": None,
              "relpath": f"sub/{name}"}
    return dataclasses.replace(BY_KEY["bfm_left_eye_faces"], **{**fields, **changes})


def test_download_verifies_and_reports_progress(server, tmp_path):
    spec = _spec(server)
    seen = []
    path = download(spec, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "sub" / "file.bin" and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert server.ranges == [None]
    assert not (tmp_path / "sub" / "file.bin.partial").exists()


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    spec = _spec(server)
    server.cut_after = 3000
    naps = []
    with pytest.raises(DownloadError, match="after 2 attempts.*connection"):
        download(spec, tmp_path, attempts=2, backoff=0.5, sleep=naps.append)
    partial = tmp_path / "sub" / "file.bin.partial"
    assert naps == [0.5]                                          # back-off between the two attempts
    assert partial.read_bytes() == PAYLOAD[:6000]                 # each attempt added the 3000 bytes it got
    assert server.ranges == [None, "bytes=3000-"]
    server.cut_after = None
    assert download(spec, tmp_path).read_bytes() == PAYLOAD       # the next run finishes it
    assert server.ranges[-1] == "bytes=6000-" and not partial.exists()


def test_a_complete_partial_answered_with_416_is_verified_and_moved_into_place(server, tmp_path):
    spec = _spec(server)
    partial = tmp_path / "sub" / "file.bin.partial"
    partial.parent.mkdir()
    partial.write_bytes(PAYLOAD)
    path = download(spec, tmp_path, sleep=pytest.fail)  # no retry: the 416 means "already complete"
    assert path.read_bytes() == PAYLOAD and not partial.exists()
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_a_complete_partial_with_the_wrong_content_is_removed(server, tmp_path):
    spec = _spec(server)
    partial = tmp_path / "sub" / "file.bin.partial"
    partial.parent.mkdir()
    partial.write_bytes(b"x" * len(PAYLOAD))
    with pytest.raises(ModelFileError, match=f"checksum mismatch.*expected {spec.sha256}.*r3dp models fetch"):
        download(spec, tmp_path)
    assert not partial.exists() and not (tmp_path / "sub" / "file.bin").exists()


def test_a_partial_longer_than_the_file_starts_over(server, tmp_path):
    spec = _spec(server)
    partial = tmp_path / "sub" / "file.bin.partial"
    partial.parent.mkdir()
    partial.write_bytes(PAYLOAD + b"extra")
    assert download(spec, tmp_path, sleep=lambda s: None).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_wrong_sha256_and_wrong_size_are_refused(server, tmp_path):
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        download(_spec(server, sha256="0" * 64), tmp_path)
    assert not any((tmp_path / "sub").iterdir())
    with pytest.raises(ModelFileError, match=f"has {len(PAYLOAD)} bytes, expected 99"):
        download(_spec(server, size_bytes=99), tmp_path)
    assert not any((tmp_path / "sub").iterdir())


def test_a_stalled_host_times_out_and_names_the_manual_step(server, tmp_path):
    spec = _spec(server)
    server.delay_s = 2.0
    naps = []
    started = time.perf_counter()
    with pytest.raises(DownloadError) as error:
        download(spec, tmp_path, timeout=0.3, attempts=2, backoff=0.1, sleep=naps.append)
    assert time.perf_counter() - started < 1.9   # it did not wait for the server
    message = str(error.value)
    assert "after 2 attempts" in message and "timed out" in message
    assert str(tmp_path / "sub" / "file.bin") in message and "r3dp models import PATH" in message
    assert naps == [0.1]


def test_a_missing_file_fails_at_once_with_the_manual_step(server, tmp_path):
    spec = _spec(server)
    del server.files["file.bin"]
    with pytest.raises(DownloadError, match="HTTP 404.*r3dp models import PATH"):
        download(spec, tmp_path, sleep=pytest.fail)
    assert server.ranges == [None]


def test_an_unreachable_host_gives_one_clear_message(tmp_path):
    spec = dataclasses.replace(BY_KEY["face_landmarker"], url="http://127.0.0.1:9/face_landmarker.task")
    with pytest.raises(DownloadError) as error:
        download(spec, tmp_path, attempts=2, sleep=lambda s: None)
    message = str(error.value)
    assert "offline, proxy or firewall" in message and str(tmp_path / "face_landmarker.task") in message


# ---------------------------------------------------------------------------------------------------- HuBERT

def _fake_snapshot(calls: list):
    configs = {"facebook/hubert-large-ls960-ft": {"model_type": "hubert", "hidden_size": 1024},
               "cpierse/wav2vec2-large-xlsr-53-esperanto": {"model_type": "wav2vec2", "vocab_size": 44}}

    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        calls.append((repo_id, revision, local_dir))
        folder = Path(local_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(configs[repo_id]))
        (folder / "model.safetensors").write_bytes(b"weights")
        return local_dir

    return snapshot_download


def test_hubert_is_fetched_into_its_slot_and_checked(tmp_path):
    calls = []
    target = fetch_hub_folder("hubert", tmp_path, snapshot_download=_fake_snapshot(calls))
    assert target == tmp_path / "hubert" / "hubert-large-ls960-ft"
    assert calls == [("facebook/hubert-large-ls960-ft", HUBERT_REVISION, str(target))]
    assert BY_KEY["hubert"].find(tmp_path) == target


def test_hubert_fetch_refuses_another_model_and_explains_offline(tmp_path):
    def wrong(repo_id, revision, local_dir, allow_patterns):
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "hidden_size": 1024}))

    with pytest.raises(ModelFileError, match="holds a 'wav2vec2' model, not HuBERT"):
        fetch_hub_folder("hubert", tmp_path / "a", snapshot_download=wrong)

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    with pytest.raises(DownloadError, match="couldn't connect.*hf download facebook/hubert-large-ls960-ft.*"
                                            "r3dp models import PATH"):
        fetch_hub_folder("hubert", tmp_path / "b", snapshot_download=offline)


def test_models_fetch_gets_every_downloadable_file_and_lists_the_manual_steps(server, tmp_path, shared_dir, capsys):
    contents = {"bfm_left_eye_faces.npy": (shared_dir / "official_data" / "bfm_left_eye_faces.npy").read_bytes(),
                "bfm_right_eye_faces.npy": (shared_dir / "official_data" / "bfm_right_eye_faces.npy").read_bytes(),
                "face_landmarker.task": (shared_dir / "models" / "face_landmarker.task").read_bytes(),
                "selfie_multiclass_256x256.tflite": b"\0\0\0\0TFL3" + bytes(100)}
    server.files.update(contents)

    def local(request, timeout):  # every official address is answered by the local server
        redirected = urllib.request.Request(f"{server.url}/{request.full_url.rsplit('/', 1)[1]}",
                                            headers=dict(request.header_items()))
        return urllib.request.urlopen(redirected, timeout=timeout)

    calls = []
    assert cli._fetch_models(tmp_path, opener=local, snapshot_download=_fake_snapshot(calls)) == 0
    out = capsys.readouterr().out
    for key in ("bfm_left_eye_faces", "bfm_right_eye_faces", "face_landmarker", "segmenter", "hubert"):
        assert BY_KEY[key].find(tmp_path) is not None, key
    # Talk3D's files only on request: Real3D-Portrait never reads them
    assert [(repo, revision) for repo, revision, _ in calls] == [("facebook/hubert-large-ls960-ft", HUBERT_REVISION)]
    assert "wav2vec2             skipped (only Talk3D needs it: `r3dp models fetch --talk3d`)" in out
    assert (tmp_path / "face_landmarker.task").read_bytes() == contents["face_landmarker.task"]
    assert "manual step" in out and "r3dp models import PATH" in out
    assert "eg3d_ffhq            manual step" not in out

    # the LPIPS files have published digests this local server cannot match: already in place here
    for key in ("lpips_alexnet", "lpips_alex"):
        (tmp_path / BY_KEY[key].relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / BY_KEY[key].relpath).write_bytes(b"in place")
    assert cli._fetch_models(tmp_path, opener=local, snapshot_download=_fake_snapshot(calls), talk3d=True) == 0
    out = capsys.readouterr().out
    assert calls[-1][:2] == ("cpierse/wav2vec2-large-xlsr-53-esperanto", "main")
    assert BY_KEY["wav2vec2"].find(tmp_path) is not None
    assert "eg3d_ffhq            manual step: EG3D's pretrained models on NVIDIA NGC" in out
    assert "arcface_ir_se50      manual step: the pSp/e4e release" in out
    assert "wav2lip_syncnet      manual step: the Wav2Lip repository" in out
    missing = {spec.key for spec, found in model_files.status(tmp_path) if found is None}
    assert missing == {"video_model", "audio_model", "bfm", "bfm_mediapipe_index", "eg3d_ffhq", "arcface_ir_se50",
                       "wav2lip_syncnet"}


# ------------------------------------------------------------------------------- issue #23: stale partials

def test_a_stale_partial_without_a_digest_is_restarted_not_resumed(server, tmp_path):
    spec = _spec(server, sha256=None)          # like the segmenter: no published digest, size from the server
    partial = tmp_path / "sub" / "file.bin.partial"
    partial.parent.mkdir()
    partial.write_bytes(b"stale bytes of some other file")
    assert download(spec, tmp_path, sleep=pytest.fail).read_bytes() == PAYLOAD
    assert server.ranges == [None]             # asked for the whole file, not for the rest after the stale bytes
    assert not partial.exists()


def _redirect_to(server: FileServer):
    def local(request, timeout):  # every official address is answered by the local server
        redirected = urllib.request.Request(f"{server.url}/{request.full_url.rsplit('/', 1)[1]}",
                                            headers=dict(request.header_items()))
        return urllib.request.urlopen(redirected, timeout=timeout)

    return local


def test_one_failed_download_does_not_stop_fetch(server, tmp_path, shared_dir, capsys, monkeypatch):
    monkeypatch.setattr(model_files, "DOWNLOAD_BACKOFF_S", 0.0)
    server.files.update({
        "bfm_right_eye_faces.npy": (shared_dir / "official_data" / "bfm_right_eye_faces.npy").read_bytes(),
        "bfm_left_eye_faces.npy": b"not the eye file",                  # wrong size
        "selfie_multiclass_256x256.tflite": b"\0\0\0\0TFL3" + bytes(100),
    })                                                                   # face_landmarker.task: HTTP 404

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    assert cli._fetch_models(tmp_path, opener=_redirect_to(server), snapshot_download=offline, talk3d=True) == 1
    captured = capsys.readouterr()
    for key in ("bfm_right_eye_faces", "segmenter"):                     # fetched after the first failure
        assert BY_KEY[key].find(tmp_path) is not None, key
    failures = captured.err[captured.err.index("6 downloads failed"):]
    assert "lpips_alexnet" in failures and "lpips_alex:" in failures       # HTTP 404 from the local server
    assert "bfm_left_eye_faces" in failures and "has 16 bytes, expected 4680" in failures
    assert "face_landmarker" in failures and "HTTP 404" in failures
    assert "hubert" in failures and "couldn't connect" in failures
    assert "Could not download wav2vec2 (cpierse/wav2vec2-large-xlsr-53-esperanto)" in failures
    assert cli.main(["models", "--models-dir", str(tmp_path)]) == 0     # the list still works afterwards
