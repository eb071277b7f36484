"""Wall time and peak memory of the tri-plane volume renderer.

Renders ``--batch`` frames (random smooth tri-planes, one per frame, frontal-ish cameras) with the official
settings (48+48 samples) and prints a small table, or one JSON object with ``--json``. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, ``torch.mps.driver_allocated_memory`` after the run on MPS
and the growth of the process's peak RSS over the warm-up and timed renders on CPU
(``resource.getrusage``; growth beyond the peak reached while building the inputs).

    python benchmarks/bench_renderer.py --batch 8 --resolution 128 --chunk 8192 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r3dp_core.device import peak_resident_mb  # noqa: E402
from r3dp_core.models.decoder import OSGDecoder  # noqa: E402
from r3dp_core.render import RenderConfig, render_triplanes  # noqa: E402
from r3dp_core.render.renderer import default_max_rays_per_chunk  # noqa: E402


def _cameras(batch: int) -> torch.Tensor:
    """``[batch,25]`` cameras on a 2.86-unit circle, yaw spread over +-0.4 rad, official intrinsics."""
    rows = []
    for yaw in torch.linspace(-0.4, 0.4, batch).tolist():
        c, s = math.cos(yaw), math.sin(yaw)
        c2w = [c, 0.0, -s, 2.861 * s, 0.0, -1.0, 0.0, 0.006, -s, 0.0, -c, 2.861 * c, 0.0, 0.0, 0.0, 1.0]
        focal = 2985.29 / 700
        rows.append(c2w + [focal, 0.0, 0.5, 0.0, focal, 0.5, 0.0, 0.0, 1.0])
    return torch.tensor(rows)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run(batch: int, resolution: int, chunk: int, device: torch.device, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(batch, 96, 17, 17, generator=generator)
    planes = (2 * F.interpolate(coarse, size=256, mode="bilinear", align_corners=True)).reshape(batch, 3, 32, 256, 256)
    planes = planes.to(device)
    decoder = OSGDecoder().eval().to(device)
    camera = _cameras(batch).to(device)
    config = RenderConfig(resolution=resolution)
    noise_generator = torch.Generator(device).manual_seed(0)   # draw the render noise where it is used

    def render() -> None:
        with torch.inference_mode():
            render_triplanes(planes, decoder, camera, config, generator=noise_generator, max_rays_per_chunk=chunk)
        _synchronize(device)

    rss_before = peak_resident_mb() * 2**20
    render()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    elif device.type == "mps":
        peak, peak_kind = torch.mps.driver_allocated_memory(), "mps_driver_allocated_memory"
    else:
        peak, peak_kind = peak_resident_mb() * 2**20 - rss_before, "cpu_peak_rss_growth"
    best = min(times)
    return {"device": str(device), "batch": batch, "resolution": resolution, "chunk": chunk,
            "samples_per_ray": config.num_coarse_samples + config.num_fine_samples, "repeats": repeats,
            "seconds_best": round(best, 4), "seconds_mean": round(sum(times) / len(times), 4),
            "ms_per_frame": round(1000 * best / batch, 2), "peak_bytes": int(peak), "peak_kind": peak_kind,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=None,
                        help="max rays per chunk (default: the renderer's default for the device)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    chunk = args.chunk or default_max_rays_per_chunk(device)
    result = run(args.batch, args.resolution, chunk, device, args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'device':<8} {'batch':>5} {'res':>4} {'chunk':>7} {'best s':>8} {'ms/frame':>9} {'peak MiB':>9}")
        print(f"{result['device']:<8} {result['batch']:>5} {result['resolution']:>4} {result['chunk']:>7} "
              f"{result['seconds_best']:>8.3f} {result['ms_per_frame']:>9.1f} {result['peak_bytes'] / 2**20:>9.1f}"
              f"  ({result['peak_kind']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
