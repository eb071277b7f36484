"""``r3dp batch --personalise``: a persona per row of a job list, with the render batch's machinery.

The columns are ``r3dp personalise``'s options with underscores (``video``, ``out``, ``preset``, ``steps``,
``save_every``, ``start``, ``end``, ``face``, ``anchor_frames``, ``seed``, ``restart``), read from its own parser
(``talk3d.personalise.command``), so that a new personalise option is a new column; ``models_dir``, ``device`` and
``dtype`` are set once for the batch. ``video`` is relative to the JOBS file's folder, ``out`` (the persona folder;
default: the video's file name without its extension) to the output folder.

A row whose folder holds a complete persona (``persona.json``, and a training checkpoint at the row's steps or
beyond, trained from the row's video, preset, span and face) is skipped; any other row runs, and resumes from
its folder's last checkpoint. A failing row is recorded with its error and the others go on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError, R3DPError
from .jobs import Job, check_columns, job_options, raising_errors, read_rows, row_arguments
from .worker import JobResult

#: ``r3dp batch --dtype`` → personalise's ``--dtype`` (training is float32, or bfloat16 under autocast)
DTYPES = {"auto": "float32", "fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def personalise_parser() -> argparse.ArgumentParser:
    """``r3dp personalise``'s parser (what a row is read with), raising ``InputError`` on a bad row."""
    from ..talk3d.personalise.command import add_personalise_arguments

    parser = argparse.ArgumentParser(prog="r3dp personalise")
    add_personalise_arguments(parser)
    return raising_errors(parser)


def personalise_dtype(dtype: str) -> str:
    """Personalise's dtype for the batch's ``--dtype``.

    Raises:
        InputError: a dtype training does not take (fp16).
    """
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: a persona trains in float32 or bfloat16; give --dtype auto (float32), "
                         "fp32 or bf16 (bfloat16 autocast, for GPUs with bf16).")
    return DTYPES[dtype]


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def load_personalise_jobs(path: str | Path, out_dir: str | Path, *, models_dir: Path | None = None,
                          device: str = "auto", dtype: str = "auto") -> list[Job]:
    """Every row of the JOBS file as a personalise ``Job`` (``request``: ``PersonaliseOptions`` with absolute
    paths); a row whose options do not parse carries its error.

    Raises:
        InputError: the file is missing, of an unknown format, has columns that are not personalise options, or
            ``dtype`` is one training does not take.
    """
    from ..talk3d.personalise.command import options_from_args

    path, out_dir = Path(path).resolve(), Path(out_dir).resolve()
    precision = personalise_dtype(dtype)
    parser = personalise_parser()
    options = job_options(parser)
    rows = read_rows(path, "personalise")
    check_columns(path, rows, options, "personalise")
    batch = ["--device", device, "--dtype", precision] + (["--models-dir", str(models_dir)] if models_dir else [])
    jobs = []
    for line, row, error in rows:
        if row is None:
            jobs.append(Job(line, error=error, kind="personalise"))
            continue
        if _blank(row.get("out")) and not _blank(row.get("video")):
            row = {**row, "out": Path(str(row["video"]).strip()).stem}
        try:
            parsed = options_from_args(parser.parse_args(row_arguments(row, options) + batch))
        except InputError as exc:
            jobs.append(Job(line, error=str(exc), kind="personalise"))
            continue
        request = dataclasses.replace(parsed, video=(path.parent / parsed.video).resolve(),
                                      out=(out_dir / parsed.out).resolve(),
                                      models_dir=Path(parsed.models_dir) if parsed.models_dir else None)
        jobs.append(Job(line, request, kind="personalise"))
    return jobs


# --- the up-front checks --------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def row_steps(options) -> int:
    """The U-Net steps a row trains to: its ``steps``, else its preset's."""
    from ..talk3d.personalise.presets import get_preset

    return options.steps or get_preset(options.preset).unet_steps


def persona_skipped(job: Job) -> JobResult | None:
    """The ``skipped`` result of a row whose persona is complete, else None (the row runs, resuming).

    Complete: the folder has ``persona.json``, its training checkpoint (``training/checkpoint.json``) is at the
    row's steps or beyond, and its run record (``personalise.json``) names the row's video, preset, span and
    face (a folder trained from other input runs, and personalise refuses it unless ``restart``)."""
    from ..talk3d.personalise.run import RUN_FILE

    options, folder = job.request, job.output
    if not (folder / "persona.json").is_file():
        return None
    checkpoint = _read_json(folder / "training" / "checkpoint.json") or {}
    step = checkpoint.get("step")
    try:
        wanted = row_steps(options)
    except ValueError:  # an unknown preset: the run says so
        return None
    if not isinstance(step, int) or step < wanted:
        return None
    record = _read_json(folder / RUN_FILE) or {}
    same = {"video": str(options.video), "preset": options.preset, "start": options.start, "end": options.end,
            "face": options.face}
    if any(record.get(key) != value for key, value in same.items()):
        return None
    metrics = _read_json(folder / "metrics.json") or {}
    heldout = metrics.get("heldout") if metrics.get("step") == step else None
    return JobResult(job.line, "skipped", str(folder), step=step, heldout=heldout)


def admit_personas(jobs: list[Job]) -> None:
    """The checks personalise makes before it trains, made for every row up front (a bad row gets its
    ``error``, with personalise's own message): the video is a file, steps and save_every are at least 1."""
    from ..talk3d.personalise.run import check_options

    for job in jobs:
        try:
            check_options(job.request)
        except InputError as exc:
            job.error = str(exc)


# --- the worker -----------------------------------------------------------------------------------------------------

def _library_personalise() -> Callable:
    from ..talk3d.personalise import run

    return run.personalise  # looked up at each job (tests replace it)


class PersonaliseWorker:
    """Trains one persona at a time with the library's ``personalise`` (or ``trainer``, the same signature).

    Nothing is loaded between jobs: each persona loads the prior, the loss networks and its prepared video."""

    def __init__(self, trainer: Callable | None = None):
        self.trainer = trainer

    def run(self, job: Job, progress=None, should_stop=None, say=None) -> JobResult:
        """Train (or resume) ``job``'s persona. Its own failure, or a stop requested by ``should_stop`` (its
        checkpoint saved), is returned as a failed result; ``KeyboardInterrupt`` propagates, the checkpoint saved.

        ``progress(done, total, stage, loss)`` after each optimisation step; ``say(text)`` for each line training
        says (notes, warnings, what was resumed)."""
        from ..host import Host
        from ..talk3d.personalise.training import TrainingInterrupted

        train = self.trainer or _library_personalise()
        started = time.perf_counter()

        def step(stage: str, done: int, total: int, terms: dict) -> None:
            if progress is not None:
                loss = terms.get("total", next(iter(terms.values()), None)) if terms else None
                progress(done, total, stage, None if loss is None else float(loss))

        def failed(error: str) -> JobResult:
            return JobResult(job.line, "failed", str(job.output), error,
                             seconds=round(time.perf_counter() - started, 3))

        try:
            result = train(job.request, host=Host(should_stop=should_stop), say=say or (lambda _: None),
                           on_step=step)
        except TrainingInterrupted as exc:
            if isinstance(exc.cause, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            return failed(str(exc))
        except R3DPError as exc:
            return failed(str(exc))
        except Exception as exc:  # noqa: BLE001 — one persona's crash is recorded and the batch goes on
            return failed(f"{type(exc).__name__}: {exc}")
        return JobResult(job.line, "done", str(result.folder), seconds=round(time.perf_counter() - started, 3),
                         step=result.step, resumed_from=result.resumed_from,
                         heldout=(result.metrics or {}).get("heldout"))

    def portrait_counts(self) -> tuple[int, int]:
        return 0, 0


# --- what the command line prints -----------------------------------------------------------------------------------

def personalise_printer(fallback: Callable, stream=None) -> Callable:
    """What ``r3dp batch --personalise`` prints: each stage's steps with the loss (in place on a terminal, a line
    per tenth of a stage otherwise), each distinct line training says once, a persona's step and held-out PSNR;
    every other event as ``fallback`` (the render batch's printer) prints it."""
    from ..host import progress_bar as bar

    stream = stream if stream is not None else sys.stderr
    interactive = stream.isatty()
    tenths: dict[tuple[int, str], int] = {}
    said: set[str] = set()

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    def show(event) -> None:
        if event.kind == "steps":
            loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
            text = f"  line {event.line}: {event.stage} {event.done}/{event.total} steps{loss}"
            if interactive:
                print(f"\r  line {event.line}: {event.stage} {bar(event.done, event.total)} {event.done}/{event.total}"
                      f"{loss}", end="" if event.done < event.total else "\n", file=stream, flush=True)
                return
            tenth = 10 * event.done // max(event.total, 1)
            if tenth > tenths.get((event.line, event.stage), 0):
                tenths[(event.line, event.stage)] = tenth
                say(f"{text} ({10 * tenth} %)")
        elif event.kind == "note":
            if event.text not in said:
                said.add(event.text)
                say(f"  line {event.line}: {event.text}")
        elif event.kind == "finished" and event.result.status == "done":
            result = event.result
            resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
            psnr = (result.heldout or {}).get("psnr")
            scored = f", held-out PSNR {psnr:.2f} dB" if isinstance(psnr, (int, float)) else ""
            say(f"  line {event.line}: done, persona at U-Net step {result.step}{resumed}{scored} in "
                f"{result.seconds:.1f} s")
        elif event.kind == "skipped":
            step = event.result.step if event.result is not None else None
            say(f"line {event.line}: skipped, the persona in {event.output} is complete at U-Net step {step} "
                "(--force runs it again)")
        else:
            if event.kind == "start":
                for key in [key for key in tenths if key[0] == event.line]:
                    del tenths[key]
            fallback(event)

    return show
