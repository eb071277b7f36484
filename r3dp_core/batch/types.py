"""The types batch's driver (``run``) and its backends (``local``, ``ray_backend``) share: the events the driver
reports, what every worker needs to start (and the worker it starts), and the result of a job cut short by an
interrupt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .jobs import Job
from .worker import BatchWorker, JobResult


@dataclass
class BatchEvent:
    """What the driver reports while a batch runs (the CLI prints these).

    kind: ``invalid`` (a bad row, with ``error``), ``skipped`` (with ``result``), ``start`` (job ``index`` of
    ``count`` on ``worker``), ``frames`` (``done`` of ``total`` frames of the current job), ``steps`` (a persona's
    training: ``done`` of ``total`` optimisation steps of ``stage``, the latest ``loss``), ``note`` (a line a
    persona's training said: ``text``), ``finished`` (with ``result``),
    ``retry`` (the worker died; the job goes to another one), and for the Ray workers themselves (``line`` 0):
    ``worker_failed`` (``worker`` could not start; ``error`` is its whole error) and ``replaced`` (``worker``
    died; ``replacement`` is starting in its place).
    """

    kind: str
    line: int
    output: Path | None = None
    error: str | None = None
    index: int | None = None
    count: int | None = None
    worker: str | None = None
    done: int | None = None
    total: int | None = None
    result: JobResult | None = None
    replacement: str | None = None
    stage: str | None = None
    loss: float | None = None
    text: str | None = None


@dataclass
class WorkerSetup:
    """What every worker needs to load its models (paths every worker can read), and the faces the up-front
    check found on the batch's photos (``geometry.framing.remembered_faces``), so that no worker searches a
    photo again.

    ``kind``: the jobs' kind (``jobs.KINDS``). A personalise batch has no ``models_request`` (each persona loads
    what it trains); ``trainer`` optionally replaces the library's ``personalise`` (tests), as ``video_model``
    replaces the video model."""

    models_request: object
    models_dir: Path
    video_model: Callable | None = None
    faces: dict = field(default_factory=dict)
    kind: str = "generate"
    trainer: Callable | None = None


def make_worker(setup: WorkerSetup):
    """The worker for ``setup``: a ``worker.BatchWorker`` for clips (its models loaded), a
    ``personalise.PersonaliseWorker`` for personas."""
    if setup.kind == "personalise":
        from .personalise import PersonaliseWorker

        return PersonaliseWorker(setup.trainer)
    return BatchWorker(setup.models_request, setup.models_dir, setup.video_model, faces=setup.faces)


def interrupted(job: Job) -> JobResult:
    """The result of a job cut short by an interrupt."""
    if job.kind == "personalise":
        return JobResult(job.line, "failed", str(job.output), "interrupted before the persona was complete; its last "
                         "checkpoint is kept (run the batch again to resume it)")
    return JobResult(job.line, "failed", str(job.output), "interrupted before the video was complete; nothing was "
                     "written (run the batch again to render it)")

