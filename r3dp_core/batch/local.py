"""The local backend: one process, the models loaded once, the jobs one after another."""

from __future__ import annotations

from .types import BatchEvent, WorkerSetup, interrupted, make_worker


def run_local(pending, setup: WorkerSetup, emit, record) -> tuple[int, int]:
    """Run ``pending`` jobs in order; ``record(result)`` after each. Returns (portraits prepared, reused)."""
    worker = make_worker(setup)
    for index, job in enumerate(pending, start=1):
        emit(BatchEvent("start", job.line, job.output, index=index, count=len(pending), worker="local"))

        def progress(done: int, total: int, stage: str | None = None, loss: float | None = None,
                     line=job.line) -> None:
            emit(BatchEvent("frames" if stage is None else "steps", line, done=done, total=total, stage=stage,
                            loss=loss))

        def say(text: str, line=job.line) -> None:
            emit(BatchEvent("note", line, text=text))

        try:
            result = worker.run(job, progress=progress, say=say)
        except KeyboardInterrupt:
            record(interrupted(job))
            raise
        record(result)
        emit(BatchEvent("finished", job.line, job.output, index=index, count=len(pending), result=result))
    return worker.portrait_counts()
