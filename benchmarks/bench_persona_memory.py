"""Peak memory of ``r3dp generate --persona`` for a short and a long clip: it must be flat in clip length.

    python benchmarks/bench_persona_memory.py [--seconds 5 60 120] [--output crop|video] [--chunk-size 4] [--json]

Writes a stand-in tiny persona once (``r3dp_core.talk3d.standin_persona``: random tiny networks, a 4 s synthetic
source video) and the miniature wav2vec2, then runs the real command (``r3dp generate --persona``: admission,
wav2vec2 features, the chunked U-Net + volume render + SR, optional paste-back into the source video played
forward and backward, H.264 + AAC) in a fresh process per clip length, and prints each process's peak resident
memory and how much it grew while frames streamed (from 10 % of the clip to its end). The figures of 5 s and 60 s
must agree within 15 % (the exit status says whether they do).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 0.15


def child(folder: Path, seconds: float, output: str, chunk_size: int) -> dict:
    """One job in this process; returns its figures."""
    from r3dp_core.device import peak_resident_mb, resident_mb
    from r3dp_core.pipeline.generate import generate
    from r3dp_core.pipeline.request import GenerateRequest

    request = GenerateRequest(persona=folder / "persona", audio=folder / f"speech_{seconds:g}s.wav",
                              out=folder / f"out_{seconds:g}s.mp4", models_dir=folder / "models", device="cpu",
                              chunk_size=chunk_size, output=output)
    resident = []
    started = time.perf_counter()
    summary = generate(request, log=lambda _: None,
                       progress=lambda done, total: resident.append(resident_mb() or peak_resident_mb()))
    warm = resident[len(resident) // 10]
    return {"seconds": seconds, "frames": summary.frames, "fps": round(summary.fps, 2),
            "wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_resident_mb(), 1),
            "stream_growth_mb": round(max(resident) - warm, 1), "output": output, "chunk_size": chunk_size}


def prepare(folder: Path, lengths: list[float]) -> None:
    from r3dp_core.standins import write_tiny_wav2vec2, write_wav
    from r3dp_core.talk3d.standin_persona import standin_sound, write_standin_persona

    write_tiny_wav2vec2(folder / "models")
    write_standin_persona(folder / "persona", seconds=4.0)
    for seconds in lengths:
        write_wav(folder / f"speech_{seconds:g}s.wav", standin_sound(seconds), 16000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 60.0], help="clip lengths")
    parser.add_argument("--output", choices=("crop", "video"), default="video")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="one JSON object per clip length")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds[0], args.output, args.chunk_size)))
        return 0
    with tempfile.TemporaryDirectory(prefix="r3dp-bench-persona-memory-") as tmp:
        folder = Path(tmp)
        prepare(folder, args.seconds)
        results = []
        for seconds in args.seconds:
            command = [sys.executable, __file__, "--child", str(folder), "--seconds", str(seconds), "--output",
                       args.output, "--chunk-size", str(args.chunk_size)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        print(f"{'clip s':>7} {'frames':>7} {'fps':>7} {'wall s':>7} {'peak RSS MB':>12} {'growth MB':>10}   "
              f"(stand-in tiny persona, --output {args.output}, chunks of {args.chunk_size}, CPU)")
        for r in results:
            print(f"{r['seconds']:>7g} {r['frames']:>7} {r['fps']:>7} {r['wall_s']:>7} {r['peak_rss_mb']:>12} "
                  f"{r['stream_growth_mb']:>10}")
    peaks = [r["peak_rss_mb"] for r in results]
    spread = (max(peaks) - min(peaks)) / min(peaks)
    print(f"peak RSS spread {100 * spread:.1f} % (must be within {100 * TOLERANCE:.0f} %)")
    return 0 if spread <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
