"""``r3dp batch``: read the job list, check every row up front, render the rest on a backend, record results.

The driver alone writes ``DIR/results.jsonl`` (one JSON object per row, ordered by line), rewriting it
atomically after every job, so that it is complete and readable at any moment, interrupted or not. Videos
are written atomically by the workers; a job whose output exists is complete and is skipped unless ``force``.
A personalise batch (``personalise=True``) trains a persona per row the same way: a persona that is complete at
its row's steps is skipped, any other resumes from its folder's last checkpoint (:mod:`.personalise`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, R3DPError
from .jobs import Job, load_jobs, model_users, models_request
from .types import BatchEvent, WorkerSetup
from .worker import JobResult

RESULTS_FILE = "results.jsonl"
#: rows named in a missing-model refusal before "and N more"
ROWS_NAMED = 8


@dataclass
class BatchReport:
    """A finished batch: every row's result (by line), its wall time, the portraits prepared and reused (the
    portrait cache's work, summed over the workers still alive at the end), ``results.jsonl``, counts by
    status, and the whole error of every Ray worker that could not start."""

    results: list[JobResult]
    seconds: float
    portraits_prepared: int = 0
    portraits_reused: int = 0
    results_path: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    worker_errors: list[str] = field(default_factory=list)


class ResultsFile:
    """``results.jsonl`` of this run, rewritten atomically whenever a row's result arrives."""

    def __init__(self, path: Path):
        self.path = path
        self.results: dict[int, JobResult] = {}

    def add(self, result: JobResult) -> None:
        self.results[result.line] = result
        handle, tmp = tempfile.mkstemp(prefix=".results.", suffix=".partial", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w") as out:
                out.writelines(self.results[line].to_json() + "\n" for line in sorted(self.results))
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def previous_results(path: Path) -> dict[str, JobResult]:
    """Finished results of an earlier run by output path (to report the frames of a skipped job)."""
    found = {}
    if path.is_file():
        for text in path.read_text().splitlines():
            try:
                result = JobResult(**json.loads(text))
            except (json.JSONDecodeError, TypeError):
                continue
            if result.status in ("done", "skipped") and result.output:
                found[result.output] = result
    return found


def _rows(jobs: list[Job], out_dir: Path) -> str:
    """``line 3 (anna/fr.mp4), line 5 (...)`` for a message (the first ``ROWS_NAMED``, then how many more)."""
    def name(job: Job) -> str:
        return str(job.output.relative_to(out_dir)) if job.output.is_relative_to(out_dir) else str(job.output)

    named = ", ".join(f"line {job.line} ({name(job)})" for job in jobs[:ROWS_NAMED])
    more = len(jobs) - ROWS_NAMED
    return named + (f" and {more} more row(s)" if more > 0 else "")


def _nothing_done(jobs: list[Job]) -> str:
    return "nothing was trained" if jobs and jobs[0].kind == "personalise" else "nothing was rendered"


def check_batch_models(jobs: list[Job], models_dir: Path, out_dir: Path, skip: tuple[str, ...] = (),
                       users: dict[str, list[Job]] | None = None) -> None:
    """Refuse the batch, before anything renders, when the models folder lacks a file some of ``jobs`` need
    (``users``: the jobs by the ``model_files`` key they need; default: admission's ``needed_models``, row by
    row); every missing file is listed with the rows that need it."""
    from .. import model_files

    users = model_users(jobs) if users is None else users
    missing = [(model_files.BY_KEY[key], needing) for key, needing in users.items()
               if key not in skip and model_files.BY_KEY[key].find(models_dir) is None]
    if missing:
        raise InputError(f"{len(missing)} model file(s) missing (`r3dp models fetch` downloads what can be "
                         f"downloaded); {_nothing_done(jobs)}:\n"
                         + "\n".join(f"  - {spec.missing_message(models_dir)}\n    needed by {_rows(needing, out_dir)}"
                                     for spec, needing in missing))


def check_jobs(jobs: list[Job], models_dir: Path, force: bool, emit, results: list[JobResult],
               earlier: dict[str, JobResult], out_dir: Path, *, faces: dict | None = None,
               skip_models: tuple[str, ...] = ()) -> list[Job]:
    """Sort rows into skipped (output complete), bad (``generate --dry-run``'s checks; a persona's: its video and
    steps) and pending.

    ``faces``: a ``remembered_faces`` memo, filled here with the faces of every distinct photo (each searched
    once). ``skip_models``: model files not looked for (the video model when the batch brings its own, the EG3D
    prior when it brings its own trainer).
    """
    from .personalise import admit_personas, persona_skipped

    owners: dict[Path, int] = {}
    runnable = []
    for job in jobs:
        if job.error is None and job.output in owners:
            job.error = (f"{job.output}: also the output of line {owners[job.output]}; give every row its own out.")
        if job.error is not None:
            continue
        owners[job.output] = job.line
        skipped = None
        if force:
            pass
        elif job.kind == "personalise":
            skipped = persona_skipped(job)
        elif job.output.is_file():
            before = earlier.get(str(job.output))
            skipped = JobResult(job.line, "skipped", str(job.output), frames=before.frames if before else None)
        if skipped is not None:
            results.append(skipped)
            emit(BatchEvent("skipped", job.line, job.output, result=skipped))
        else:
            runnable.append(job)
    if runnable and runnable[0].kind == "personalise":
        if "eg3d_ffhq" not in skip_models:  # the prior every persona starts from: the whole batch's problem
            check_batch_models(runnable, models_dir, out_dir, users={"eg3d_ffhq": runnable})
        admit_personas(runnable)
    elif runnable:
        _admit_clips(runnable, models_dir, out_dir, faces, skip_models)
    for job in jobs:
        if job.error is not None:
            results.append(JobResult(job.line, "failed", str(job.output) if job.output else None, job.error))
            emit(BatchEvent("invalid", job.line, job.output, error=job.error))
    return [job for job in runnable if job.error is None]


def _admit_clips(runnable: list[Job], models_dir: Path, out_dir: Path, faces: dict | None,
                 skip_models: tuple[str, ...]) -> None:
    """``generate --dry-run``'s checks of every clip row (a bad one gets its ``error``)."""
    from ..geometry.framing import remembered_faces
    from ..pipeline.admission import admit

    # a models folder that lacks a file is the whole batch's problem, said once, with the rows it stops
    check_batch_models(runnable, models_dir, out_dir, skip_models)
    with remembered_faces({} if faces is None else faces):
        for job in runnable:
            try:
                admit(job.request, models_dir, check_models=False)  # the model files: checked above, for all rows
            except R3DPError as exc:
                job.error = str(exc)


def _replaced_models(video_model: Callable | None, trainer: Callable | None) -> tuple[str, ...]:
    """The model files a batch does not look for: those its stand-ins replace."""
    return ("video_model",) * (video_model is not None) + ("eg3d_ffhq",) * (trainer is not None)


def run_batch(jobs_file: str | Path, out_dir: str | Path, *, models_dir: str | Path | None = None,
              device: str = "auto", dtype: str = "auto", strict: bool = False, force: bool = False,
              ray: str | None = None, cpus_per_worker: int | None = None, worker_start_timeout: float | None = None,
              on_event: Callable[[BatchEvent], None] | None = None, video_model: Callable | None = None,
              personalise: bool = False, trainer: Callable | None = None) -> BatchReport:
    """Render every row of ``jobs_file`` into ``out_dir`` (``personalise``: train every row's persona there).

    Args:
        ray: None for the local backend (one process); ``"local"`` starts a Ray cluster on this machine,
            ``"auto"`` or an address joins a running one.
        cpus_per_worker: CPUs per Ray worker on a cluster without GPUs (one worker per free GPU otherwise);
            None: the smaller of 4 and the CPUs of the cluster's largest node.
        worker_start_timeout: seconds a Ray worker may take to start (be scheduled and load its models) before it
            is given up; None: ``ray_backend.START_TIMEOUT_SECONDS``.
        on_event: called with every ``BatchEvent``; it may raise ``KeyboardInterrupt`` to stop the batch.
        video_model: optional factory of a video model used instead of the models folder's (tests, benchmarks).
        personalise: the rows are ``r3dp personalise`` options (video, out, preset, steps, ...), one persona each.
        trainer: optional stand-in for the library's ``personalise`` with its signature (tests).

    Raises:
        InputError: the job list cannot be read, or (``strict``) a row is bad: then nothing is rendered.
        KeyboardInterrupt: after recording the finished jobs; no half-written video is left (a persona keeps its
            last checkpoint).
    """
    from .. import model_files

    started = time.perf_counter()
    worker_errors: list[str] = []

    def emit(event: BatchEvent) -> None:
        if event.kind == "worker_failed":
            worker_errors.append(f"{event.worker}: {event.error}")
        if on_event is not None:
            on_event(event)

    out_dir = Path(out_dir).resolve()
    models_dir = model_files.default_models_dir(Path(models_dir) if models_dir else None)
    if personalise:
        from .personalise import load_personalise_jobs

        jobs = load_personalise_jobs(jobs_file, out_dir, models_dir=models_dir, device=device, dtype=dtype)
    else:
        jobs = load_jobs(jobs_file, out_dir, models_dir=models_dir, device=device, dtype=dtype)
    if not jobs:
        raise InputError(f"{jobs_file}: the job list has no rows.")
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    checked: list[JobResult] = []
    faces: dict = {}
    pending = check_jobs(jobs, models_dir, force, emit, checked, previous_results(results_path), out_dir,
                         faces=faces, skip_models=_replaced_models(video_model, trainer))
    bad = [result for result in checked if result.status == "failed"]
    if strict and bad:
        raise InputError(f"{len(bad)} bad row(s) in {jobs_file}; {_nothing_done(jobs)} (--strict):\n"
                         + "\n".join(f"  line {result.line}: {result.error}" for result in bad))
    results = ResultsFile(results_path)
    for result in checked:
        results.add(result)
    prepared = reused = 0
    if pending:
        if personalise:
            setup = WorkerSetup(None, models_dir, kind="personalise", trainer=trainer)
        else:
            setup = WorkerSetup(models_request([job.request for job in pending]), models_dir, video_model, faces)
        if ray is None:
            from .local import run_local

            prepared, reused = run_local(pending, setup, emit, results.add)
        else:
            from .ray_backend import run_ray

            prepared, reused = run_ray(pending, setup, emit, results.add, address=ray,
                                       cpus_per_worker=cpus_per_worker, start_timeout=worker_start_timeout)
    final = [results.results[line] for line in sorted(results.results)]
    counts = {status: sum(r.status == status for r in final) for status in ("done", "failed", "skipped")}
    return BatchReport(final, time.perf_counter() - started, prepared, reused, results_path, counts, worker_errors)
