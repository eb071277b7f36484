"""`r3dp batch` on the synthetic models folder with the tiny video model: job lists, up-front checks, the
results file, skipping, the portrait cache, interrupts, and the Ray backend against the local one."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from r3dp_core import cli
from r3dp_core.batch.jobs import load_jobs
from r3dp_core.batch.run import run_batch
from r3dp_core.errors import InputError
from r3dp_core.parity.synthetic_job import (
    short_speech,
    tiny_video_model,
    write_models_folder,
    write_portrait,
    write_wav,
)
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
    """Three rows, the third bad (its voice clip does not exist); the first two share a photo."""
    out_dir = tmp_path_factory.mktemp("local_out")
    jobs = write_csv(inputs["root"] / "jobs.csv", [
        row("anna", "anna/first.mp4"), row("anna", "anna/second.mp4", seed="6", blink="false"),
        row("ben", "ben.mp4", audio="missing.wav")])
    events = []
    report = batch(inputs, jobs, out_dir, events)
    return {"jobs": jobs, "out_dir": out_dir, "report": report, "events": events}


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


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_renders_the_local_frames_and_survives_a_killed_worker(inputs, local_run, ray_cluster, tmp_path):
    out_dir = tmp_path / "ray_out"
    killed = []

    def kill_the_first_worker(event):
        if event.kind == "start" and not killed:
            killed.append(event.worker)
            ray_cluster.kill(ray_cluster.get_actor(event.worker))

    events = []

    def record(event):
        events.append(event)
        kill_the_first_worker(event)

    report = run_batch(local_run["jobs"], out_dir, models_dir=inputs["models"], device="cpu", ray="auto",
                       cpus_per_worker=1, on_event=record, video_model=tiny_video_model)
    assert [(r.line, r.status) for r in report.results] == [(2, "done"), (3, "done"), (4, "failed")]
    retried = [e for e in events if e.kind == "retry"]
    assert len(retried) == 1 and retried[0].worker == killed[0]
    starts = [(e.line, e.worker) for e in events if e.kind == "start"]
    assert len(starts) == 3 and starts[-1][0] == retried[0].line and starts[-1][1] != killed[0]
    for name in ("anna/first.mp4", "anna/second.mp4"):
        assert np.array_equal(frames_of(out_dir / name), frames_of(local_run["out_dir"] / name)), name
    assert not list(out_dir.rglob("*.partial.mp4"))
    assert results_of(out_dir)[2]["error"] == local_run["report"].results[2].error
    shutil.rmtree(out_dir)
