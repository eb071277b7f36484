"""A batch's job list: the rows of a JOBS file (CSV or JSONL) as ``generate`` requests (or, with ``r3dp batch
--personalise``, as ``personalise`` options: :mod:`.personalise` reads those rows with the machinery here).

The columns are ``r3dp generate``'s options with underscores (``image``, ``audio``, ``out``, ``seed``,
``head_mask``, ...), read from generate's option table (``pipeline/options.py``, which ``r3dp generate``'s parser
is built from too), so that a new generate option is a new column without anything else to change; an empty
cell (or a JSON ``null``) means the option's default. A row is parsed exactly as its options would be on the
command line, so the messages are generate's.
Relative input paths are taken from the JOBS file's folder, ``out`` from the output folder; every path in
a request is absolute, so that a worker on another machine reads the same files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..pipeline.request import GenerateRequest

#: generate options set once for the whole batch, on the ``r3dp batch`` command line
BATCH_OPTIONS = ("models_dir", "device", "dtype")
#: generate options that are not job settings
NOT_JOB_OPTIONS = ("help", "dry_run")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


#: what a batch's rows are: ``generate`` requests (clips) or ``personalise`` options (personas)
KINDS = ("generate", "personalise")


@dataclass
class Job:
    """One row of JOBS: its line (the CSV header is line 1) and its request, or why the row cannot run.

    ``kind``: ``generate`` (``request`` is a ``GenerateRequest``, ``out`` a video) or ``personalise``
    (``request`` is a ``PersonaliseOptions``, ``out`` a persona folder).
    """

    line: int
    request: object | None = None
    error: str | None = None
    kind: str = "generate"

    @property
    def output(self) -> Path | None:
        return Path(self.request.out) if self.request is not None else None


def raising_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` raising ``InputError`` on a bad row instead of exiting the process (the batch goes on)."""

    def fail(message: str):
        raise InputError(message)

    parser.error = fail
    return parser


def _generate_parser() -> argparse.ArgumentParser:
    from ..pipeline.options import generate_parser

    return raising_errors(generate_parser())


def job_options(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.Action]:
    """The accepted columns: the option actions of ``parser`` (default: generate's) by column name (``dest``)."""
    parser = parser or _generate_parser()
    return {action.dest: action for action in parser._actions
            if action.option_strings and action.dest not in NOT_JOB_OPTIONS + BATCH_OPTIONS}


def _flag_words(column: str, value) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise InputError(f"{column}: expected true or false, got {value!r}.")


def row_arguments(row: dict, options: dict[str, argparse.Action]) -> list[str]:
    """A row as the generate command line it stands for (empty cells left out, so they take the default)."""
    argv = []
    for column, value in row.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        action = options[column]
        if isinstance(value, (list, tuple)):  # a JSON list (``anchor_frames``): the comma-separated text
            value = ",".join(str(item) for item in value)
        if isinstance(action, argparse.BooleanOptionalAction):
            on = _flag_words(column, value)
            argv.append(next(flag for flag in action.option_strings if flag.startswith("--no-") != on))
        elif action.nargs == 0:  # store_true and the like: present or absent
            if _flag_words(column, value):
                argv.append(action.option_strings[0])
        else:
            argv.append(f"{action.option_strings[0]}={str(value).strip()}")  # `=`: values may start with "-"
    return argv


def read_rows(path: Path, command: str = "generate") -> list[tuple[int, dict | None, str | None]]:
    """``(line, row, error)`` for every row of a CSV (header = line 1) or JSONL file; a row that cannot be read
    has ``row`` None and the reason in ``error``. ``command``: whose options the columns are (for messages)."""
    if not path.is_file():
        raise InputError(f"{path}: the job list does not exist. Give a .csv or .jsonl file.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = []
            for row in reader:
                if None in row:
                    rows.append((reader.line_num, None, f"the row has {len(row) - 1 + len(row[None])} cells but the "
                                                       f"header {len(reader.fieldnames)} columns."))
                elif any(value and value.strip() for value in row.values()):
                    rows.append((reader.line_num, row, None))
            return rows
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                rows.append((line, None, f"not valid JSON ({exc.msg} at column {exc.colno})."))
                continue
            if not isinstance(row, dict):
                rows.append((line, None, f"each line must be a JSON object of {command} options."))
                continue
            rows.append((line, row, None))
        return rows
    raise InputError(f"{path}: the job list must be a .csv file (a header row of {command}'s option names) or a "
                     ".jsonl file (one JSON object per line).")


def check_columns(path: Path, rows: list[tuple[int, dict | None, str | None]], options: dict,
                  command: str = "generate") -> None:
    """Refuse a job list with a column that is not one of ``options`` (``command``'s options, for the message)."""
    seen = {column for _, row, _ in rows if row for column in row}
    unknown = sorted(seen - set(options))
    if not unknown:
        return
    batch_level = [column for column in unknown if column in BATCH_OPTIONS]
    flags = ", ".join("--" + column.replace("_", "-") for column in batch_level)
    hint = f" ({', '.join(batch_level)}: set once for the whole batch, `r3dp batch {flags}`)" if batch_level else ""
    raise InputError(f"{path}: unknown column(s) {', '.join(unknown)}{hint}. The columns are {command}'s options "
                     f"with underscores: {', '.join(options)}.")


def _absolute(request: GenerateRequest, inputs_dir: Path, out_dir: Path) -> GenerateRequest:
    changes = {}
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        if isinstance(value, Path) and not value.is_absolute():
            changes[field.name] = ((out_dir if field.name == "out" else inputs_dir) / value).resolve()
    return dataclasses.replace(request, **changes)


def load_jobs(path: str | Path, out_dir: str | Path, *, models_dir: Path | None = None, device: str = "auto",
              dtype: str = "auto") -> list[Job]:
    """Every row of the JOBS file as a ``Job``; a row whose options do not parse carries its error.

    Raises:
        InputError: the file is missing, of an unknown format, or has columns that are not generate options.
    """
    from ..pipeline.request import request_from_options

    path, out_dir = Path(path).resolve(), Path(out_dir).resolve()
    parser = _generate_parser()
    options = job_options(parser)
    rows = read_rows(path)
    check_columns(path, rows, options)
    batch = ["--device", device, "--dtype", dtype] + (["--models-dir", str(models_dir)] if models_dir else [])
    jobs = []
    for line, row, error in rows:
        if row is None:
            jobs.append(Job(line, error=error))
            continue
        try:
            args = parser.parse_args(row_arguments(row, options) + batch)
            jobs.append(Job(line, _absolute(request_from_options(args), path.parent, out_dir)))
        except InputError as exc:
            jobs.append(Job(line, error=str(exc)))
    return jobs


def models_request(requests: list[GenerateRequest]) -> GenerateRequest:
    """One request that needs every model any of ``requests`` needs, by admission's own rule
    (``needed_models``, which ``load_job_models`` follows): the audio models only when a job is audio-driven
    (neither ``expression_video`` nor ``motion``), the segmenter only when a job has no head mask. Persona jobs
    (a ``persona`` column) are left out; with nothing but personas, the first persona request."""
    from ..pipeline.admission import needed_models

    photos = [request for request in requests if request.persona is None]
    if not photos:   # personas only: each job loads its persona, the worker its wav2vec2
        return requests[0]
    requests = photos   # a persona job loads what it needs itself (the worker keeps its wav2vec2)
    needed = {key for request in requests for key in needed_models(request)}
    first = requests[0]  # when a model is not needed, no job needs it, the first one included
    changes = {}
    if "audio_model" in needed:
        changes.update(expression_video=None, motion=None)
    if "segmenter" in needed:
        changes.update(head_mask=None, body_mask=None)
    return dataclasses.replace(first, **changes)


def model_users(jobs: list[Job]) -> dict[str, list[Job]]:
    """The model files ``jobs`` need (``model_files`` keys, by admission's ``needed_models``), each with the
    jobs that need it."""
    from ..pipeline.admission import needed_models

    users: dict[str, list[Job]] = {}
    for job in jobs:
        for key in needed_models(job.request):
            users.setdefault(key, []).append(job)
    return users


def photo_key(path: Path, memo: dict[Path, str]) -> str:
    """Content hash of a photo file, to send the jobs of one photo to one worker (``memo`` avoids re-reading)."""
    if path not in memo:
        memo[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return memo[path]


def group_key(job: Job, memo: dict[Path, str]) -> str:
    """The group a Ray worker keeps taking jobs from: a clip's photo (``photo_key``: its portrait cache pays
    off) or persona folder; a persona to train is a group of its own (nothing is shared between personas)."""
    if job.kind == "personalise":
        return f"line {job.line}"
    if job.request.persona is not None:   # the clips of one persona: one worker keeps it loaded
        return f"persona {Path(job.request.persona).resolve()}"
    return photo_key(job.request.image, memo)
