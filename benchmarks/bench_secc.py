"""Milliseconds per frame of the SECC renderer at 512² on a BFM-sized mesh.

The mesh is synthesised (the BFM is not redistributable): the 35709 vertices of the official NCC code,
triangulated in xy (Delaunay, about 71k triangles, the BFM has 70789) and shaped like the synthetic BFM
(``(ncc − 0.5)·(1.5, 2, 1.1)`` dm, 10 dm from the camera), with a small per-frame jitter so frames differ.
Without ``ncc_code.npy`` a 189×189 grid bump of the same size is used. Prints a small table, or one JSON
object with ``--json``; ``cpu_ms_per_frame`` is process CPU time over all threads.

    python benchmarks/bench_secc.py --frames 32 --chunk 16 --device cuda
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=16, help="frames rasterised together")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    vertices, mesh, source = face_like_mesh()
    mesh = mesh.to(device)
    jitter = torch.randn(args.frames, *vertices.shape, generator=torch.Generator().manual_seed(0)) * 0.002
    clip = (vertices[None] + jitter).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    render_secc(clip[:min(2, args.frames)], mesh, frames_per_chunk=args.chunk)        # warm-up
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        secc = render_secc(clip, mesh, frames_per_chunk=args.chunk)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    best = min(times)
    result = {
        "device": str(device), "mesh": source, "vertices": int(vertices.shape[0]),
        "triangles": int(mesh.faces.shape[0]),
        "frames": args.frames, "chunk": args.chunk, "ms_per_frame": round(1000 * best / args.frames, 2),
        # process CPU time (all threads) is less sensitive than wall time to other jobs on a shared machine
        "cpu_ms_per_frame": round(1000 * min(cpu_times) / args.frames, 2),
        "coverage": round(float((secc > -1).any(1).float().mean()), 3), "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        result["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")


if __name__ == "__main__":
    main()
