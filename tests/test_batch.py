"""`r3dp batch` on the synthetic models folder with the tiny video model: job lists, up-front checks, the
results file, skipping, the portrait cache, interrupts, progress lines, and the Ray backend against the local
one (free resources, workers that cannot start, a killed worker replaced, the command line's defaults)."""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from r3dp_core import cli, model_files
from r3dp_core.batch import ray_backend
from r3dp_core.batch.jobs import load_jobs, models_request
from r3dp_core.batch.run import run_batch
from r3dp_core.batch.types import BatchEvent, WorkerSetup
from r3dp_core.batch.worker import JobResult
from r3dp_core.errors import InputError
from r3dp_core.geometry import framing
from r3dp_core.parity.synthetic_job import short_speech, write_models_folder, write_portrait
from r3dp_core.pipeline.admission import needed_models
from r3dp_core.standins import tiny_video_model, write_wav
from r3dp_core.video_io import read_video_frames

SECONDS = 0.2  # 5 frames at 25 fps


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("batch")
    models = write_models_folder(root / "models", shared_dir)
    portrait = cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png"))
    write_portrait(root, "anna", portrait, models / "face_landmarker.task")
    write_portrait(root, "ben", cv2.flip(portrait, 1), models / "face_landmarker.task")  # a second, mirrored face
    samples, rate = short_speech(shared_dir, SECONDS)
    write_wav(root / "hello.wav", samples, rate)
    return {"root": root, "models": models}


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(column for row in rows for column in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(name: str, out: str, **options) -> dict:
    return {"image": f"{name}.png", "audio": "hello.wav", "out": out, "head_mask": f"{name}_head.png",
            "body_mask": f"{name}_body.png", "seed": "5", **options}


def batch(inputs: dict, jobs: Path, out_dir: Path, events: list | None = None, on_event=None, **options):
    record = on_event or (events.append if events is not None else None)
    return run_batch(jobs, out_dir, models_dir=inputs["models"], device="cpu", on_event=record,
                     video_model=tiny_video_model, **options)


def frames_of(path: Path) -> np.ndarray:
    return np.concatenate([chunk for chunk, _ in read_video_frames(path)])


def results_of(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory) -> dict:
    """Three rows, the third bad (its voice clip does not exist); the first two share a photo. Counts the face
    searches (MediaPipe face landmarkers opened by ``framing.find_faces``) the batch makes."""
    out_dir = tmp_path_factory.mktemp("local_out")
    jobs = write_csv(inputs["root"] / "jobs.csv", [
        row("anna", "anna/first.mp4"), row("anna", "anna/second.mp4", seed="6", blink="false"),
        row("ben", "ben.mp4", audio="missing.wav")])
    events, searched = [], []
    opener = framing.create_landmarker

    def counted(path, **options):
        searched.append(Path(path))
        return opener(path, **options)

    framing.create_landmarker = counted
    try:
        report = batch(inputs, jobs, out_dir, events)
    finally:
        framing.create_landmarker = opener
    return {"jobs": jobs, "out_dir": out_dir, "report": report, "events": events, "face_searches": searched}


def test_bad_row_is_recorded_with_its_line_and_the_others_render(inputs, local_run):
    out_dir, report = local_run["out_dir"], local_run["report"]
    results = results_of(out_dir)
    assert [(r["line"], r["status"]) for r in results] == [(2, "done"), (3, "done"), (4, "failed")]
    assert report.counts == {"done": 2, "failed": 1, "skipped": 0}
    for result, name in zip(results[:2], ("anna/first.mp4", "anna/second.mp4")):
        assert result["output"] == str(out_dir / name) and result["error"] is None
        assert result["frames"] == 5 and result["seconds"] > 0
        assert frames_of(out_dir / name).shape == (5, 64, 64, 3)
    failed = results[2]
    assert failed["output"] == str(out_dir / "ben.mp4") and failed["frames"] is None
    assert failed["error"] == f"{inputs['root'] / 'missing.wav'}: audio file not found. Check the path."
    assert [e.line for e in local_run["events"] if e.kind == "invalid"] == [4]
    # different seeds and blink settings: different clips
    assert np.abs(frames_of(out_dir / "anna/first.mp4").astype(int) - frames_of(out_dir / "anna/second.mp4")).mean() > 1
    assert sorted(p.name for p in out_dir.rglob("*")) == ["anna", "first.mp4", "results.jsonl", "second.mp4"]


def test_dry_run_and_batch_report_the_same_message(inputs, local_run, capsys):
    capsys.readouterr()
    cli.main(["generate", "--dry-run", "--image", str(inputs["root"] / "ben.png"), "--audio",
              str(inputs["root"] / "missing.wav"), "--out", str(local_run["out_dir"] / "x.mp4"), "--models-dir",
              str(inputs["models"])])
    printed = capsys.readouterr().err.strip()
    assert "missing.wav" in printed
    assert printed == f"r3dp generate: error: {results_of(local_run['out_dir'])[2]['error']}"


def test_a_photo_shared_by_two_jobs_is_prepared_once(local_run):
    report = local_run["report"]
    assert (report.portraits_prepared, report.portraits_reused) == (1, 1)
    starts = [(e.line, e.index, e.count) for e in local_run["events"] if e.kind == "start"]
    assert starts == [(2, 1, 2), (3, 2, 2)]
    frames = [(e.line, e.done, e.total) for e in local_run["events"] if e.kind == "frames"]
    assert frames[-1] == (3, 5, 5)


def test_the_face_check_runs_once_per_distinct_photo(inputs, local_run):
    """anna's two jobs: the up-front check, the worker's own check and the portrait preparation share one search
    (they were 5: a check per job up front, one per job in the worker, one for the portrait). ben's row fails
    on its voice clip before its photo is looked at."""
    assert local_run["face_searches"] == [inputs["models"] / "face_landmarker.task"]


def test_rerun_skips_finished_jobs_and_force_renders_them_again(inputs, local_run, capsys):
    out_dir = local_run["out_dir"]
    first = out_dir / "anna" / "first.mp4"
    stamp = first.stat().st_mtime_ns
    report = batch(inputs, local_run["jobs"], out_dir)
    results = results_of(out_dir)
    assert [(r["line"], r["status"], r["frames"]) for r in results] == [(2, "skipped", 5), (3, "skipped", 5),
                                                                        (4, "failed", None)]
    assert report.portraits_prepared == 0 and first.stat().st_mtime_ns == stamp

    # the command line: nothing to render, so the models folder's own video model is never loaded
    capsys.readouterr()
    status = cli.main(["batch", str(local_run["jobs"]), "--out-dir", str(out_dir), "--models-dir",
                       str(inputs["models"]), "--device", "cpu"])
    printed = capsys.readouterr()
    assert status == 1  # a row failed
    assert f"line 2: skipped, {first} is complete" in printed.err
    assert "line 4: error: " in printed.err and "missing.wav: audio file not found" in printed.err
    assert "batch: 0 done, 1 failed, 2 skipped" in printed.out and first.stat().st_mtime_ns == stamp

    only_first = write_csv(inputs["root"] / "first_only.csv", [row("anna", "anna/first.mp4")])
    report = batch(inputs, only_first, out_dir, force=True)
    assert [(r.line, r.status) for r in report.results] == [(2, "done")] and first.stat().st_mtime_ns != stamp


def test_interrupt_leaves_no_partial_output(inputs, tmp_path):
    jobs = write_csv(inputs["root"] / "interrupt.csv", [row("anna", "one.mp4"), row("anna", "two.mp4", chunk_size="2")])
    out_dir = tmp_path / "out"

    def stop_in_the_second_job(event):
        if event.kind == "frames" and event.line == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch(inputs, jobs, out_dir, on_event=stop_in_the_second_job)
    assert sorted(p.name for p in out_dir.iterdir()) == ["one.mp4", "results.jsonl"]
    results = results_of(out_dir)
    assert [(r["line"], r["status"]) for r in results] == [(2, "done"), (3, "failed")]
    assert "interrupted" in results[1]["error"]


def test_job_list_columns_are_generates_options(inputs, tmp_path):
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"image": "a.png", "audio": "a.wav", "out": "a.mp4", "camera": "orbit", "blink": False,
                    "mouth_scale": 1.5, "seed": None, "debug_panels": True}),
        "",
        json.dumps({"image": "b.png", "audio": "b.wav", "out": "b.mp4", "seed": "x"}),
        "{not json",
        json.dumps({"image": "c.png", "expression_video": "c.mp4"}),
    ]))
    jobs = load_jobs(jsonl, tmp_path / "out", device="cpu")
    assert [job.line for job in jobs] == [1, 3, 4, 5]
    first = jobs[0].request
    assert (first.camera, first.blink, first.mouth_scale, first.seed, first.debug_panels) == ("orbit", False, 1.5, 42,
                                                                                               True)
    assert first.image == tmp_path / "a.png" and first.out == tmp_path / "out" / "a.mp4" and first.device == "cpu"
    assert jobs[1].error == "argument --seed: invalid int value: 'x'"
    assert jobs[2].error.startswith("not valid JSON")
    assert jobs[3].error == "the following arguments are required: --out"

    unknown = write_csv(tmp_path / "unknown.csv", [{"image": "a.png", "out": "a.mp4", "colour": "red",
                                                    "device": "cpu"}])
    with pytest.raises(InputError, match=r"unknown column\(s\) colour, device \(device: set once for the whole batch"):
        load_jobs(unknown, tmp_path)
    (tmp_path / "jobs.txt").write_text("image,out\n")
    with pytest.raises(InputError, match="must be a .csv file"):
        load_jobs(tmp_path / "jobs.txt", tmp_path)


def test_strict_renders_nothing_when_a_row_is_bad(inputs, tmp_path):
    jobs = write_csv(inputs["root"] / "strict.csv", [row("anna", "ok.mp4"), row("anna", "bad.mp4", mouth_scale="9")])
    with pytest.raises(InputError, match=r"1 bad row\(s\).*\n  line 3: --mouth-scale 9.0 is outside"):
        batch(inputs, jobs, tmp_path / "out", strict=True)
    assert not (tmp_path / "out" / "ok.mp4").exists()


def test_progress_to_a_file_prints_a_line_per_tenth_of_a_clip():
    stream = io.StringIO()  # not a terminal, as a log file or a pipe
    show = cli.batch_printer(stream)
    show(BatchEvent("start", 2, Path("/o/a.mp4"), index=1, count=2, worker="local"))
    show(BatchEvent("start", 3, Path("/o/b.mp4"), index=2, count=2, worker="w1"))
    for done in range(1, 251):  # two jobs whose progress interleaves, as on Ray
        show(BatchEvent("frames", 2, done=done, total=250))
        if done <= 40:
            show(BatchEvent("frames", 3, done=done, total=40))
    show(BatchEvent("finished", 2, Path("/o/a.mp4"), index=1, count=2, result=JobResult(2, "done", "/o/a.mp4",
                                                                                      frames=250, seconds=12.5)))
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:2] == ["[1/2] line 2 -> /o/a.mp4 (local)", "[2/2] line 3 -> /o/b.mp4 (w1)"]
    assert [line for line in lines if line.startswith("  line 2: ") and "frames (" in line] == [
        f"  line 2: {25 * tenth}/250 frames ({10 * tenth} %)" for tenth in range(1, 11)]
    assert [line for line in lines if line.startswith("  line 3: ")] == [
        f"  line 3: {4 * tenth}/40 frames ({10 * tenth} %)" for tenth in range(1, 11)]
    assert lines[-1] == "  line 2: done, 250 frames in 12.5 s" and len(lines) == 23

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    show = cli.batch_printer(terminal)
    for done in range(1, 5):
        show(BatchEvent("frames", 2, done=done, total=4))
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("4/4 frames\n")


def _models_without(models: Path, folder: Path, *names: str) -> Path:
    """A models folder that links to every entry of ``models`` except ``names``."""
    folder.mkdir()
    for entry in models.iterdir():
        if entry.name not in names:
            (folder / entry.name).symlink_to(entry)
    return folder


def _official_motion(path: Path, frames: int = 6) -> Path:
    rng = np.random.default_rng(0)
    np.save(path, {"exp": rng.normal(size=(frames, 64)).astype(np.float32) * 0.05})
    return path


def test_missing_model_refusal_names_the_rows_that_need_it(inputs, tmp_path):
    models = _models_without(inputs["models"], tmp_path / "models", "audio2secc_vae", "hubert")
    _official_motion(inputs["root"] / "motion.npy")
    jobs = write_csv(inputs["root"] / "needs.csv", [
        row("anna", "moved.mp4", audio="", motion="motion.npy"),                    # line 2: no audio, masks
        row("anna", "spoken.mp4"),                                                   # line 3: audio models
        row("ben", "unmasked.mp4", audio="", motion="motion.npy", head_mask="", body_mask=""),  # line 4: segmenter
        row("ben", "spoken_too.mp4", seed="7")])                                     # line 5: audio models
    with pytest.raises(InputError) as refused:
        run_batch(jobs, tmp_path / "out", models_dir=models, device="cpu", video_model=tiny_video_model)
    message = str(refused.value)
    assert message.startswith("3 model file(s) missing (`r3dp models fetch` downloads what can be downloaded); "
                              "nothing was rendered:\n")
    needed_by = [line.strip() for line in message.splitlines() if line.strip().startswith("needed by")]
    assert needed_by == ["needed by line 3 (spoken.mp4), line 5 (spoken_too.mp4)"] * 2 + [
        "needed by line 4 (unmasked.mp4)"]
    assert str(models / "audio2secc_vae") in message and "selfie_multiclass_256x256.tflite" in message
    assert not (tmp_path / "out" / "moved.mp4").exists()


def test_a_batch_of_motion_jobs_does_not_need_the_audio_models(inputs, tmp_path):
    """Rows driven by a motion file or a video, no audio-driven row: the batch runs on a models folder without
    the audio models (the video-driven row is bad for its own reason: its video does not exist)."""
    models = _models_without(inputs["models"], tmp_path / "models", "audio2secc_vae", "hubert")
    _official_motion(inputs["root"] / "motion.npy")
    jobs = write_csv(inputs["root"] / "motion.csv", [
        row("anna", "driven.mp4", audio="", expression_video="no_such_driver.mp4"),
        row("anna", "moved.mp4", audio="", motion="motion.npy")])
    report = run_batch(jobs, tmp_path / "out", models_dir=models, device="cpu", video_model=tiny_video_model)
    assert [(r.line, r.status, r.frames) for r in report.results] == [(2, "failed", None), (3, "done", 6)]
    assert report.results[0].error.startswith(f"{inputs['root'] / 'no_such_driver.mp4'}: ")
    assert frames_of(tmp_path / "out" / "moved.mp4").shape == (6, 64, 64, 3)

    # the batch's model list is admission's, job by job: the union of what its jobs need, whatever the order
    requests = [job.request for job in load_jobs(write_csv(tmp_path / "mixed.csv", [
        row("anna", "a.mp4", audio="", expression_video="v.mp4"), row("anna", "b.mp4", audio="", motion="m.npy"),
        row("anna", "c.mp4", head_mask="", body_mask="")]), tmp_path / "out", device="cpu")]
    for chosen in (requests[:2], requests[1:], requests, requests[::-1], [requests[1], requests[2]]):
        assert set(needed_models(models_request(chosen))) == {key for r in chosen for key in needed_models(r)}
    assert "audio_model" not in needed_models(models_request(requests[:2]))


class FakeRay:
    """What ``_worker_options`` asks a cluster: its resources, its free resources and its nodes."""

    def __init__(self, total: dict, free: dict, nodes: list[float]):
        self.total, self.free = total, free
        self.node_list = [{"Alive": True, "Resources": {"CPU": cpus}} for cpus in nodes]
        self.node_list.append({"Alive": False, "Resources": {"CPU": 64.0}})  # a lost node does not count

    def cluster_resources(self) -> dict:
        return self.total

    def available_resources(self) -> dict:
        return self.free

    def nodes(self) -> list[dict]:
        return self.node_list


def test_ray_workers_are_sized_from_the_free_resources():
    options = ray_backend._worker_options
    busy = FakeRay({"CPU": 16.0}, {"CPU": 9.0}, [8.0, 8.0])  # 7 CPUs held by other work
    assert options(busy, None, jobs=10) == (2, {"num_cpus": 4}, 4)  # default: min(4, 8 CPUs a node)
    assert options(busy, 3, jobs=10) == (3, {"num_cpus": 3}, 3)
    assert options(busy, 1, jobs=5) == (5, {"num_cpus": 1}, 1)
    two_cores = FakeRay({"CPU": 2.0}, {"CPU": 2.0}, [2.0])
    assert options(two_cores, None, jobs=3) == (1, {"num_cpus": 2}, 2)  # the default fits a 2-core machine
    with pytest.raises(InputError, match=r"^The Ray cluster has 1 free CPU\(s\) \(of 16\) and no GPU, fewer than "
                                         r"--cpus-per-worker 4; lower"):
        options(FakeRay({"CPU": 16.0}, {"CPU": 1.0}, [8.0, 8.0]), None, jobs=3)
    gpus = FakeRay({"CPU": 32.0, "GPU": 4.0}, {"CPU": 30.0, "GPU": 1.0}, [16.0, 16.0])  # 3 GPUs held elsewhere
    assert options(gpus, None, jobs=8) == (1, {"num_gpus": 1, "num_cpus": 1}, None)
    with pytest.raises(InputError, match=r"GPU\(s\) are all in use \(0 GPU\(s\) and 30 CPU\(s\) free\)"):
        options(FakeRay({"CPU": 32.0, "GPU": 4.0}, {"CPU": 30.0}, [16.0, 16.0]), None, jobs=8)


def test_actor_error_keeps_the_whole_exception():
    raised = ("The actor died because of an error raised in its creation task, \x1b[36mray::r3dp-batch-1:RayWorker."
              "__init__()\x1b[39m (pid=7, ip=10.0.0.2, actor_id=ab)\n           ^^^^^^^^\n  File \"/x/worker.py\", "
              "line 62, in __init__\n    self.models = load_job_models(\n                  ^^^^^^^^^^^\n"
              "r3dp_core.errors.InputError: 2 model file(s) missing:\n  - Missing model file for A: /m/a\n"
              "  - Missing model file for B: /m/b")
    assert ray_backend.actor_error(Exception(raised)) == (
        "The actor died because of an error raised in its creation task, ray::r3dp-batch-1:RayWorker.__init__() "
        "(pid=7, ip=10.0.0.2, actor_id=ab)\nr3dp_core.errors.InputError: 2 model file(s) missing:\n"
        "  - Missing model file for A: /m/a\n  - Missing model file for B: /m/b")
    plain = "The actor died unexpectedly before finishing this task.\n\tip: 10.0.0.2\nkilled by `ray.kill`."
    assert ray_backend.actor_error(Exception(plain)) == plain


def test_cli_ray_renders_with_default_options_on_this_machine(inputs, tmp_path, capsys, monkeypatch):
    """`r3dp batch --ray` exactly as a user types it, on the synthetic models folder: it starts a local cluster
    with this machine's CPUs (2 here) and one worker with the default --cpus-per-worker, min(4, 2). Progress
    captured (not a terminal) is a line per tenth of the clip. The workers build the tiny video model (the CLI
    has no option for it; the full-size synthetic one would spend minutes rendering 5 frames)."""
    pytest.importorskip("ray")
    import r3dp_core.batch.run as batch_run

    monkeypatch.setattr(batch_run, "run_batch", functools.partial(batch_run.run_batch, video_model=tiny_video_model))
    jobs = write_csv(inputs["root"] / "cli_ray.csv", [row("anna", "anna.mp4")])
    capsys.readouterr()
    status = cli.main(["batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--models-dir", str(inputs["models"]),
                       "--ray"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "batch: 1 done, 0 failed, 0 skipped" in printed.out
    assert "\r" not in printed.err and "  line 2: done, 5 frames in " in printed.err
    assert "[1/1] line 2 -> " in printed.err and "r3dp-batch-" in printed.err
    assert frames_of(tmp_path / "out" / "anna.mp4").shape == (5, 64, 64, 3)
    assert [(r["line"], r["status"], r["frames"]) for r in results_of(tmp_path / "out")] == [(2, "done", 5)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_renders_the_local_frames_and_replaces_a_killed_worker(inputs, local_run, ray_cluster, tmp_path):
    """Two CPUs and the default --cpus-per-worker: one worker. Killing it in the middle of the batch starts a
    replacement, which renders the killed job again and the remaining one, frame for frame as the local run."""
    out_dir = tmp_path / "ray_out"
    killed = []
    events = []

    def record(event):
        events.append(event)
        if event.kind == "start" and not killed:
            killed.append(event.worker)
            ray_cluster.kill(ray_cluster.get_actor(event.worker))

    report = run_batch(local_run["jobs"], out_dir, models_dir=inputs["models"], device="cpu", ray="auto",
                       on_event=record, video_model=tiny_video_model)
    assert [(r.line, r.status) for r in report.results] == [(2, "done"), (3, "done"), (4, "failed")]
    retried = [e for e in events if e.kind == "retry"]
    assert len(retried) == 1 and retried[0].worker == killed[0] and "killed by `ray.kill`" in retried[0].error
    replaced = [e for e in events if e.kind == "replaced"]
    assert len(replaced) == 1 and replaced[0].worker == killed[0]
    starts = [(e.line, e.worker) for e in events if e.kind == "start"]
    assert starts == [(2, killed[0]), (2, replaced[0].replacement), (3, replaced[0].replacement)]
    for name in ("anna/first.mp4", "anna/second.mp4"):
        assert np.array_equal(frames_of(out_dir / name), frames_of(local_run["out_dir"] / name)), name
    assert not list(out_dir.rglob("*.partial.mp4"))
    assert results_of(out_dir)[2]["error"] == local_run["report"].results[2].error
    assert (report.portraits_prepared, report.portraits_reused, report.worker_errors) == (1, 1, [])
    shutil.rmtree(out_dir)


def _wait_for_free_cpus(ray, cpus: int, seconds: float = 60.0) -> None:
    """Ray frees a killed actor's CPUs a moment after ``ray.kill`` returns (an earlier test's workers)."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.2)


def test_ray_reports_a_worker_that_cannot_start(inputs, local_run, ray_cluster, tmp_path):
    """A node without the models folder: the worker's whole error (every missing file) reaches the report and
    every job's result; a worker that is not ready within the start-up timeout is given up and reported."""
    _wait_for_free_cpus(ray_cluster, 2)
    jobs = [job for job in load_jobs(local_run["jobs"], tmp_path, models_dir=inputs["models"], device="cpu")
            if job.error is None][:1]
    missing = tmp_path / "not_on_this_node"
    setup = WorkerSetup(models_request([job.request for job in jobs]), missing, tiny_video_model)
    events, results = [], []
    ray_backend.run_ray(jobs, setup, events.append, results.append, address="auto")
    failed = [e for e in events if e.kind == "worker_failed"]
    assert len(failed) == 1
    error = failed[0].error
    assert error.startswith("The actor died because of an error raised in its creation task")
    assert "InputError: " in error and "model file(s) missing" in error
    for key in ("bfm", "face_landmarker", "audio_model", "hubert"):
        assert str(missing / model_files.BY_KEY[key].relpath) in error, key
    assert [(r.line, r.status) for r in results] == [(2, "failed")]
    assert results[0].error == f"no Ray worker could render it: {failed[0].worker}: {error}"

    events, results = [], []
    _wait_for_free_cpus(ray_cluster, 2)
    ray_backend.run_ray(jobs, WorkerSetup(setup.models_request, inputs["models"], tiny_video_model), events.append,
                        results.append, address="auto", start_timeout=0.05)
    failed = [e for e in events if e.kind == "worker_failed"]
    assert len(failed) == 1 and failed[0].error.startswith("did not start within 0.05 s")
    assert [(r.line, r.status) for r in results] == [(2, "failed")] and "did not start within" in results[0].error
