"""`r3dp batch --personalise`: a persona per row, with the render batch's results.jsonl, skip/resume and failure
isolation, locally and on a local Ray cluster. The training is a fake with personalise's signature (it writes the
files a finished persona has, says a line and reports its steps), so these tests take seconds; the real training
has its own tests."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from r3dp_core import cli
from r3dp_core.batch.personalise import load_personalise_jobs, personalise_parser, personalise_printer
from r3dp_core.batch.run import run_batch
from r3dp_core.batch.types import BatchEvent
from r3dp_core.batch.worker import JobResult
from r3dp_core.errors import InputError
from r3dp_core.talk3d.personalise import run as personalise_run
from r3dp_core.talk3d.personalise.run import PersonaliseOptions, PersonaliseResult
from r3dp_core.talk3d.personalise.training import TrainingInterrupted
from tests.test_batch import results_of, write_csv

#: (video name, steps it trained from, to) of every fake training run in this process
CALLS: list[tuple[str, int, int]] = []
SAID = "a persona is a person's likeness"


def fake_personalise(options: PersonaliseOptions, *, host, say, on_step) -> PersonaliseResult:
    """Personalise's contract in miniature: bad input raises before anything is written; the steps resume from the
    folder's checkpoint; a stop saves the checkpoint and raises ``TrainingInterrupted``."""
    video, folder = Path(options.video), Path(options.out)
    if video.stem.startswith("noface"):
        raise InputError(f"{video}: no face was found in the first seconds of the video. Film the person facing the "
                         "camera, or trim the video with --start.")
    if video.stem.startswith("crash"):
        raise RuntimeError("the fake training crashed")
    total = options.steps or 40
    checkpoint = folder / "training" / "checkpoint.json"
    before = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "personalise.json").write_text(json.dumps({
        "video": str(video.resolve()), "preset": options.preset, "start": options.start, "end": options.end,
        "face": options.face}))
    say(SAID)
    step = before

    def save() -> None:
        checkpoint.parent.mkdir(exist_ok=True)
        checkpoint.write_text(json.dumps({"step": step}))

    try:
        while step < total:
            host.check()
            step += 1
            on_step("U-Net", step, total, {"total": 1.0 / step, "l1": 0.5})
    except KeyboardInterrupt as stop:
        save()
        raise TrainingInterrupted(step, total, stop) from stop
    save()
    metrics = {"step": step, "heldout": {"psnr": 20.0 + step / 100, "psnr_at_start": 18.0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "persona.json").write_text("{}")
    CALLS.append((video.name, before, step))
    return PersonaliseResult(folder, step, before or None, metrics, ["lpips"], [])


@pytest.fixture
def fake(monkeypatch):
    """The library's ``personalise``, replaced where the batch calls it."""
    monkeypatch.setattr(personalise_run, "personalise", fake_personalise)
    CALLS.clear()
    return CALLS


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A folder of (empty) videos and a models folder with the tiny EG3D prior's slot filled."""
    root = tmp_path / "in"
    (root / "clips").mkdir(parents=True)
    for name in ("anna.mp4", "ben.mp4", "noface.mp4", "crash.mp4", "cleo.mp4"):
        (root / "clips" / name).write_bytes(b"not really a video")
    models = tmp_path / "models"
    (models / "eg3d").mkdir(parents=True)
    (models / "eg3d" / "standin-tiny-triplane.safetensors").write_bytes(b"")
    return {"root": root, "models": models, "out": tmp_path / "out"}


def batch(inputs: dict, jobs: Path, **options):
    return run_batch(jobs, inputs["out"], models_dir=inputs["models"], device="cpu", personalise=True, **options)


def test_rows_are_personalise_options(inputs):
    root, out = inputs["root"], inputs["out"]
    jobs = write_csv(root / "jobs.csv", [
        {"video": "clips/anna.mp4", "out": "people/anna", "preset": "tiny", "steps": "60", "save_every": "20",
         "start": "1.5", "end": "90", "face": "1", "anchor_frames": "0,85,110", "seed": "7", "restart": "yes"},
        {"video": "clips/ben.mp4"},
        {"video": "clips/cleo.mp4", "out": str(root / "elsewhere"), "face": "largest", "restart": "false"},
        {"video": "clips/anna.mp4", "steps": "many"},
        {"video": "", "out": "nobody"},
        {"video": "clips/anna.mp4", "preset": "huge"}])
    parsed = load_personalise_jobs(jobs, out, models_dir=inputs["models"], device="cpu", dtype="bf16")
    assert [job.line for job in parsed] == [2, 3, 4, 5, 6, 7] and {job.kind for job in parsed} == {"personalise"}
    assert parsed[0].request == PersonaliseOptions(
        video=(root / "clips" / "anna.mp4").resolve(), out=(out / "people" / "anna").resolve(), preset="tiny",
        steps=60, save_every=20, start=1.5, end=90.0, face=1, models_dir=inputs["models"], device="cpu",
        dtype="bfloat16", restart=True, anchor_frames=[0, 85, 110], seed=7)
    ben = parsed[1].request
    assert ben.out == out.resolve() / "ben" and parsed[1].output == ben.out  # out: the video's stem
    defaults = personalise_parser()  # empty cells: personalise's own defaults
    assert (ben.preset, ben.steps, ben.face, ben.restart, ben.anchor_frames, ben.seed) == (
        "full", None, defaults.get_default("face"), False, None, 0)
    assert parsed[2].request.out == root / "elsewhere" and parsed[2].request.restart is False
    assert parsed[3].error == "argument --steps: invalid int value: 'many'"
    assert parsed[4].error == "the following arguments are required: --video"
    assert parsed[5].error.startswith("argument --preset: invalid choice: 'huge'")

    jsonl = root / "jobs.jsonl"
    jsonl.write_text(json.dumps({"video": "clips/anna.mp4", "anchor_frames": [3, 9], "restart": True, "steps": 5,
                                 "start": None}) + "\n")
    (first,) = load_personalise_jobs(jsonl, out)
    assert (first.request.anchor_frames, first.request.restart, first.request.steps, first.request.start,
            first.request.dtype) == ([3, 9], True, 5, None, "float32")

    unknown = write_csv(root / "unknown.csv", [{"video": "a.mp4", "image": "a.png", "device": "cpu"}])
    with pytest.raises(InputError, match=r"unknown column\(s\) device, image \(device: set once for the whole batch.*"
                                         r"The columns are personalise's options with underscores: video, out, "):
        load_personalise_jobs(unknown, out)
    with pytest.raises(InputError, match=r"^--dtype fp16: a persona trains in float32 or bfloat16"):
        load_personalise_jobs(jsonl, out, dtype="fp16")


def test_each_row_is_recorded_and_a_failing_row_does_not_stop_the_others(inputs, fake):
    jobs = write_csv(inputs["root"] / "jobs.csv", [
        {"video": "clips/anna.mp4", "preset": "tiny", "steps": "3"},      # 2: done
        {"video": "clips/noface.mp4", "preset": "tiny"},                  # 3: personalise refuses it
        {"video": "clips/missing.mp4", "preset": "tiny"},                 # 4: refused up front
        {"video": "clips/crash.mp4", "preset": "tiny"},                   # 5: crashes
        {"video": "clips/ben.mp4", "preset": "tiny", "steps": "0", "out": "b0"},  # 6: refused up front
        {"video": "clips/ben.mp4", "preset": "tiny", "steps": "2", "out": "anna"},  # 7: anna's folder again
        {"video": "clips/ben.mp4", "preset": "tiny", "steps": "2"}])      # 8: done
    events = []
    report = batch(inputs, jobs, on_event=events.append)
    out = inputs["out"].resolve()
    results = results_of(inputs["out"])
    assert [(r["line"], r["status"]) for r in results] == [(2, "done"), (3, "failed"), (4, "failed"), (5, "failed"),
                                                          (6, "failed"), (7, "failed"), (8, "done")]
    assert report.counts == {"done": 2, "failed": 5, "skipped": 0} and [r.line for r in report.results] == list(
        range(2, 9))
    anna = results[0]
    assert anna["output"] == str(out / "anna") and anna["error"] is None and anna["seconds"] >= 0
    assert (anna["step"], anna["heldout"]["psnr"], anna["frames"]) == (3, 20.03, None)
    assert "resumed_from" not in anna  # None: left out, as every persona field of a clip's line
    assert results[1]["error"].startswith(f"{(inputs['root'] / 'clips' / 'noface.mp4').resolve()}: no face was found")
    assert results[2]["error"] == (f"{(inputs['root'] / 'clips' / 'missing.mp4').resolve()} is not a file. Give the "
                                   "talking video of the person with --video.")
    assert results[3]["error"] == "RuntimeError: the fake training crashed"
    assert results[4]["error"] == "--steps must be at least 1, got 0."
    assert results[5]["error"] == f"{out / 'anna'}: also the output of line 2; give every row its own out."
    assert results[6]["step"] == 2
    assert fake == [("anna.mp4", 0, 3), ("ben.mp4", 0, 2)]
    steps = [(e.line, e.stage, e.done, e.total, e.loss) for e in events if e.kind == "steps"]
    assert steps[:3] == [(2, "U-Net", 1, 3, 1.0), (2, "U-Net", 2, 3, 0.5), (2, "U-Net", 3, 3, 1 / 3)]
    assert [(e.line, e.text) for e in events if e.kind == "note"] == [(2, SAID), (8, SAID)]
    assert [(e.line, e.index, e.count) for e in events if e.kind == "start"] == [(2, 1, 4), (3, 2, 4), (5, 3, 4),
                                                                                 (8, 4, 4)]
    assert {e.line for e in events if e.kind == "invalid"} == {4, 6, 7}


def test_complete_personas_are_skipped_and_the_others_resume(inputs, fake):
    rows = [{"video": "clips/anna.mp4", "preset": "tiny", "steps": "3"},
            {"video": "clips/ben.mp4", "preset": "tiny", "steps": "2"}]
    first = write_csv(inputs["root"] / "first.csv", rows)
    batch(inputs, first)
    fake.clear()
    # ben's row now asks for more steps: it resumes; cleo's folder was trained from another video: it runs (and
    # personalise decides, here the fake trains it); anna is complete and skipped
    second = write_csv(inputs["root"] / "second.csv", [
        rows[0], {**rows[1], "steps": "5"},
        {"video": "clips/cleo.mp4", "preset": "tiny", "steps": "3", "out": "anna2"}])
    (inputs["out"] / "anna2").mkdir()
    for name in ("persona.json", "personalise.json", "metrics.json"):
        (inputs["out"] / "anna2" / name).write_bytes((inputs["out"] / "anna" / name).read_bytes())
    (inputs["out"] / "anna2" / "training").mkdir()
    (inputs["out"] / "anna2" / "training" / "checkpoint.json").write_text('{"step": 3}')
    events = []
    report = batch(inputs, second, on_event=events.append)
    assert [(r.line, r.status, r.step, r.resumed_from) for r in report.results] == [
        (2, "skipped", 3, None), (3, "done", 5, 2), (4, "done", 3, 3)]
    assert report.results[0].heldout == {"psnr": 20.03, "psnr_at_start": 18.0}
    assert fake == [("ben.mp4", 2, 5), ("cleo.mp4", 3, 3)]
    assert [e.line for e in events if e.kind == "skipped"] == [2]
    assert results_of(inputs["out"])[0] == {
        "line": 2, "status": "skipped", "output": str(inputs["out"].resolve() / "anna"), "error": None, "frames": None,
        "seconds": None, "step": 3, "heldout": {"psnr": 20.03, "psnr_at_start": 18.0}}

    # a persona short of the row's steps (its persona.json from an earlier, shorter run) is not complete
    more = write_csv(inputs["root"] / "more.csv", [{**rows[0], "steps": "4"}])
    fake.clear()
    assert [(r.status, r.step, r.resumed_from) for r in batch(inputs, more).results] == [("done", 4, 3)]
    fake.clear()
    assert [r.status for r in batch(inputs, more).results] == ["skipped"] and fake == []
    assert [r.status for r in batch(inputs, more, force=True).results] == ["done"] and fake == [("anna.mp4", 4, 4)]


def test_an_interrupt_keeps_the_checkpoint_and_records_the_row(inputs, fake):
    jobs = write_csv(inputs["root"] / "jobs.csv", [{"video": "clips/anna.mp4", "preset": "tiny", "steps": "2"},
                                                   {"video": "clips/ben.mp4", "preset": "tiny", "steps": "9"}])

    def stop_in_the_second_row(event):
        if event.kind == "steps" and event.line == 3 and event.done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch(inputs, jobs, on_event=stop_in_the_second_row)
    results = results_of(inputs["out"])
    assert [(r["line"], r["status"]) for r in results] == [(2, "done"), (3, "failed")]
    assert results[1]["error"] == ("interrupted before the persona was complete; its last checkpoint is kept (run the "
                                   "batch again to resume it)")
    assert json.loads((inputs["out"] / "ben" / "training" / "checkpoint.json").read_text()) == {"step": 4}
    report = batch(inputs, jobs)
    assert [(r.status, r.step, r.resumed_from) for r in report.results] == [("skipped", 2, None), ("done", 9, 4)]


def test_a_missing_prior_stops_the_batch_before_training(inputs, fake, tmp_path):
    jobs = write_csv(inputs["root"] / "jobs.csv", [{"video": "clips/anna.mp4", "preset": "tiny"},
                                                   {"video": "clips/ben.mp4", "preset": "tiny"}])
    with pytest.raises(InputError) as refused:
        run_batch(jobs, inputs["out"], models_dir=tmp_path / "empty", personalise=True)
    message = str(refused.value)
    assert message.startswith("1 model file(s) missing (`r3dp models fetch` downloads what can be downloaded); "
                              "nothing was trained:\n  - Missing model file for the EG3D FFHQ generator")
    assert message.endswith("needed by line 2 (anna), line 3 (ben)") and fake == []


def test_the_command_line(inputs, fake, capsys):
    jobs = write_csv(inputs["root"] / "jobs.csv", [{"video": "clips/anna.mp4", "preset": "tiny", "steps": "20"},
                                                   {"video": "clips/noface.mp4", "preset": "tiny"}])
    argv = ["batch", "--personalise", str(jobs), "--out-dir", str(inputs["out"]), "--models-dir",
            str(inputs["models"]), "--device", "cpu"]
    capsys.readouterr()
    assert cli.main(argv) == 1  # a row failed
    printed = capsys.readouterr()
    lines = printed.err.splitlines()
    assert lines[0] == f"[1/2] line 2 -> {inputs['out'].resolve() / 'anna'} (local)"
    assert [line for line in lines if "U-Net" in line and " steps " in line] == [
        f"  line 2: U-Net {2 * tenth}/20 steps loss {1 / (2 * tenth):.4f} ({10 * tenth} %)" for tenth in range(1, 11)]
    assert lines.count(f"  line 2: {SAID}") == 1 and not any(f"line 3: {SAID}" in line for line in lines)
    assert "  line 2: done, persona at U-Net step 20, held-out PSNR 20.20 dB in " in printed.err
    assert "  line 3: failed: " in printed.err and "no face was found" in printed.err
    assert "batch: 1 done, 1 failed, 0 skipped in " in printed.out and "portraits" not in printed.out

    assert cli.main(argv) == 1
    printed = capsys.readouterr()
    assert (f"line 2: skipped, the persona in {inputs['out'].resolve() / 'anna'} is complete at U-Net step 20 "
            "(--force runs it again)") in printed.err
    assert "batch: 0 done, 1 failed, 1 skipped" in printed.out


def test_printer_updates_steps_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, passed = Terminal(), []
    show = personalise_printer(passed.append, terminal)
    for done in range(1, 5):
        show(BatchEvent("steps", 2, done=done, total=4, stage="phase A", loss=0.25))
    show(BatchEvent("finished", 2, Path("/p/anna"), result=JobResult(2, "failed", "/p/anna", "bad")))
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("4/4 loss 0.2500\n")
    assert [event.kind for event in passed] == ["finished"]  # a failure: printed as a render batch prints it


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the actors unpickle the fake training: send this module's code with it (the workers cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def test_ray_trains_one_persona_per_worker_with_the_local_semantics(inputs, ray_cluster):
    """Two CPUs, one per worker: two workers train the rows, one persona each at a time; a failing row is recorded
    and a complete persona skipped exactly as locally; the lines training says reach the driver."""
    CALLS.clear()
    done_before = write_csv(inputs["root"] / "before.csv",
                            [{"video": "clips/cleo.mp4", "preset": "tiny", "steps": "2"}])
    batch(inputs, done_before, trainer=fake_personalise)  # locally: cleo complete
    jobs = write_csv(inputs["root"] / "jobs.csv", [
        {"video": "clips/anna.mp4", "preset": "tiny", "steps": "3"},
        {"video": "clips/noface.mp4", "preset": "tiny"},
        {"video": "clips/cleo.mp4", "preset": "tiny", "steps": "2"},
        {"video": "clips/ben.mp4", "preset": "tiny", "steps": "2"}])
    events = []
    report = batch(inputs, jobs, ray="auto", cpus_per_worker=1, trainer=fake_personalise, on_event=events.append)
    assert [(r.line, r.status, r.step) for r in report.results] == [(2, "done", 3), (3, "failed", None),
                                                                    (4, "skipped", 2), (5, "done", 2)]
    assert "no face was found" in report.results[1].error and report.worker_errors == []
    # two workers were started (the second may find no row left: the fake trains in milliseconds)
    starts = [(e.line, e.worker) for e in events if e.kind == "start"]
    assert sorted(line for line, _ in starts) == [2, 3, 5] and all(w.startswith("r3dp-batch-") for _, w in starts)
    assert {(e.line, e.text) for e in events if e.kind == "note"} == {(2, SAID), (5, SAID)}
    assert [(r["line"], r["status"]) for r in results_of(inputs["out"])] == [(2, "done"), (3, "failed"),
                                                                            (4, "skipped"), (5, "done")]
    assert json.loads((inputs["out"] / "anna" / "training" / "checkpoint.json").read_text()) == {"step": 3}
