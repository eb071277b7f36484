"""Jobs per hour of ``r3dp batch``: the local backend against Ray, and what the portrait cache saves.

    python benchmarks/bench_batch.py [--jobs 6] [--seconds 1.0] [--ray-cpus 2] [--no-ray] [--json]

Builds a models folder of synthetic stand-ins (``r3dp_core.parity.synthetic_job``) with the tiny video model
(64² frames), so the figures weigh the per-job work around the renderer (portrait fit, audio → motion,
encoding) as much as rendering; then runs the batch driver (``run_batch``, the code of ``r3dp batch``) on

* the same photo × N jobs (the portrait is prepared once) and N different photos (prepared N times), locally;
* the same photo × N on a local Ray cluster of ``--ray-cpus`` CPUs, one worker per CPU.

Each figure is the batch's wall time, model loading included, as jobs per hour, after an untimed
one-job warm-up batch.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, shared: Path, photos: int, seconds: float) -> dict:
    import cv2

    from r3dp_core.parity.synthetic_job import short_speech, write_models_folder, write_portrait
    from r3dp_core.standins import write_wav

    models = write_models_folder(folder / "models", shared)
    source = cv2.imread(str(shared / "testdata" / "astronaut_512.png"))
    for index in range(photos):  # distinct photos of one face: small rotations, every other one mirrored
        turn = cv2.getRotationMatrix2D((256, 256), 2.0 * index, 1.0)
        picture = cv2.warpAffine(cv2.flip(source, 1) if index % 2 else source, turn, (512, 512),
                                 borderMode=cv2.BORDER_REFLECT)
        write_portrait(folder, f"photo{index}", picture, models / "face_landmarker.task")
    samples, rate = short_speech(shared, seconds)
    write_wav(folder / "speech.wav", samples, rate)
    return {"folder": folder, "models": models}


def job_list(path: Path, photos: list[int]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "audio", "out", "head_mask", "body_mask", "seed"])
        for index, photo in enumerate(photos):
            writer.writerow([f"photo{photo}.png", "speech.wav", f"clip{index}.mp4", f"photo{photo}_head.png",
                             f"photo{photo}_body.png", index])
    return path


def run(inputs: dict, name: str, photos: list[int], ray: str | None = None, cpus_per_worker: int = 1) -> dict:
    from r3dp_core.batch.run import run_batch
    from r3dp_core.standins import tiny_video_model

    jobs = job_list(inputs["folder"] / f"{name}.csv", photos)
    report = run_batch(jobs, inputs["folder"] / f"out_{name}", models_dir=inputs["models"], device="cpu",
                       ray=ray, cpus_per_worker=cpus_per_worker, video_model=tiny_video_model)
    assert report.counts["done"] == len(photos), report.results
    return {"case": name, "backend": "ray" if ray else "local", "jobs": len(photos), "seconds": report.seconds,
            "jobs_per_hour": len(photos) * 3600 / report.seconds, "portraits_prepared": report.portraits_prepared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster (one worker each)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    import torch

    torch.set_num_threads(1)  # one CPU per job in every case: the backends are compared, not the threading
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp), Path(os.environ.get("R3DP_SHARED", args.shared)), args.jobs, args.seconds)
        run(inputs, "warm_up", [0])  # first imports, MediaPipe start-up, file caches: not part of any figure
        rows = [run(inputs, "same_photo", [0] * args.jobs), run(inputs, "n_photos", list(range(args.jobs)))]
        if not args.no_ray:
            import ray

            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
            try:
                rows.append(run(inputs, "same_photo_ray", [0] * args.jobs, ray="auto", cpus_per_worker=1))
            finally:
                ray.shutdown()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "seconds_per_clip": args.seconds, "rows": rows}, indent=1))
        return
    print(f"{machine}; {args.jobs} jobs of {args.seconds:g} s clips, tiny video model")
    print("| case | backend | jobs | wall s | jobs/hour | portraits prepared |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['backend']} | {row['jobs']} | {row['seconds']:.1f} | "
              f"{row['jobs_per_hour']:.0f} | {row['portraits_prepared']} |")


if __name__ == "__main__":
    main()
