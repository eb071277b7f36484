"""The local backend: one process, the models loaded once, the jobs one after another."""

from __future__ import annotations

from .types import BatchEvent, WorkerSetup, interrupted
from .worker import BatchWorker


def run_local(pending, setup: WorkerSetup, emit, record) -> tuple[int, int]:
    """Render ``pending`` jobs in order; ``record(result)`` after each. Returns (portraits prepared, reused)."""
    worker = BatchWorker(setup.models_request, setup.models_dir, setup.video_model, faces=setup.faces)
    for index, job in enumerate(pending, start=1):
        emit(BatchEvent("start", job.line, job.output, index=index, count=len(pending), worker="local"))

        def frames(done: int, total: int, line=job.line) -> None:
            emit(BatchEvent("frames", line, done=done, total=total))

        try:
            result = worker.render(job, progress=frames)
        except KeyboardInterrupt:
            record(interrupted(job))
            raise
        record(result)
        emit(BatchEvent("finished", job.line, job.output, index=index, count=len(pending), result=result))
    return worker.portrait_counts()
