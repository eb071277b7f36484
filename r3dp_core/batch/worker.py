"""What runs a batch's jobs: the models loaded once and the portrait cache, one job at a time.

The local backend runs one worker in the driver's process; the Ray backend runs one inside each actor. A worker
is a ``BatchWorker`` (clips) or a ``personalise.PersonaliseWorker`` (personas), as ``types.make_worker`` picks;
both ``run(job, progress=, should_stop=, say=)`` one job into a ``JobResult``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import R3DPError
from ..host import StopRequested
from .jobs import Job

#: ``JobResult`` fields only a persona has, left out of a clip's ``results.jsonl`` line
PERSONA_FIELDS = ("step", "resumed_from", "heldout")


@dataclass
class JobResult:
    """One line of ``results.jsonl``: the row's ``line`` in JOBS, ``status`` (done, failed or skipped), the
    ``output`` path, the ``error`` message of a failed row, the ``frames`` written and the job's wall ``seconds``.

    A persona's line has no ``frames``; it has the U-Net ``step`` its persona is at, the step a run
    ``resumed_from`` (None: it started afresh or did not train) and the ``heldout`` scores of its
    ``metrics.json`` (left out when None)."""

    line: int
    status: str
    output: str | None = None
    error: str | None = None
    frames: int | None = None
    seconds: float | None = None
    step: int | None = None
    resumed_from: int | None = None
    heldout: dict | None = None

    def to_json(self) -> str:
        fields = asdict(self)
        return json.dumps({key: value for key, value in fields.items()
                           if value is not None or key not in PERSONA_FIELDS})


class JobStopped(R3DPError):
    """The batch was interrupted while this job was rendering (its output was discarded)."""

    def __init__(self, message: str = "interrupted before the video was complete; nothing was written"):
        super().__init__(message)


class Interrupted(JobStopped, StopRequested):
    """What a Ray worker's ``should_stop`` raises when the batch stops: a host's :class:`StopRequested`, so
    persona training saves a checkpoint, then stops."""

    def __init__(self):
        super().__init__("interrupted: the batch was stopped")


class BatchWorker:
    """Every model the batch needs, loaded once, and a ``PortraitCache`` shared by the jobs it renders.

    Args:
        models_request: a request needing every model of the batch (``jobs.models_request``).
        models_dir: the models folder (a path this worker can read).
        video_model: optional factory of a ready video model, used instead of the folder's checkpoint.
        portrait_capacity: prepared portraits kept (jobs of one photo are sent to a worker one after another).
        faces: the faces the batch's up-front check found (a ``geometry.framing.remembered_faces`` memo): a job's
            own check and its portrait reuse them instead of searching the photo again.
    """

    def __init__(self, models_request, models_dir: Path, video_model: Callable[[], torch.nn.Module] | None = None,
                 portrait_capacity: int = 4, faces: dict | None = None):
        from ..device import Precision
        from ..pipeline.generate import load_job_models
        from ..pipeline.portraits import PortraitCache

        precision = Precision.resolve(models_request.device, models_request.dtype)
        self.models_dir = Path(models_dir)
        self.device = precision.device
        self.wav2vec2 = None        # (model, StreamConfig), loaded by the first persona job
        self.persona = None         # the last persona animated (jobs of one persona come one after another)
        if models_request.persona is not None:   # persona jobs only: nothing of the photo path is loaded
            self.models = None
        else:
            ready = video_model().to(precision.device) if video_model is not None else None
            self.models = load_job_models(models_request, self.models_dir, precision, video_model=ready)
        self.portraits = PortraitCache(portrait_capacity)
        self.faces = {} if faces is None else faces

    def run(self, job: Job, progress=None, should_stop=None, say=None) -> JobResult:
        """Validate and render one job into its output (atomically). A job's own failure is returned as a failed
        result; an interrupt (``KeyboardInterrupt``) propagates, with nothing half-written left behind.
        ``progress(done, total)`` after each chunk of frames; ``say`` is not used (rendering says nothing)."""
        from ..geometry.framing import remembered_faces
        from ..pipeline.admission import admit
        from ..pipeline.generate import run_job

        started = time.perf_counter()
        request = job.request
        try:
            with remembered_faces(self.faces):
                admitted = admit(request, self.models_dir, check_models=False)  # the models are loaded
                if request.persona is not None:
                    summary = self._run_persona(request, admitted.inputs, progress, should_stop)
                else:
                    summary = run_job(request, admitted.inputs, self.models, masks=admitted.masks,
                                      progress=progress, log=lambda _: None, should_stop=should_stop,
                                      portraits=self.portraits)
        except R3DPError as exc:
            return JobResult(job.line, "failed", str(request.out), str(exc),
                             seconds=round(time.perf_counter() - started, 3))
        except Exception as exc:  # noqa: BLE001 — one job's crash is recorded and the batch goes on
            return JobResult(job.line, "failed", str(request.out), f"{type(exc).__name__}: {exc}",
                             seconds=round(time.perf_counter() - started, 3))
        return JobResult(job.line, "done", str(summary.path), frames=summary.frames,
                         seconds=round(time.perf_counter() - started, 3))

    def _run_persona(self, request, inputs, progress, should_stop):
        """A persona clip (``pipeline.persona.run_persona_job``), with this worker's wav2vec2 and the persona kept
        loaded while the next job animates the same folder."""
        from ..pipeline.persona import load_wav2vec2, run_persona_job
        from ..talk3d.animate import load_persona_model

        if self.wav2vec2 is None:
            self.wav2vec2 = load_wav2vec2(self.models_dir, self.device)
        folder = Path(request.persona).resolve()
        if self.persona is None or self.persona.folder != folder:
            self.persona = None
            self.persona = load_persona_model(folder, self.device)
        return run_persona_job(request, inputs, self.models_dir, progress=progress, log=lambda _: None,
                               should_stop=should_stop, wav2vec2=self.wav2vec2, persona=self.persona)

    def portrait_counts(self) -> tuple[int, int]:
        """(portraits prepared, jobs served from the cache) so far."""
        return self.portraits.prepared, self.portraits.reused

