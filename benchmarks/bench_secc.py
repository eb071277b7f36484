"""Milliseconds per frame and peak memory of the SECC renderer at 512² on a BFM-sized mesh, for a whole clip.

The mesh is synthesised (the BFM is not redistributable): the 35709 vertices of the official NCC code,
triangulated in xy (Delaunay, about 71k triangles, the BFM has 70789) and shaped like the synthetic BFM
(``(ncc − 0.5)·(1.5, 2, 1.1)`` dm, 10 dm from the camera), with a small per-frame jitter so frames differ.
Without ``ncc_code.npy`` a 189×189 grid bump of the same size is used.

The default clip is 250 frames (10 s at 25 fps). ``--mode clip`` renders it into one [T,3,512,512] tensor
(3 MB a frame); ``--mode stream`` renders it chunk by chunk and drops each chunk, as the pipeline's lazy
SECC source does. ``working_mb`` is the peak memory above what was held before the render, less the output
kept: it depends on ``--chunk``, not on the clip length. Peak memory is the allocator's peak on CUDA and the
process's peak resident set (``VmHWM``, reset before the render) on Linux CPUs. Prints a small table, or
one JSON object with ``--json``; ``cpu_ms_per_frame`` is process CPU time over all threads.

    python benchmarks/bench_secc.py --mode stream --chunk 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r3dp_core.device import peak_resident_mb, reset_peak_resident, resident_mb  # noqa: E402
from r3dp_core.geometry.secc import SECCMesh, render_secc  # noqa: E402

NCC_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "official_data" / "ncc_code.npy",
                  Path("/work/shared/official_data/ncc_code.npy"))


def face_like_mesh() -> tuple[torch.Tensor, SECCMesh, str]:
    """Camera-space vertices [V,3], the mesh, and a description."""
    ncc_path = next((p for p in NCC_CANDIDATES if p.is_file()), None)
    if ncc_path is not None:
        from scipy.spatial import Delaunay

        colors = np.load(ncc_path).T.astype(np.float32)
        faces = Delaunay(colors[:, :2].astype(np.float64)).simplices
        source = f"NCC-code Delaunay ({ncc_path.name})"
    else:
        n = 189
        u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
        colors = np.stack([u.ravel(), v.ravel(), 1 - (2 * u.ravel() - 1) ** 2 * (2 * v.ravel() - 1) ** 2], -1)
        colors = colors.astype(np.float32)
        ids = np.arange(n * n).reshape(n, n)
        quads = np.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], -1).reshape(-1, 4)
        faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        source = "grid"
    shape = (colors - 0.5) * np.array([1.5, 2.0, 1.1], dtype=np.float32)
    vertices = torch.from_numpy(shape - shape.mean(0))
    vertices[:, 2] = 10 - vertices[:, 2]
    return vertices, SECCMesh(torch.from_numpy(faces.astype(np.int64)), torch.from_numpy(colors)), source


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif device.type == "cpu":
        reset_peak_resident()


def memory_mb(device: torch.device, peak: bool) -> float | None:
    """Allocated (CUDA) or resident (Linux CPU) memory in MiB, now or its peak; None where unknown."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2 ** 20
    if device.type == "cpu":
        return peak_resident_mb() if peak else resident_mb()
    return None


def face_pixels(secc: torch.Tensor, chunk: int) -> int:
    """Pixels of [T,3,S,S] SECC frames that show the face, counted ``chunk`` frames at a time (no clip-sized
    temporaries)."""
    return sum(int((secc[i:i + chunk] > -1).any(1).sum()) for i in range(0, secc.shape[0], chunk))


def render_clip(clip: torch.Tensor, mesh: SECCMesh, chunk: int, stream: bool) -> tuple[torch.Tensor | None, int]:
    """Render every frame; returns the clip's SECC (None when streamed) and, when streamed, its face pixels."""
    if not stream:
        return render_secc(clip, mesh, frames_per_chunk=chunk), 0
    covered = 0
    for start in range(0, clip.shape[0], chunk):
        secc = render_secc(clip[start:start + chunk], mesh, frames_per_chunk=chunk, frame_offset=start)
        covered += face_pixels(secc, chunk)           # a consumer would encode the chunk or feed a network here
        del secc
    return None, covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250, help="clip length (250 = 10 s at 25 fps)")
    parser.add_argument("--chunk", type=int, default=8, help="frames rasterised together")
    parser.add_argument("--mode", choices=("clip", "stream"), default="clip",
                        help="keep the whole clip's SECC, or render chunk by chunk and drop each chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    vertices, mesh, source = face_like_mesh()
    mesh = mesh.to(device)
    jitter = torch.randn(args.frames, *vertices.shape, generator=torch.Generator().manual_seed(0)) * 0.002
    clip = (vertices[None] + jitter).to(device)
    del jitter

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    render_secc(clip[:min(2, args.frames)], mesh, frames_per_chunk=args.chunk)        # warm-up
    sync()
    times, cpu_times, working = [], [], []
    for _ in range(args.repeats):
        baseline = memory_mb(device, peak=False)
        reset_peak_memory(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        secc, covered = render_clip(clip, mesh, args.chunk, stream=args.mode == "stream")
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        peak = memory_mb(device, peak=True)
        output_mb = 0.0 if secc is None else secc.numel() * secc.element_size() / 2 ** 20
        if peak is not None and baseline is not None:
            working.append(peak - baseline - output_mb)
        if secc is not None:
            covered = face_pixels(secc, args.chunk)
        del secc
    result = {
        "device": str(device), "mesh": source, "vertices": int(vertices.shape[0]),
        "triangles": int(mesh.faces.shape[0]), "mode": args.mode,
        "frames": args.frames, "chunk": args.chunk, "ms_per_frame": round(1000 * min(times) / args.frames, 2),
        # process CPU time (all threads) is less sensitive than wall time to other jobs on a shared machine
        "cpu_ms_per_frame": round(1000 * min(cpu_times) / args.frames, 2),
        "clip_seconds": round(min(times), 2),
        "output_mb": round(0.0 if args.mode == "stream" else args.frames * 3 * 512 * 512 * 4 / 2 ** 20, 1),
        "coverage": round(covered / (args.frames * 512 * 512), 3), "threads": torch.get_num_threads(),
    }
    if working:
        result["working_mb"] = round(max(working), 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
