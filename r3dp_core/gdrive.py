"""``r3dp models fetch --official``: the official Real3D-Portrait checkpoints and the BFM bundle, downloaded from
the public Google Drive folders that the official README publishes.

The files are fetched by id (as the usual setup scripts do), which needs no folder listing. Google Drive speaks
a small protocol of its own, implemented here with urllib:

1. ``GET {base}/download?id=ID&export=download&confirm=t``; ``base`` is ``https://drive.usercontent.google.com``,
   or ``$R3DP_GDRIVE_URL`` / ``base_url=`` (the tests point it at a local imitation of Drive).
2. The file comes with ``Content-Disposition: attachment; filename=...``: it is streamed to a ``.partial`` file
   and renamed when complete (a dropped connection is retried, resuming within the run; a ``.partial`` left by an
   earlier run is discarded, since no digest is published that could vouch for it).
3. A web page comes instead: the large-file interstitial ("Google Drive can't scan this file for viruses") holds
   a form (``id``, ``export``, ``confirm``, ``uuid``) whose submission is the file, and older pages a link with
   a ``confirm=`` token; either is followed. The quota page ("Too many users have viewed or downloaded this file
   recently") raises ``DriveQuotaError``, whose message gives the two folder links for a manual download and
   ``r3dp models import``. Any other page (a sign-in page: the file is no longer public) is an error.
4. HTTP 404: the file is gone.

Names, sizes and digests of these files are not published, so nothing about them is assumed: the name comes from
the response, a name r3dp has no use for is not downloaded past its headers, and everything else is put in place
by ``model_import`` with exactly the checks of ``r3dp models import`` (archives through its capped extraction).
Whatever arrives is recognised and placed, or refused with its reason.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path

from . import model_files
from .errors import InputError, ModelFileError
from .model_files import IMPORT_COMMAND, OFFICIAL_FETCH_COMMAND, DownloadError, _Retry, _transfer

DRIVE_URL = "https://drive.usercontent.google.com"
DRIVE_URL_ENV = "R3DP_GDRIVE_URL"
FOLDER_URL = "https://drive.google.com/drive/folders/{}"
MAX_PAGE_BYTES = 1 << 20          # a Drive web page is a few KB; more is read no further
MAX_PAGES = 4                     # interstitials followed for one file before giving up
STAGING_FOLDER = ".official-download"
QUOTA_MARKERS = ("too many users have viewed or downloaded this file recently", "quota exceeded")


@dataclass(frozen=True)
class DriveGroup:
    """One official Drive folder: the ids of its files and the slots they fill."""

    title: str
    folder_id: str
    file_ids: tuple[str, ...]
    slots: tuple[str, ...]

    @property
    def folder_url(self) -> str:
        return FOLDER_URL.format(self.folder_id)


CHECKPOINTS = DriveGroup(
    "the official checkpoints", "1MAveJf7RvJ-Opg1f5qhLdoRoC_Gc6nD9",
    ("1gz8A6xestHp__GbZT5qozb43YaybRJhZ",      # 240210_real3dportrait_orig.zip
     "1gSUIw2AkkKnlLJnNfS2FCqtaVw9tw3QF"),     # pretrained_ckpts.zip
    ("video_model", "audio_model"))
BFM = DriveGroup(
    "the BFM bundle", "1o4t5YIw7w4cMUN4bgU9nPf6IyWVG1bEk",
    ("1SPM3IHsyNAaVMwqZZGV6QVaV7I2Hly0v", "1MSldX9UChKEb3AXLVTPzZQcsbGD4VmGF", "180ciTvm16peWrcpl4DOekT9eUQ-lJfMU",
     "1KX9MyGueFB3M-X0Ss152x_johyTXHTfU", "19-NyZn_I0_mkF-F5GPyFMwQJ_-WecZIL", "11ouQ7Wr2I-JKStp2Fd1afedmWeuifhof",
     "18ICIvQoKX-7feYWP61RbpppzDuYTptCq", "1VktuY46m0v_n_d4nvOupauJkK4LF6mHE"),
    ("bfm", "bfm_mediapipe_index"))
OFFICIAL_GROUPS = (CHECKPOINTS, BFM)

TERMS = f"""\
`{OFFICIAL_FETCH_COMMAND}` downloads files that are not r3dp's, from the public Google Drive folders of the
official Real3D-Portrait README, under their owners' terms:
  - the Basel Face Model 2009 (the BFM bundle, {BFM.folder_url}):
    for NON-COMMERCIAL RESEARCH only; see https://faces.dmi.unibas.ch/bfm/ for its licence;
  - the Real3D-Portrait checkpoints ({CHECKPOINTS.folder_url}):
    under the licence of the official repository, https://github.com/yerfor/Real3DPortrait (its LICENSE file).
Downloading them means you accept these terms."""


def drive_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$R3DP_GDRIVE_URL``, else Drive's download host; without a trailing slash."""
    return (base_url or os.environ.get(DRIVE_URL_ENV) or DRIVE_URL).rstrip("/")


def manual_download_step(sentence: bool = False) -> str:
    """What to do by hand; ``sentence``: capitalised, to start a sentence."""
    return (f"{'D' if sentence else 'd'}ownload the two folders by hand in a browser — the checkpoints: "
            f"{CHECKPOINTS.folder_url}, the BFM: {BFM.folder_url} — then run `{IMPORT_COMMAND}` with what you "
            "downloaded (the folder, or each .zip)")


class DriveQuotaError(DownloadError):
    """Drive refuses the file for now: too many downloads of it recently (its quota)."""


def quota_message(file_id: str) -> str:
    return (f"Google Drive refuses to serve file {file_id} right now: too many users have viewed or downloaded it "
            f"recently (Drive's download quota for the file; it resets within a day). Run `{OFFICIAL_FETCH_COMMAND}` "
            f"again later, or {manual_download_step()}.")


# ---------------------------------------------------------------------------------------------------- responses

def filename_from_disposition(header: str | None) -> str | None:
    """The file name in a ``Content-Disposition`` header: ``filename*=UTF-8''...`` (RFC 6266 prefers it), else
    ``filename=...``; None when there is none."""
    if not header:
        return None
    extended = re.search(r"filename\*\s*=\s*([\w-]*)'[^']*'([^;\s]+)", header, re.IGNORECASE)
    if extended:
        return urllib.parse.unquote(extended.group(2), encoding=extended.group(1) or "utf-8", errors="replace")
    message = Message()
    message["content-disposition"] = header
    return message.get_filename()


def safe_file_name(raw: str, file_id: str) -> str:
    """The last component of a name a server sent, refused when it cannot be a plain file name."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or name.startswith(".") or len(name) > 255 or any(ord(c) < 32 for c in name):
        raise DownloadError(f"Google Drive sent file {file_id} under the name {raw!r}, which cannot be used as a file "
                            f"name; nothing was kept. {manual_download_step(True)}.")
    return name


class _Page(Exception):
    """Drive answered with a web page instead of the file."""

    def __init__(self, text: str, url: str):
        super().__init__(url)
        self.text, self.url = text, url


class _Unwanted(Exception):
    """The file's name says r3dp has no use for it: its body is not downloaded."""

    def __init__(self, name: str, reason: str):
        super().__init__(reason)
        self.name, self.reason = name, reason


class _PageParser(HTMLParser):
    """The forms (action, fields), the links holding a ``confirm=`` token and the title of a Drive page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append((attributes.get("action", ""), {}))
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1][1][attributes["name"]] = attributes.get("value", "")
        elif tag == "a" and "confirm=" in attributes.get("href", ""):
            self.links.append(attributes["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def is_quota_page(text: str) -> bool:
    lowered = " ".join(text.lower().split())
    return any(marker in lowered for marker in QUOTA_MARKERS)


def next_url(page: _Page, file_id: str) -> str:
    """Where Drive's page says the file is (the confirm form or link); raises for the quota and other pages."""
    if is_quota_page(page.text):
        raise DriveQuotaError(quota_message(file_id))
    parser = _PageParser()
    parser.feed(page.text)
    url = None
    for action, fields in parser.forms:
        if "confirm" in fields or "uuid" in fields:
            fields.setdefault("id", file_id)
            base = urllib.parse.urljoin(page.url, action) if action else page.url.split("?", 1)[0]
            url = base + ("&" if "?" in base else "?") + urllib.parse.urlencode(fields)
            break
    if url is None and parser.links:
        url = urllib.parse.urljoin(page.url, parser.links[0])
    if url is None or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        title = " ".join(parser.title.split()) or "no title"
        raise DownloadError(f"Google Drive answered file {file_id} with a web page ({title!r}) instead of the file "
                            f"and no way on to it; the file may no longer be public. "
                            f"{manual_download_step(True)}.")
    return url


def _drive_opener(opener, file_id: str):
    """``opener`` that turns Drive's quota page into ``DriveQuotaError`` also when it comes as HTTP 403/429 (a
    429 would otherwise be retried, to no avail)."""
    def open_drive(request, timeout):
        try:
            return opener(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 429):
                try:
                    text = exc.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
                except OSError:
                    text = ""
                if is_quota_page(text):
                    raise DriveQuotaError(quota_message(file_id)) from None
            raise

    return open_drive


# ---------------------------------------------------------------------------------------------------- one file

@dataclass
class DriveDownload:
    """One Drive file: its name from the response, and where it was saved (None: ``skipped`` says why not)."""

    file_id: str
    name: str
    path: Path | None = None
    skipped: str | None = None


def download_drive_file(file_id: str, folder: Path, *, wanted: Callable[[str], str | None] | None = None,
                        base_url: str | None = None, opener=None,
                        progress: Callable[[str, int, int | None], None] | None = None,
                        timeout: float = model_files.DOWNLOAD_TIMEOUT_S,
                        attempts: int = model_files.DOWNLOAD_ATTEMPTS,
                        backoff: float = model_files.DOWNLOAD_BACKOFF_S, sleep=time.sleep) -> DriveDownload:
    """Download the public Drive file ``file_id`` to ``folder/ID/NAME`` (NAME from the response).

    ``wanted(name)`` returns None to download the file, or the reason it is not needed (then only its headers are
    read). ``progress(name, done_bytes, total_bytes_or_None)`` is called after every block. ``opener`` (tests):
    a ``urlopen``-like call; by default one that keeps Drive's cookies across the requests for this file.

    Raises:
        DriveQuotaError: Drive's quota page; the message gives the folders to download by hand.
        DownloadError: the file is gone (404), not public (another page), or the host unreachable after every
            attempt; the message names the manual step.
    """
    url = f"{drive_base_url(base_url)}/download?" + urllib.parse.urlencode(
        {"id": file_id, "export": "download", "confirm": "t"})
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{file_id}.partial"
    partial.unlink(missing_ok=True)   # no digest is published: a partial from an earlier run cannot be trusted
    found: dict[str, str] = {}

    def inspect(response) -> None:
        raw = filename_from_disposition(response.headers.get("Content-Disposition"))
        if raw is None:   # a web page (the interstitial, the quota page, a sign-in page)
            raise _Page(response.read(MAX_PAGE_BYTES).decode("utf-8", "replace"), response.geturl())
        name = safe_file_name(raw, file_id)
        if wanted is not None and (reason := wanted(name)) is not None:
            raise _Unwanted(name, reason)
        found["name"] = name

    def show(done: int, total: int | None) -> None:
        if progress:
            progress(found.get("name", file_id), done, total)

    if opener is None:   # the interstitial may set cookies that the confirmed request must carry back
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())).open
    opener = _drive_opener(opener, file_id)
    pages = 0
    try:
        for attempt in range(attempts):
            try:
                while True:
                    try:
                        _transfer(url, partial, opener, timeout, show, on_response=inspect)
                        break
                    except _Page as page:
                        pages += 1
                        if pages > MAX_PAGES:
                            raise DownloadError(f"Google Drive kept answering file {file_id} with web pages instead "
                                                f"of the file. {manual_download_step(True)}.") from None
                        url = next_url(page, file_id)
                break
            except _Retry as exc:
                if attempt == attempts - 1:
                    raise DownloadError(
                        f"Could not download file {file_id} from Google Drive after {attempts} attempts ({exc}). "
                        "The host may be unreachable from here (offline, proxy or firewall): "
                        f"{manual_download_step()}.") from None
                sleep(backoff * 2**attempt)
    except _Unwanted as unwanted:
        partial.unlink(missing_ok=True)
        return DriveDownload(file_id, unwanted.name, skipped=unwanted.reason)
    except DriveQuotaError:
        partial.unlink(missing_ok=True)
        raise
    except DownloadError as exc:
        partial.unlink(missing_ok=True)
        if exc.http_status == 404:
            raise DownloadError(f"Google Drive has no public file {file_id} (HTTP 404): it was moved or deleted. "
                                f"{manual_download_step(True)}.", http_status=404) from None
        if exc.http_status is not None:
            raise DownloadError(f"Google Drive refused file {file_id} ({exc}). "
                                f"{manual_download_step(True)}.", http_status=exc.http_status) from None
        raise
    target = folder / file_id / found["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    return DriveDownload(file_id, found["name"], target)


# ---------------------------------------------------------------------------------------------- the whole fetch

@dataclass
class OfficialReport:
    """What ``fetch_official`` did: placed ``(key, downloaded file name, target)``, skipped and failed
    ``(what, reason)``."""

    placed: list[tuple[str, str, Path]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _not_needed(name: str, models_dir: Path) -> str | None:
    """Why a file called ``name`` is of no use here (None: download it and let the import judge it)."""
    from .model_import import ARCHIVE_SUFFIXES, BY_NAME, CHECKPOINT_SUFFIXES, NOT_NEEDED

    lowered = name.lower()
    if lowered.endswith(ARCHIVE_SUFFIXES):
        return None
    for key, (slot_name, _) in BY_NAME.items():
        if lowered == slot_name.lower():
            found = model_files.BY_KEY[key].find(models_dir)
            return f"the {key} slot is already filled ({found})" if found else None
    if name in NOT_NEEDED:
        return NOT_NEEDED[name]
    if Path(lowered).suffix in CHECKPOINT_SUFFIXES:
        return None
    return "r3dp does not use this file"


def fetch_official(models_dir: Path, *, licenses_accepted: bool, base_url: str | None = None,
                   opener=None, progress: Callable[[str, int, int | None], None] | None = None,
                   say: Callable[[str], None] | None = None,
                   max_extracted_bytes: int | None = None, max_ratio: float | None = None,
                   timeout: float = model_files.DOWNLOAD_TIMEOUT_S, attempts: int = model_files.DOWNLOAD_ATTEMPTS,
                   backoff: float = model_files.DOWNLOAD_BACKOFF_S, sleep=time.sleep) -> OfficialReport:
    """Fill the checkpoint and BFM slots of ``models_dir`` from the official Drive folders (``TERMS``).

    Each folder's files are fetched by id until its slots are filled; each file is imported as it arrives (moved
    into place after ``r3dp models import``'s checks; an archive through its capped extraction) and its download
    removed. A failure is recorded and the next file tried. ``say(line)`` reports each step.
    """
    from .model_import import ARCHIVE_SUFFIXES, DEFAULT_MAX_EXTRACTED_BYTES, DEFAULT_MAX_RATIO, import_models

    if not licenses_accepted:
        raise InputError(f"The official files come under their owners' terms, which the user must accept first:\n"
                         f"{TERMS}\n(pass licenses_accepted=True once they have; on the command line: "
                         "--accept-licenses).")
    caps = {"max_extracted_bytes": DEFAULT_MAX_EXTRACTED_BYTES if max_extracted_bytes is None else max_extracted_bytes,
            "max_ratio": DEFAULT_MAX_RATIO if max_ratio is None else max_ratio}
    say = say or (lambda line: None)
    report = OfficialReport()
    staging = models_dir / STAGING_FOLDER

    def missing(group: DriveGroup) -> list[str]:
        return [key for key in group.slots if model_files.BY_KEY[key].find(models_dir) is None]

    try:
        for group in OFFICIAL_GROUPS:
            if not missing(group):
                say(f"{group.title}: present")
                continue
            failed = len(report.failures)
            for file_id in group.file_ids:
                label = f"Drive file {file_id} ({group.title})"
                if not missing(group):
                    report.skipped.append((label, f"not needed: the slots of {group.title} are filled"))
                    continue
                try:
                    got = download_drive_file(file_id, staging, wanted=lambda name: _not_needed(name, models_dir),
                                              base_url=base_url, opener=opener, progress=progress, timeout=timeout,
                                              attempts=attempts, backoff=backoff, sleep=sleep)
                    label = f"{got.name} (Drive file {file_id})"
                    if got.path is None:
                        report.skipped.append((label, got.skipped))
                        say(f"{label}: skipped, {got.skipped}")
                        continue
                    # an archive is extracted (capped); a single file is imported from the folder that holds it
                    archive = got.name.lower().endswith(ARCHIVE_SUFFIXES)
                    imported = import_models(got.path if archive else got.path.parent, models_dir, move=not archive,
                                             **caps)
                except (DownloadError, InputError, ModelFileError) as exc:
                    report.failures.append((label, str(exc)))
                    say(f"{label}: FAILED (listed at the end)")
                    continue
                finally:
                    shutil.rmtree(staging / file_id, ignore_errors=True)
                for key, _, target in imported.placed:
                    report.placed.append((key, got.name, target))
                    say(f"{label}: {key} -> {target}")
                for path, reason in imported.refused:
                    what = label if path.name == got.name else f"{path.name} from {label}"
                    report.failures.append((what, f"refused: {reason.replace(str(path), path.name)}"))
                    say(f"{what}: REFUSED (listed at the end)")
                for path, reason in imported.skipped:
                    report.skipped.append((f"{path.name} from {label}", reason))
                if not (imported.placed or imported.refused):
                    say(f"{label}: nothing r3dp uses in it")
            if (still := missing(group)) and len(report.failures) == failed:
                report.failures.append((group.title, f"{', '.join(still)} was in none of its files (the folder may "
                                                     f"have changed); {manual_download_step()}."))
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
    return report
