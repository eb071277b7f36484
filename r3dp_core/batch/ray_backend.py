"""The Ray backend: one actor per free GPU (or per ``cpus_per_worker`` free CPUs) holds the models and renders jobs
(or, in a personalise batch, trains one persona at a time).

Jobs are grouped by photo: a worker keeps taking the jobs of its current photo, so its portrait cache pays
off, and a free worker takes the photo with the most jobs left that no other worker holds. Every path in a
job is absolute and must be readable and writable on every node: a shared filesystem (NFS, SMB, Lustre) or
an object store mounted at the same path everywhere (s3fs, gcsfuse, blobfuse). Workers write the videos
(atomically, beside their final name), or their persona folders (checkpoints atomically); only the driver writes
``results.jsonl``. A worker that dies has its
job retried once on another worker, and a new worker is started in its place while jobs are left. A worker
that cannot start (its node lacks the models folder, it is never scheduled within the start-up timeout) is
reported with its whole error; the batch goes on with the others.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import OrderedDict, deque

from ..errors import InputError
from ..video_io import partial_files
from .jobs import Job, group_key
from .types import BatchEvent, WorkerSetup, interrupted, make_worker
from .worker import Interrupted, JobResult, JobStopped

#: attempts per job: the first, and one retry on another worker if the first one's worker died
MAX_ATTEMPTS = 2
#: seconds between progress polls of busy workers
POLL_SECONDS = 0.5
#: seconds a stopping batch waits for its workers to discard their unfinished videos
STOP_GRACE_SECONDS = 30.0
#: seconds a worker may take to start (be scheduled on a node and load its models) before it is given up
START_TIMEOUT_SECONDS = 600.0
#: CPUs per worker on a cluster without GPUs, unless the largest node has fewer
DEFAULT_CPUS_PER_WORKER = 4


class RayWorker:
    """The actor: a worker (``worker.make_worker``) plus what the driver asks while a job runs (progress, the
    lines it said, stop).

    It runs with two threads of concurrency: ``run`` in one, ``progress``/``stop`` answered in the other.
    """

    def __init__(self, setup: WorkerSetup, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._worker = make_worker(setup)
        self._progress: tuple | None = None
        self._notes: list[tuple[int, str]] = []
        self._stopping = False

    def ready(self) -> bool:
        """Answers once the models are loaded (the constructor has returned)."""
        return True

    def run(self, job: Job) -> tuple[JobResult, list[tuple[int, str]]]:
        """The job's result, and the lines it said that ``progress`` has not handed over yet."""
        def track(done: int, total: int, stage: str | None = None, loss: float | None = None) -> None:
            self._progress = (job.line, done, total, stage, loss)

        def say(text: str) -> None:
            self._notes.append((job.line, text))

        def check() -> None:
            if self._stopping:
                raise Interrupted() if job.kind == "personalise" else JobStopped()

        try:
            return self._worker.run(job, progress=track, should_stop=check, say=say), self._take_notes()
        finally:
            self._progress = None

    def _take_notes(self) -> list[tuple[int, str]]:
        notes, self._notes = self._notes, []
        return notes

    def progress(self) -> tuple[tuple | None, list[tuple[int, str]]]:
        """``(line, done, total, stage, loss)`` of the job running (None: none), and the lines said since the last
        call."""
        return self._progress, self._take_notes()

    def stop(self) -> None:
        self._stopping = True

    def portrait_counts(self) -> tuple[int, int]:
        return self._worker.portrait_counts()


class PhotoQueue:
    """Pending jobs grouped by photo (``jobs.group_key``: a persona is a group of its own), handed out so that each
    worker stays on one photo as long as it can."""

    def __init__(self, jobs: list[Job]):
        memo = {}
        self.groups: OrderedDict[str, deque[Job]] = OrderedDict()
        for job in jobs:
            self.groups.setdefault(group_key(job, memo), deque()).append(job)
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


def _largest_node_cpus(ray) -> int:
    """The CPUs of the cluster's largest live node."""
    cpus = [node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive", True)]
    return int(max(cpus, default=0))


def default_cpus_per_worker(ray) -> int:
    """``--cpus-per-worker``'s default: the smaller of 4 and the CPUs of the largest node (at least 1)."""
    return max(1, min(DEFAULT_CPUS_PER_WORKER, _largest_node_cpus(ray)))


def _worker_options(ray, cpus_per_worker: int | None, jobs: int) -> tuple[int, dict, int | None]:
    """(number of workers, actor resources, torch threads per worker) from the cluster's free resources
    (``ray.available_resources``: what other work holds is not counted)."""
    total, free = ray.cluster_resources(), ray.available_resources()
    free_cpus = int(free.get("CPU", 0))
    gpus = int(total.get("GPU", 0))
    if gpus:
        free_gpus = int(free.get("GPU", 0))
        if free_gpus < 1 or free_cpus < 1:
            raise InputError(f"The Ray cluster's {gpus} GPU(s) are all in use ({free_gpus} GPU(s) and {free_cpus} "
                             "CPU(s) free); run the batch when one is free.")
        return min(free_gpus, free_cpus, jobs), {"num_gpus": 1, "num_cpus": 1}, None
    if cpus_per_worker is None:
        cpus_per_worker = default_cpus_per_worker(ray)
    if cpus_per_worker < 1:
        raise InputError(f"--cpus-per-worker must be at least 1, got {cpus_per_worker}.")
    if free_cpus < cpus_per_worker:
        raise InputError(f"The Ray cluster has {free_cpus} free CPU(s) (of {int(total.get('CPU', 0))}) and no GPU, "
                         f"fewer than --cpus-per-worker {cpus_per_worker}; lower --cpus-per-worker or run the batch "
                         "when more CPUs are free.")
    return min(free_cpus // cpus_per_worker, jobs), {"num_cpus": cpus_per_worker}, cpus_per_worker


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def actor_error(exc: BaseException) -> str:
    """A Ray actor's error for the report, whole: the first line (which actor, pid, node) and the exception
    that ended it with all of its lines (the model files a node lacks, ...), without Ray's colour codes and
    without the traceback's code lines."""
    text = _ANSI.sub("", str(exc)).strip()
    lines = text.splitlines()
    frames = [index for index, line in enumerate(lines) if line.startswith('  File "')]
    if not frames:
        return text
    tail = lines[frames[-1] + 1:]
    while tail and (tail[0].startswith("    ") or not tail[0].strip()):  # the frame's code and ^^^ markers
        tail.pop(0)
    return "\n".join([lines[0], *tail]) if tail else text


class WorkerPool:
    """The batch's actors: those starting (waiting for ``ready``, each with a deadline) and those ready."""

    def __init__(self, ray, actor_class, setup: WorkerSetup, threads: int | None, emit, start_timeout: float):
        self.ray, self.actor_class, self.setup, self.threads = ray, actor_class, setup, threads
        self.emit, self.start_timeout = emit, start_timeout
        self.batch_id = uuid.uuid4().hex[:8]
        self.created = 0
        self.ready: dict[str, object] = {}  # name -> actor
        self.starting: dict[object, tuple[str, object, float]] = {}  # ready() ref -> (name, actor, deadline)
        self.errors: list[str] = []

    def start(self) -> str:
        name = f"r3dp-batch-{self.batch_id}-{self.created}"
        self.created += 1
        actor = self.actor_class.options(name=name).remote(self.setup, self.threads)
        self.starting[actor.ready.remote()] = (name, actor, time.monotonic() + self.start_timeout)
        return name

    def __len__(self) -> int:
        return len(self.ready) + len(self.starting)

    def started(self, ref) -> None:
        """``ref`` (a ``ready()`` call) has returned: the worker is ready, or its start failed."""
        name, actor, _ = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 — any start failure is reported whole; the batch goes on
            self._failed(name, actor, actor_error(exc))
            return
        self.ready[name] = actor

    def expire(self) -> None:
        """Give up the workers still starting past their deadline."""
        now = time.monotonic()
        for ref, (name, actor, deadline) in list(self.starting.items()):
            if now > deadline:
                del self.starting[ref]
                self._failed(name, actor, f"did not start within {self.start_timeout:g} s (not scheduled on a node "
                                          "with the resources it asks for, or still loading its models)")

    def _failed(self, name: str, actor, error: str) -> None:
        self.ray.kill(actor)
        self.errors.append(f"{name}: {error}")
        self.emit(BatchEvent("worker_failed", 0, worker=name, error=error))

    def lost(self, name: str) -> None:
        self.ready.pop(name, None)

    def kill_all(self) -> None:
        for actor in [*self.ready.values(), *(actor for _, actor, _ in self.starting.values())]:
            self.ray.kill(actor)


def _discard_partials(job: Job) -> None:
    """A killed worker cannot clean up after itself: remove its unfinished video of ``job`` (a persona's checkpoints
    are written atomically: nothing of it to remove)."""
    if job.kind != "generate":
        return
    for path in partial_files(job.output):
        path.unlink(missing_ok=True)


def run_ray(pending: list[Job], setup: WorkerSetup, emit, record, *, address: str = "local",
            cpus_per_worker: int | None = None, start_timeout: float | None = None) -> tuple[int, int]:
    """Run ``pending`` jobs on Ray workers; ``record(result)`` as each one ends. Returns (portraits prepared,
    reused) summed over the workers alive at the end.

    ``cpus_per_worker``: None for ``default_cpus_per_worker``. ``start_timeout``: seconds a worker may take to
    start (None: ``START_TIMEOUT_SECONDS``).
    """
    ray, started_here = _connect(address)
    try:
        count, resources, threads = _worker_options(ray, cpus_per_worker, len(pending))
    except InputError:
        if started_here:
            ray.shutdown()
        raise
    actor_class = ray.remote(max_concurrency=2, max_restarts=0, **resources)(RayWorker)
    pool = WorkerPool(ray, actor_class, setup, threads, emit,
                      START_TIMEOUT_SECONDS if start_timeout is None else start_timeout)
    for _ in range(count):
        pool.start()
    queue = PhotoQueue(pending)
    attempts = {job.line: 0 for job in pending}
    in_flight: dict = {}  # render ref -> (worker name, job)
    started = done = 0
    counts = [0, 0]

    def finish(job: Job, result: JobResult) -> None:
        nonlocal done
        done += 1
        record(result)
        emit(BatchEvent("finished", job.line, job.output, index=done, count=len(pending), result=result))

    try:
        while True:
            busy = {name for name, _ in in_flight.values()}
            for name in [name for name in pool.ready if name not in busy]:
                job = queue.next_for(name)
                if job is None:
                    break
                attempts[job.line] += 1
                started += attempts[job.line] == 1
                in_flight[pool.ready[name].run.remote(job)] = (name, job)
                emit(BatchEvent("start", job.line, job.output, index=started, count=len(pending), worker=name))
            if not in_flight and (not queue or not pool):
                break  # every job handed out and finished, or no worker left to take the rest
            ready, _ = ray.wait(list(in_flight) + list(pool.starting), num_returns=1, timeout=POLL_SECONDS)
            pool.expire()
            if not ready:
                _report_progress(ray, pool.ready, in_flight, emit)
                continue
            if ready[0] in pool.starting:
                pool.started(ready[0])
                continue
            if ready[0] not in in_flight:  # a start-up that expired in the same poll
                continue
            name, job = in_flight.pop(ready[0])
            try:
                result, notes = ray.get(ready[0])
                _emit_notes(notes, emit)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                error = actor_error(exc)
                pool.lost(name)
                _discard_partials(job)
                if attempts[job.line] < MAX_ATTEMPTS:
                    queue.retries.append(job)
                    emit(BatchEvent("retry", job.line, job.output, worker=name, error=error))
                    if len(pool) < count:
                        emit(BatchEvent("replaced", 0, worker=name, error=error, replacement=pool.start()))
                    continue
                result = JobResult(job.line, "failed", str(job.output),
                                   f"the worker rendering it died ({attempts[job.line]} attempt(s)): {error}")
                if queue and len(pool) < count:
                    emit(BatchEvent("replaced", 0, worker=name, error=error, replacement=pool.start()))
            finish(job, result)
        if queue:  # no worker is left to render these: say why the last one could not start
            why = pool.errors[-1] if pool.errors else "every Ray worker died"
            for left in queue.drain():
                finish(left, JobResult(left.line, "failed", str(left.output), f"no Ray worker could render it: {why}"))
        for actor in pool.ready.values():
            try:
                prepared, reused = ray.get(actor.portrait_counts.remote(), timeout=STOP_GRACE_SECONDS)
            except Exception:  # noqa: BLE001 — a worker lost after its last job: its counts are lost with it
                continue
            counts = [counts[0] + prepared, counts[1] + reused]
    except KeyboardInterrupt:
        _stop(ray, pool.ready, in_flight, record)
        raise
    finally:
        pool.kill_all()
        if started_here:
            ray.shutdown()
    return counts[0], counts[1]


def _emit_notes(notes: list[tuple[int, str]], emit) -> None:
    for line, text in notes:
        emit(BatchEvent("note", line, text=text))


def _report_progress(ray, workers: dict, in_flight: dict, emit) -> None:
    names = {name for name, _ in in_flight.values() if name in workers}
    try:
        answers = ray.get([workers[name].progress.remote() for name in names], timeout=POLL_SECONDS)
    except Exception:  # noqa: BLE001 — a worker may die between two polls; its job's result will say so
        return
    for state, notes in answers:
        _emit_notes(notes, emit)
        if state is not None and state[2]:
            line, done, total, stage, loss = state
            emit(BatchEvent("frames" if stage is None else "steps", line, done=done, total=total, stage=stage,
                            loss=loss))


def _stop(ray, workers: dict, in_flight: dict, record) -> None:
    """Ask every worker to drop its unfinished video, wait a little for them, record the jobs as interrupted."""
    for actor in workers.values():
        actor.stop.remote()
    if in_flight:
        ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_GRACE_SECONDS)
    for _, job in in_flight.values():
        _discard_partials(job)
        record(interrupted(job))
