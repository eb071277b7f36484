"""Peak memory of the whole main job for a short and a long clip: it must be flat in clip length.

    python benchmarks/bench_generate_memory.py [--seconds 5 60] [--full] [--chunk-size 4] [--photo 4000x3000] [--json]

Builds a models folder of synthetic stand-ins once (``r3dp_core.parity.synthetic_job``: synthetic official
weights, the synthetic BFM, a one-layer HuBERT, the shared face landmarker), then runs the real job
(``load_job_models`` + ``run_job``: portrait fit, audio → motion, PNCC → motion adapter → render → HTB-SR,
H.264 + AAC) in a fresh process per clip length and prints each process's peak resident memory, and how much
the resident memory grew while frames streamed (from 10 % of the clip to its end). The speech
is the shared English clip repeated to the length. By default the video model is the tiny configuration of
the same code (64² frames, so a 60 s clip takes minutes on a laptop CPU); ``--full`` uses the full-size
synthetic model (512², about 2 s per frame on a CPU). ``--photo WxH`` makes the portrait a W×H photo (the test
portrait scaled to the height and widened with its edge pixels) and writes ``--output photo``: the frames pasted
back into the photo (canvas capped at 2048 px) are encoded instead of the 512² square.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(folder: Path, seconds: float, full: bool, chunk_size: int, photo: bool = False) -> dict:
    """One job in this process; returns its figures."""
    import torch

    from r3dp_core.device import Precision, peak_resident_mb, resident_mb
    from r3dp_core.models.secc2plane_torso import Secc2PlaneTorso, tiny_config
    from r3dp_core.pipeline.admission import admit
    from r3dp_core.pipeline.generate import load_job_models, run_job
    from r3dp_core.pipeline.request import GenerateRequest

    request = GenerateRequest(image=folder / "portrait.png", audio=folder / f"speech_{seconds:g}s.wav",
                              out=folder / f"out_{seconds:g}s.mp4", head_mask=folder / "head.png",
                              body_mask=folder / "body.png", device="cpu", chunk_size=chunk_size,
                              output="photo" if photo else "crop")
    models_dir = folder / "models"
    admitted = admit(request, models_dir, skip_models=() if full else ("video_model",))
    torch.manual_seed(0)
    tiny = None if full else Secc2PlaneTorso(tiny_config()).eval().requires_grad_(False)
    models = load_job_models(request, models_dir, Precision.resolve("cpu", "fp32"), video_model=tiny)
    resident = []
    started = time.perf_counter()
    summary = run_job(request, admitted.inputs, models, masks=admitted.masks, log=lambda _: None,
                      progress=lambda done, total: resident.append(resident_mb() or peak_resident_mb()))
    warm = resident[len(resident) // 10]
    return {"seconds": seconds, "frames": summary.frames, "fps": round(summary.fps, 2),
            "wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_resident_mb(), 1),
            "stream_growth_mb": round(max(resident) - warm, 1), "model": "full" if full else "tiny",
            "chunk_size": chunk_size, "output": request.output}


def prepare(folder: Path, shared_dir: Path, lengths: list[float], photo_size: tuple[int, int] | None = None) -> None:
    import cv2
    import numpy as np

    from r3dp_core.parity.synthetic_job import face_masks, short_speech, write_models_folder
    from r3dp_core.standins import write_wav

    write_models_folder(folder / "models", shared_dir)
    portrait = cv2.imread(str(shared_dir / "testdata" / "astronaut_512.png"))
    head, body = face_masks(cv2.cvtColor(portrait, cv2.COLOR_BGR2RGB), folder / "models" / "face_landmarker.task")
    if photo_size is not None:
        width, height = photo_size
        side = min(width, height)
        pad = ((0, height - side), ((width - side) // 2, width - side - (width - side) // 2))

        def widen(image, interpolation, mode):
            grown = cv2.resize(image, (side, side), interpolation=interpolation)
            return np.pad(grown, pad + ((0, 0),) * (grown.ndim - 2), mode=mode)

        portrait = widen(portrait, cv2.INTER_CUBIC, "edge")
        head, body = (widen(mask, cv2.INTER_NEAREST, "constant") for mask in (head, body))
    cv2.imwrite(str(folder / "portrait.png"), portrait)
    cv2.imwrite(str(folder / "head.png"), head)
    cv2.imwrite(str(folder / "body.png"), body)
    speech, rate = short_speech(shared_dir, 9.0)
    for seconds in lengths:
        repeats = int(np.ceil(seconds * rate / len(speech)))
        write_wav(folder / f"speech_{seconds:g}s.wav", np.tile(speech, repeats)[: int(seconds * rate)], rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 60.0], help="clip lengths")
    parser.add_argument("--full", action="store_true", help="full-size video model instead of the tiny one")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared folder")
    parser.add_argument("--photo", help="WxH: a photo of this size, written with --output photo (e.g. 4000x3000)")
    parser.add_argument("--json", action="store_true", help="one JSON object per clip length")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds[0], args.full, args.chunk_size, photo=bool(args.photo))))
        return 0
    with tempfile.TemporaryDirectory(prefix="r3dp-bench-memory-") as tmp:
        folder = Path(tmp)
        photo_size = tuple(int(v) for v in args.photo.lower().split("x")) if args.photo else None
        prepare(folder, args.shared, args.seconds, photo_size)
        results = []
        for seconds in args.seconds:
            command = [sys.executable, __file__, "--child", str(folder), "--seconds", str(seconds),
                       "--chunk-size", str(args.chunk_size)] + (["--full"] if args.full else []) + (
                          ["--photo", args.photo] if args.photo else [])
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        for result in results:
            print(json.dumps(result))
        return 0
    print(f"{'clip s':>7} {'frames':>7} {'fps':>7} {'wall s':>7} {'peak RSS MB':>12} {'growth MB':>10}   "
          f"({results[0]['model']} video model, chunks of {args.chunk_size}, CPU, output {results[0]['output']})")
    for r in results:
        print(f"{r['seconds']:>7g} {r['frames']:>7} {r['fps']:>7.2f} {r['wall_s']:>7.1f} {r['peak_rss_mb']:>12.1f} "
              f"{r['stream_growth_mb']:>10.1f}")
    peaks = [r["peak_rss_mb"] for r in results]
    print(f"longest vs shortest clip: peak RSS {100 * (max(peaks) / min(peaks) - 1):+.1f} % "
          f"({max(peaks) - min(peaks):.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
