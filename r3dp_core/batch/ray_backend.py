"""The Ray backend: one actor per GPU (or per ``cpus_per_worker`` CPUs) holds the models and renders jobs.

Jobs are grouped by photo: a worker keeps taking the jobs of its current photo, so its portrait cache pays
off, and a free worker takes the photo with the most jobs left that no other worker holds. Every path in a
job is absolute and must be readable and writable on every node: a shared filesystem (NFS, SMB, Lustre) or
an object store mounted at the same path everywhere (s3fs, gcsfuse, blobfuse). Workers write the videos
(atomically, beside their final name); only the driver writes ``results.jsonl``. A worker that dies has its
job retried once on another worker.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque

from ..errors import InputError
from ..video_io import partial_files
from .jobs import Job, photo_key
from .run import BatchEvent, WorkerSetup, interrupted
from .worker import BatchWorker, JobResult, JobStopped

#: attempts per job: the first, and one retry on another worker if the first one's worker died
MAX_ATTEMPTS = 2
#: seconds between progress polls of busy workers
POLL_SECONDS = 0.5
#: seconds a stopping batch waits for its workers to discard their unfinished videos
STOP_GRACE_SECONDS = 30.0


class RayWorker:
    """The actor: a ``BatchWorker`` plus what the driver asks while a job renders (progress, stop).

    It runs with two threads of concurrency: ``render`` in one, ``progress``/``stop`` answered in the other.
    """

    def __init__(self, setup: WorkerSetup, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._worker = BatchWorker(setup.models_request, setup.models_dir, setup.video_model)
        self._progress: tuple[int, int, int] | None = None
        self._stopping = False

    def render(self, job: Job) -> JobResult:
        def track(done: int, total: int) -> None:
            self._progress = (job.line, done, total)

        def check() -> None:
            if self._stopping:
                raise JobStopped()

        try:
            return self._worker.render(job, progress=track, should_stop=check)
        finally:
            self._progress = None

    def progress(self) -> tuple[int, int, int] | None:
        return self._progress

    def stop(self) -> None:
        self._stopping = True

    def portrait_counts(self) -> tuple[int, int]:
        return self._worker.portrait_counts()


class PhotoQueue:
    """Pending jobs grouped by photo, handed out so that each worker stays on one photo as long as it can."""

    def __init__(self, jobs: list[Job]):
        memo = {}
        self.groups: OrderedDict[str, deque[Job]] = OrderedDict()
        for job in jobs:
            self.groups.setdefault(photo_key(job.request.image, memo), deque()).append(job)
        self.retries: deque[Job] = deque()
        self.held: dict[str, str] = {}  # worker name -> photo key

    def __bool__(self) -> bool:
        return bool(self.retries) or any(self.groups.values())

    def next_for(self, worker: str) -> Job | None:
        if self.retries:
            return self.retries.popleft()
        current = self.held.get(worker)
        if current is None or not self.groups.get(current):
            left = [key for key, jobs in self.groups.items() if jobs]
            if not left:
                return None
            free = [key for key in left if key not in self.held.values()]
            current = max(free or left, key=lambda key: len(self.groups[key]))
            self.held[worker] = current
        return self.groups[current].popleft()

    def drain(self) -> list[Job]:
        jobs = list(self.retries) + [job for group in self.groups.values() for job in group]
        self.retries.clear()
        self.groups.clear()
        return jobs


def _connect(address: str):
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed: pip install 'r3dp[ray]' (on every node).") from None
    started_here = False
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False,
                 runtime_env={"env_vars": {"GLOG_minloglevel": "2", "OMP_WAIT_POLICY": "passive"}})
        started_here = True
    return ray, started_here


def _worker_options(ray, cpus_per_worker: int, jobs: int) -> tuple[int, dict, int | None]:
    """(number of workers, actor resources, torch threads per worker) from the cluster's resources."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return min(gpus, jobs), {"num_gpus": 1, "num_cpus": 1}, None
    if cpus_per_worker < 1:
        raise InputError(f"--cpus-per-worker must be at least 1, got {cpus_per_worker}.")
    cpus = int(resources.get("CPU", 1))
    if cpus < cpus_per_worker:
        raise InputError(f"The Ray cluster has {cpus} CPU(s) and no GPU, fewer than --cpus-per-worker "
                         f"{cpus_per_worker}; lower --cpus-per-worker.")
    return min(cpus // cpus_per_worker, jobs), {"num_cpus": cpus_per_worker}, cpus_per_worker


def _discard_partials(job: Job) -> None:
    """A killed worker cannot clean up after itself: remove its unfinished video of ``job``."""
    for path in partial_files(job.output):
        path.unlink(missing_ok=True)


def run_ray(pending: list[Job], setup: WorkerSetup, emit, record, *, address: str = "local",
            cpus_per_worker: int = 1) -> tuple[int, int]:
    """Render ``pending`` jobs on Ray workers; ``record(result)`` as each one ends. Returns (portraits prepared,
    reused) summed over the workers' results."""
    ray, started_here = _connect(address)
    count, resources, threads = _worker_options(ray, cpus_per_worker, len(pending))
    actor_class = ray.remote(max_concurrency=2, max_restarts=0, **resources)(RayWorker)
    batch_id = uuid.uuid4().hex[:8]
    workers = {}
    for index in range(count):
        name = f"r3dp-batch-{batch_id}-{index}"
        workers[name] = actor_class.options(name=name).remote(setup, threads)
    queue = PhotoQueue(pending)
    attempts = {job.line: 0 for job in pending}
    in_flight: dict = {}  # object ref -> (worker name, job)
    started = done = 0
    counts = [0, 0]
    try:
        while True:
            busy = {name for name, _ in in_flight.values()}
            for name in [name for name in workers if name not in busy]:
                job = queue.next_for(name)
                if job is None:
                    break
                attempts[job.line] += 1
                started += attempts[job.line] == 1
                in_flight[workers[name].render.remote(job)] = (name, job)
                emit(BatchEvent("start", job.line, job.output, index=started, count=len(pending), worker=name))
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
            if not ready:
                _report_progress(ray, workers, in_flight, emit)
                continue
            name, job = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                workers.pop(name, None)
                _discard_partials(job)
                if attempts[job.line] < MAX_ATTEMPTS and workers:
                    queue.retries.append(job)
                    emit(BatchEvent("retry", job.line, job.output, worker=name, error=str(exc).splitlines()[0]))
                    continue
                result = JobResult(job.line, "failed", str(job.output),
                                   f"the worker rendering it died ({attempts[job.line]} attempt(s)): "
                                   f"{str(exc).splitlines()[0]}")
                if not workers:
                    for left in queue.drain():
                        record(JobResult(left.line, "failed", str(left.output), "every Ray worker died"))
            done += 1
            record(result)
            emit(BatchEvent("finished", job.line, job.output, index=done, count=len(pending), result=result))
        for totals in ray.get([actor.portrait_counts.remote() for actor in workers.values()]):
            counts = [counts[0] + totals[0], counts[1] + totals[1]]
    except KeyboardInterrupt:
        _stop(ray, workers, in_flight, record)
        raise
    finally:
        for actor in workers.values():
            ray.kill(actor)
        if started_here:
            ray.shutdown()
    return counts[0], counts[1]


def _report_progress(ray, workers: dict, in_flight: dict, emit) -> None:
    names = {name for name, _ in in_flight.values() if name in workers}
    try:
        states = ray.get([workers[name].progress.remote() for name in names], timeout=POLL_SECONDS)
    except Exception:  # noqa: BLE001 — a worker may die between two polls; its job's result will say so
        return
    for state in states:
        if state is not None and state[2]:
            emit(BatchEvent("frames", state[0], done=state[1], total=state[2]))


def _stop(ray, workers: dict, in_flight: dict, record) -> None:
    """Ask every worker to drop its unfinished video, wait a little for them, record the jobs as interrupted."""
    for actor in workers.values():
        actor.stop.remote()
    if in_flight:
        ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_GRACE_SECONDS)
    for _, job in in_flight.values():
        _discard_partials(job)
        record(interrupted(job))
