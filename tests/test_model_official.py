"""`r3dp models fetch --official` against a local imitation of Google Drive on 127.0.0.1 ($R3DP_GDRIVE_URL): files
served directly or behind the large-file interstitial (a form with confirm and uuid), the quota page (as HTTP 200
and 403), a sign-in page, HTTP 404, dropped connections. The files are served under the official ids; their
content is built here (the fake release of test_model_import). Nothing leaves the machine.
"""

from __future__ import annotations

import io
import shutil
import sys
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_model_import import RELEASE, bfm_folder, official_release, write_hubert, write_wav2vec2  # noqa: F401

from r3dp_core import cli, gdrive, model_files
from r3dp_core.checkpoint import load_checkpoint
from r3dp_core.errors import InputError
from r3dp_core.gdrive import BFM, CHECKPOINTS, DriveQuotaError, download_drive_file, filename_from_disposition
from r3dp_core.model_files import DownloadError

UUID = "5f0c1f4e-7a3b-4c55-9d1e-2b8f6a0c9e11"
CKPT_ZIP, PRETRAINED_ZIP = CHECKPOINTS.file_ids
INTERSTITIAL = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p><a href="/open?id={id}">{name}</a> (612M) is too large for Google to scan for viruses. Would you still like to
download this file?</p>
<form id="download-form" action="{base}/download" method="get">
<input type="submit" id="uc-download-link" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>
</div></body></html>"""
QUOTA = """<html><head><title>Google Drive - Quota exceeded</title></head><body><div class="uc-main">
<p class="uc-error-caption">Sorry, you can't view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing
the file again later.</p></div></body></html>"""
SIGN_IN = "<html><head><title>Google Drive: Sign-in</title></head><body>Sign in to continue</body></html>"


class DriveImitation(ThreadingHTTPServer):
    """``/download?id=...``: ``files[id] = (name, data, mode)``, mode "direct", "interstitial", "quota",
    "quota403" or "signin"; an unknown id is HTTP 404. Records ``(id, query, Range)`` of every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), DriveHandler)
        self.files: dict[str, tuple[str, bytes, str]] = {}
        self.requests: list[tuple[str, dict, str | None]] = []
        self.cut_first: int | None = None   # the first file response sends this many bytes, then drops

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requested_ids(self) -> list[str]:
        return list(dict.fromkeys(file_id for file_id, _, _ in self.requests))


class DriveHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _html(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        server: DriveImitation = self.server
        parts = urllib.parse.urlsplit(self.path)
        query = {key: values[0] for key, values in urllib.parse.parse_qs(parts.query).items()}
        file_id = query.get("id", "")
        server.requests.append((file_id, query, self.headers.get("Range")))
        entry = server.files.get(file_id) if parts.path == "/download" else None
        if entry is None:
            self._html(404, "<html><head><title>Not Found</title></head><body>Error 404</body></html>")
            return
        name, data, mode = entry
        if mode == "quota":
            self._html(200, QUOTA)
            return
        if mode == "quota403":
            self._html(403, QUOTA)
            return
        if mode == "signin":
            self._html(200, SIGN_IN)
            return
        cookie = f"download_warning_{file_id}=t"
        if mode == "interstitial" and (query.get("uuid") != UUID or cookie not in self.headers.get("Cookie", "")):
            body = INTERSTITIAL.format(id=file_id, name=name, base=server.url, uuid=UUID).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Set-Cookie", f"{cookie}; Path=/")   # the confirmed request must carry it back
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition",
                         f"attachment; filename=\"{name}\"; filename*=UTF-8''{urllib.parse.quote(name)}")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_first is not None:
            self.wfile.write(body[: server.cut_first])
            server.cut_first = None
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def drive(monkeypatch):
    httpd = DriveImitation()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(gdrive.DRIVE_URL_ENV, httpd.url)
    monkeypatch.setattr(model_files, "DOWNLOAD_BACKOFF_S", 0.0)
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def models(tmp_path, shared_dir) -> Path:
    """A models folder holding every file plain `r3dp models fetch` gets, so only Drive is asked."""
    folder = tmp_path / "models"
    (folder / "BFM").mkdir(parents=True)
    for name in ("bfm_left_eye_faces.npy", "bfm_right_eye_faces.npy"):
        shutil.copy(shared_dir / "official_data" / name, folder / "BFM" / name)
    shutil.copy(shared_dir / "models" / "face_landmarker.task", folder / "face_landmarker.task")
    (folder / "selfie_multiclass_256x256.tflite").write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    write_hubert(folder / "hubert" / "hubert-large-ls960-ft")
    write_wav2vec2(folder / "wav2vec2" / "wav2vec2-large-xlsr-53-esperanto")
    return folder


@pytest.fixture
def release(tmp_path, shared_dir, parity_dir, bfm_folder) -> Path:  # noqa: F811 - the fixture is used through it
    """The official checkpoints folder and BFM bundle, as they unpack (built by test_model_import)."""
    return official_release(tmp_path / "download", shared_dir, parity_dir, bfm_folder)


def _zip_of(folder: Path, under: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(under).as_posix())
    return buffer.getvalue()


def _missing(models: Path) -> set[str]:
    """Missing slots but the files only Talk3D's personalisation uses (the EG3D generator and the loss networks:
    `fetch --official` never fetches them)."""
    return {spec.key for spec, found in model_files.status(models)
            if found is None and "personalise" not in spec.required_for}


def _serve_official(drive: DriveImitation, release: Path) -> None:
    drive.files[CKPT_ZIP] = ("240210_real3dportrait_orig.zip", _zip_of(release / RELEASE, release), "interstitial")
    drive.files[PRETRAINED_ZIP] = ("pretrained_ckpts.zip", _zip_of(release / "checkpoints" / "pretrained_ckpts",
                                                                    release), "interstitial")
    bfm = release / "deep_3drecon" / "BFM"
    names = ["01_MorphableModel.mat", "BFM_model_front.mat", "index_mp468_from_mesh35709.npy", "BFM_exp_idx.mat",
             "BFM_front_idx.mat", "Exp_Pca.bin", "facemodel_info.mat", "std_exp.txt"]
    for file_id, name in zip(BFM.file_ids, names):
        data = (bfm / name).read_bytes() if (bfm / name).is_file() else b"another BFM bundle file"
        drive.files[file_id] = (name, data, "interstitial" if name == "BFM_model_front.mat" else "direct")


def test_fetch_official_places_the_checkpoints_and_the_bfm(drive, release, models, capsys):
    _serve_official(drive, release)
    assert _missing(models) == {"video_model", "audio_model", "bfm", "bfm_mediapipe_index"}
    assert cli.main(["models", "fetch", "--official", "--accept-licenses", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "NON-COMMERCIAL RESEARCH" in out and "github.com/yerfor/Real3DPortrait" in out   # the terms were shown
    assert _missing(models) == set()
    video = load_checkpoint(models / "secc2plane_torso" / "model_ckpt_steps_100000.ckpt", expected="secc2plane_torso")
    assert len(video.state_dict) == 1030 and video.config["triplane_hid_dim"] == 32     # config.yaml came along
    bfm = release / "deep_3drecon" / "BFM"
    assert (models / "BFM" / "BFM_model_front.mat").read_bytes() == (bfm / "BFM_model_front.mat").read_bytes()
    # the interstitial was answered with its form (confirm + uuid)
    first, second = [query for file_id, query, _ in drive.requests if file_id == CKPT_ZIP]
    assert first == {"id": CKPT_ZIP, "export": "download", "confirm": "t"} and second["uuid"] == UUID
    # a file whose name r3dp does not use is not downloaded; a folder's remaining files once its slots are filled
    assert "01_MorphableModel.mat (Drive file 1SPM3IHsyNAaVMwqZZGV6QVaV7I2Hly0v): skipped, r3dp does not use" in out
    assert drive.requested_ids() == [CKPT_ZIP, *BFM.file_ids[:3]]
    assert "secc2plane_torso" in out and "head-only" not in out.split("skipped")[0]
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".")]
    assert leftovers == []                                             # downloads and extractions are gone
    # a second run has nothing to do and asks nothing
    drive.requests.clear()
    assert cli.main(["models", "fetch", "--official", "--models-dir", str(models)]) == 0
    assert drive.requests == [] and "NON-COMMERCIAL" not in capsys.readouterr().out


def test_quota_404_and_a_wrong_file_are_listed_and_the_rest_is_fetched(drive, release, models, capsys):
    _serve_official(drive, release)
    drive.files[CKPT_ZIP] = ("240210_real3dportrait_orig.zip", b"", "quota")
    del drive.files[PRETRAINED_ZIP]                                    # HTTP 404
    drive.files[BFM.file_ids[1]] = ("BFM_model_front.mat", b"garbage, not a .mat file", "interstitial")
    assert cli.main(["models", "fetch", "--official", "--accept-licenses", "--models-dir", str(models)]) == 1
    captured = capsys.readouterr()
    assert _missing(models) == {"video_model", "audio_model", "bfm"}    # the MediaPipe index was placed
    failures = captured.err[captured.err.index("3 downloads failed"):]
    quota = next(line for line in failures.splitlines() if CKPT_ZIP in line)
    assert "too many users have viewed or downloaded it recently" in quota
    assert CHECKPOINTS.folder_url in quota and BFM.folder_url in quota and "r3dp models import PATH" in quota
    assert f"no public file {PRETRAINED_ZIP} (HTTP 404)" in failures
    assert "BFM_model_front.mat" in failures and "refused" in failures
    # the six other BFM files were judged by their names alone
    assert captured.out.count("skipped, r3dp does not use this file") == 6
    assert not (models / gdrive.STAGING_FOLDER).exists()


def test_the_terms_must_be_accepted_before_anything_is_downloaded(drive, release, models, capsys, monkeypatch):
    _serve_official(drive, release)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    argv = ["models", "fetch", "--official", "--models-dir", str(models)]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))                  # a script: no terminal
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "NON-COMMERCIAL RESEARCH" in captured.out and "pass --accept-licenses" in captured.err
    monkeypatch.setattr(sys, "stdin", Terminal("no\n"))
    assert cli.main(argv) == 2
    assert "not accepted, so nothing was downloaded" in capsys.readouterr().err
    assert drive.requests == [] and _missing(models) == {"video_model", "audio_model", "bfm", "bfm_mediapipe_index"}
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert cli.main(argv) == 0 and _missing(models) == set()
    assert cli.main(["models", "list", "--official", "--models-dir", str(models)]) == 2
    assert "belong to `r3dp models fetch`" in capsys.readouterr().err


def test_an_archive_bomb_from_drive_is_refused_by_the_capped_extraction(drive, release, models, capsys):
    _serve_official(drive, release)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("checkpoints/zeros.bin", bytes(3_000_000))
    drive.files[CKPT_ZIP] = ("240210_real3dportrait_orig.zip", buffer.getvalue(), "direct")
    drive.files[PRETRAINED_ZIP] = ("pretrained_ckpts.zip", buffer.getvalue(), "direct")
    assert cli.main(["models", "fetch", "--official", "--accept-licenses", "--models-dir", str(models),
                     "--max-extracted-size", "1M", "--max-compression-ratio", "100000"]) == 1
    err = capsys.readouterr().err
    assert err.count("past the 1.0 MB limit") == 2 and "2 downloads failed" in err
    assert _missing(models) == {"video_model", "audio_model"}
    assert [p.name for p in models.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------------ the Drive protocol

def test_content_disposition_names_and_unsafe_names():
    assert filename_from_disposition("attachment; filename=\"a.zip\"; filename*=UTF-8''b%C3%A9.zip") == "bé.zip"
    assert filename_from_disposition('attachment; filename="x y.mat"') == "x y.mat"
    assert filename_from_disposition("inline") is None and filename_from_disposition(None) is None
    assert gdrive.safe_file_name("../../etc/evil.zip", "ID") == "evil.zip"
    for bad in ("..", "", ".bashrc", "a\nb"):
        with pytest.raises(DownloadError, match="cannot be used as a file name"):
            gdrive.safe_file_name(bad, "ID")


def test_a_stale_partial_is_restarted_and_a_dropped_connection_resumed(drive, tmp_path):
    data = bytes(range(256)) * 100
    drive.files["ID"] = ("file.bin", data, "interstitial")
    (tmp_path / "ID.partial").write_bytes(b"stale bytes")
    drive.cut_first = 5000
    seen = []
    got = download_drive_file("ID", tmp_path, sleep=lambda s: None, progress=lambda *step: seen.append(step))
    assert got.path == tmp_path / "ID" / "file.bin" and got.path.read_bytes() == data
    assert seen[-1] == ("file.bin", len(data), len(data))
    assert [rng for _, _, rng in drive.requests] == [None, None, "bytes=5000-"]   # page, file (cut), the rest
    assert not (tmp_path / "ID.partial").exists()


def test_quota_as_403_sign_in_page_and_404_fail_at_once(drive, tmp_path):
    drive.files["Q"] = ("q.zip", b"", "quota403")
    drive.files["S"] = ("s.zip", b"", "signin")
    with pytest.raises(DriveQuotaError, match="too many users.*r3dp models import PATH"):
        download_drive_file("Q", tmp_path, sleep=pytest.fail)
    with pytest.raises(DownloadError, match="web page \\('Google Drive: Sign-in'\\).*no longer be public"):
        download_drive_file("S", tmp_path, sleep=pytest.fail)
    with pytest.raises(DownloadError, match="no public file N \\(HTTP 404\\)") as error:
        download_drive_file("N", tmp_path, sleep=pytest.fail)
    assert error.value.http_status == 404
    assert [file_id for file_id, _, _ in drive.requests] == ["Q", "S", "N"]
    assert list(tmp_path.iterdir()) == []


def test_the_drive_address_comes_from_the_parameter_or_the_environment(monkeypatch):
    monkeypatch.delenv(gdrive.DRIVE_URL_ENV, raising=False)
    assert gdrive.drive_base_url() == "https://drive.usercontent.google.com"
    monkeypatch.setenv(gdrive.DRIVE_URL_ENV, "http://127.0.0.1:1/")
    assert gdrive.drive_base_url() == "http://127.0.0.1:1"
    assert gdrive.drive_base_url("http://127.0.0.1:2") == "http://127.0.0.1:2"


def test_missing_official_files_point_to_fetch_official_and_the_library_wants_the_terms_accepted(tmp_path):
    for key in ("video_model", "audio_model", "bfm", "bfm_mediapipe_index"):
        message = model_files.BY_KEY[key].missing_message(tmp_path)
        assert "r3dp models fetch --official" in message and "r3dp models import PATH" in message, key
    assert "--official" not in model_files.BY_KEY["segmenter"].missing_message(tmp_path)
    with pytest.raises(InputError, match="(?s)NON-COMMERCIAL RESEARCH.*--accept-licenses"):
        gdrive.fetch_official(tmp_path, licenses_accepted=False)
    assert list(tmp_path.iterdir()) == []
