"""The types batch's driver (``run``) and its backends (``local``, ``ray_backend``) share: the events the driver
reports, what every worker needs to start, and the result of a job cut short by an interrupt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .jobs import Job
from .worker import JobResult


@dataclass
class BatchEvent:
    """What the driver reports while a batch runs (the CLI prints these).

    kind: ``invalid`` (a bad row, with ``error``), ``skipped``, ``start`` (job ``index`` of ``count`` on
    ``worker``), ``frames`` (``done`` of ``total`` frames of the current job), ``finished`` (with ``result``),
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


@dataclass
class WorkerSetup:
    """What every worker needs to load its models (paths every worker can read), and the faces the up-front
    check found on the batch's photos (``geometry.framing.remembered_faces``), so that no worker searches a
    photo again."""

    models_request: object
    models_dir: Path
    video_model: Callable | None = None
    faces: dict = field(default_factory=dict)


def interrupted(job: Job) -> JobResult:
    """The result of a job cut short by an interrupt."""
    return JobResult(job.line, "failed", str(job.output), "interrupted before the video was complete; nothing was "
                     "written (run the batch again to render it)")

