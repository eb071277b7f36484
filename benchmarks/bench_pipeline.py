"""Per-stage speed and peak memory of the talking-portrait pipeline (MA → renderer → HTB-SR), fast vs reference.

The *fast* path is the streaming frame chain of ``r3dp_core.pipeline.frame_chain`` (plane → render →
composite sources, frames batched ``--batch`` at a time; canonical planes and super-resolution reference once)
on a model prepared by ``r3dp_core.performance.optimize_for_inference`` (folded styles, channels-last
weights, ``--dtype`` autocast, optional ``--compile``). The *reference* is the straightforward float32
frame-by-frame path through the same modules, as the official inference loop runs it: one frame per call,
the canonical planes cached, everything else — super-resolution reference features and modulated weights
included — recomputed for every frame.

Weights are synthetic: the parity suite's deterministic weights for ``--model full`` (the official 512²
architecture; needs the shared parity folder), seeded random ones for ``--model small`` (a reduced
configuration of the same code, for CI). Inputs are the parity case's images and camera (full) or random ones.

Reported per configuration: ms per frame of each stage (ma: motion adapter + plane sum; render: noise draw +
volume rendering; sr: HTB-SR; output: frames to host as uint8), frames per second, time to the first frame
of a new portrait (I2P + SR reference + first chunk, kernels already warm), peak accelerator memory
(``torch.accelerator.max_memory_allocated``) and peak host RSS (Linux VmHWM, reset per configuration; else
the process peak), host CPU time per frame, and the speed-ups over the reference (wall clock and CPU time).

On a CPU shared with other jobs, OpenMP's spinning thread barriers can stall multi-threaded runs badly (the
renderer took 10.5 s per frame with 2 threads vs 1.6 s with 1 on a busy 2-core machine): measure there with
``--threads 1`` or ``OMP_WAIT_POLICY=passive``. The JSON carries the 1-minute load average.

    python benchmarks/bench_pipeline.py --model small --frames 2 --batch 2 --dtype fp32,bf16 --json
    python benchmarks/bench_pipeline.py --device cuda --dtype bf16 --batch 1,8,32 --frames 64
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r3dp_core.device import (  # noqa: E402
    accelerator_api,
    enable_fast_kernels,
    peak_memory_allocated_mb,
    peak_resident_mb,
    reset_peak_resident,
    resolve_device,
)
from r3dp_core.models.secc2plane_torso import Secc2PlaneTorso  # noqa: E402
from r3dp_core.parity.synthetic_clip import Clip, model_factory, synthetic_clip  # noqa: E402
from r3dp_core.performance import COMPILE_MODES, optimize_for_inference  # noqa: E402
from r3dp_core.pipeline.frame_chain import (  # noqa: E402
    composite_source,
    plane_source,
    render_source,
)
from r3dp_core.pipeline.stages import make_avatar  # noqa: E402
from r3dp_core.pipeline.stream import FrameSource, iterate_chunks  # noqa: E402
from r3dp_core.render.noise import frame_noise  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGES = ("ma", "render", "sr", "output")

# ----------------------------------------------------------------------------------------------- models, inputs

def shared_parity_dir(shared: str | None) -> Path | None:
    root = Path(shared or os.environ.get("R3DP_SHARED", REPO_ROOT.parent / "shared"))
    return root / "parity" if (root / "parity" / "manifest_secc2plane_torso.json").is_file() else None




# ----------------------------------------------------------------------------------------------- measurement

def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        accelerator_api(device, "synchronize")(device)


def reset_device_peak(device: torch.device) -> None:
    reset = accelerator_api(device, "reset_peak_memory_stats")
    if reset is not None:
        reset(device)


@dataclass
class TimedSource(FrameSource):
    """Wraps a frame source and adds up the wall time of its chunks (inclusive of the sources it pulls from)."""

    source: FrameSource
    device: torch.device
    sync: bool = True
    seconds: float = 0.0

    def __post_init__(self):
        self.num_frames = self.source.num_frames

    def __getattr__(self, name: str):
        # what the builders read from the wrapped stage (e.g. a SECC source's cano/src maps)
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def chunk(self, start: int, stop: int, trace: dict | None = None):
        if self.sync:
            synchronize(self.device)
        begin = time.perf_counter()
        value = self.source.chunk(start, stop, trace)
        if self.sync:
            synchronize(self.device)
        self.seconds += time.perf_counter() - begin
        return value


@dataclass
class Result:
    path: str
    dtype: str
    batch: int
    frames: int
    stage_seconds: dict[str, float]
    wall_seconds: float
    cpu_seconds: float = 0.0      # host CPU time of the process (all threads) over the same span
    ttff_seconds: float | None = None
    peak_vram_mb: float | None = None
    peak_rss_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ms_per_frame(self) -> dict[str, float]:
        ms = {k: 1000 * v / self.frames for k, v in self.stage_seconds.items()}
        ms["total"] = 1000 * self.wall_seconds / self.frames
        return ms

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds


def to_host_uint8(image: torch.Tensor) -> torch.Tensor:
    """Frames leave the device as uint8 ``[B,H,W,3]`` (what an encoder or a ComfyUI IMAGE batch gets next)."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def run_fast(model: Secc2PlaneTorso, clip: Clip, batch: int, device: torch.device, seed: int,
             stage_sync: bool = True) -> Result:
    """Frames of ``clip`` through the streaming sources, ``batch`` at a time, portrait work once.

    With ``stage_sync`` the device is synchronised around every stage, so the stage times are exact but
    host and device never overlap; without it only the totals are measured.
    """
    with torch.inference_mode():
        synchronize(device)
        begin = time.perf_counter()
        avatar = make_avatar(model, clip.avatar())
        secc = TimedSource(clip.secc_frames(), device, stage_sync)
        planes = TimedSource(plane_source(model, avatar, secc), device, stage_sync)
        renders = TimedSource(render_source(model, planes, clip.cameras, seed), device, stage_sync)
        frames = TimedSource(composite_source(model, avatar, renders, clip.keypoints()), device, stage_sync)
        synchronize(device)
        stream_begin, cpu_begin = time.perf_counter(), time.process_time()
        output_seconds, ttff = 0.0, None
        for _, _, out in iterate_chunks(frames, batch):
            t = time.perf_counter()
            to_host_uint8(out.image)      # copies to the host: also a synchronisation point
            now = time.perf_counter()
            output_seconds += now - t
            ttff = now - begin if ttff is None else ttff
        stream_seconds, cpu_seconds = time.perf_counter() - stream_begin, time.process_time() - cpu_begin
    stages = {"ma": planes.seconds - secc.seconds, "render": renders.seconds - planes.seconds,
              "sr": frames.seconds - renders.seconds, "output": output_seconds} if stage_sync else {}
    return Result("fast", "", batch, clip.num_frames, stages, stream_seconds, ttff_seconds=ttff,
                  cpu_seconds=cpu_seconds, extra={"prepare_s": stream_begin - begin})


def run_reference(model: Secc2PlaneTorso, clip: Clip, device: torch.device, seed: int) -> Result:
    """The straightforward float32 path: ``model.forward``'s stages one frame per call, the canonical planes
    cached (as the official loop does), the SR reference and style weights recomputed every frame."""
    config = model.config.render
    seconds = dict.fromkeys(STAGES, 0.0)

    def timed(stage: str, fn: Callable, *args, **kwargs):
        synchronize(device)
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        synchronize(device)
        seconds[stage] += time.perf_counter() - t
        return value

    def super_resolve_from_scratch(render, kp_driving: torch.Tensor):
        reference = model.prepare_reference(clip.torso, clip.background, clip.segmap, clip.kp_source)
        return model.super_resolve(render, kp_driving, reference)

    with torch.inference_mode():
        cano_planes = model.canonical_planes(clip.head)
        begin, cpu_begin = time.perf_counter(), time.process_time()
        for i in range(clip.num_frames):
            planes = timed("ma", model.animated_planes, cano_planes, clip.cano_secc, clip.src_secc,
                           clip.secc[i:i + 1])
            noise = frame_noise(range(i, i + 1), config.resolution ** 2, config.num_coarse_samples,
                                config.num_fine_samples, seed, device=device)
            render = timed("render", model.render, planes, clip.cameras[i:i + 1], noise=noise)
            out = timed("sr", super_resolve_from_scratch, render, clip.kp_driving[i:i + 1])
            timed("output", to_host_uint8, out.image)
        wall, cpu_seconds = time.perf_counter() - begin, time.process_time() - cpu_begin
    return Result("reference", "fp32", 1, clip.num_frames, seconds, wall, cpu_seconds=cpu_seconds)


# ----------------------------------------------------------------------------------------------- driver

def measure(build: Callable[[torch.device], Secc2PlaneTorso], clip: Clip, device: torch.device, dtype: str,
            batch: int, seed: int, channels_last: bool, compile_mode: str | None, warmup: int) -> Result:
    """One fast configuration: fresh model, warm-up chunks, then the timed clip (and on accelerators an
    unsynchronised pass for the throughput)."""
    if compile_mode is not None:
        torch._dynamo.reset()   # the previous configuration's compiled graphs would count against recompile limits
    model = optimize_for_inference(build(device), DTYPES[dtype], channels_last=channels_last,
                                   compile=compile_mode or False)
    warm = Clip(**{**clip.__dict__, "secc": clip.secc[:batch], "cameras": clip.cameras[:batch],
                   "kp_driving": clip.kp_driving[:batch]})
    for _ in range(warmup):
        run_fast(model, warm, batch, device, seed)
    gc.collect()
    reset_peak_resident()
    reset_device_peak(device)
    result = run_fast(model, clip, batch, device, seed)
    result.peak_rss_mb, result.peak_vram_mb = peak_resident_mb(), peak_memory_allocated_mb(device)
    if device.type != "cpu":
        overlapped = run_fast(model, clip, batch, device, seed, stage_sync=False)
        result.wall_seconds, result.ttff_seconds = overlapped.wall_seconds, overlapped.ttff_seconds
    result.dtype = dtype
    result.extra["channels_last"] = channels_last
    result.extra["compile"] = compile_mode
    return result


def measure_reference(build: Callable[[torch.device], Secc2PlaneTorso], clip: Clip, device: torch.device,
                      seed: int, warmup: int) -> Result:
    model = build(device)
    for _ in range(warmup):
        run_reference(model, Clip(**{**clip.__dict__, "secc": clip.secc[:1]}), device, seed)
    gc.collect()
    reset_peak_resident()
    reset_device_peak(device)
    result = run_reference(model, clip, device, seed)
    result.peak_rss_mb, result.peak_vram_mb = peak_resident_mb(), peak_memory_allocated_mb(device)
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{cpu_model()} ({torch.get_num_threads()} threads)"
    return device.type


def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it (``platform.processor()`` is empty there), else the arch."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(result: Result, device: torch.device, model: str, reference: Result | None) -> dict:
    ms = result.ms_per_frame
    return {
        "path": result.path, "device": str(device), "device_name": device_name(device), "model": model,
        "dtype": result.dtype, "batch": result.batch, "frames": result.frames,
        "fps": round(result.fps, 4),
        "ms_per_frame": {k: round(v, 3) for k, v in ms.items()},
        # Host CPU time per frame (all threads): on a shared CPU a load-independent measure of the work done.
        "cpu_ms_per_frame": round(1000 * result.cpu_seconds / result.frames, 3),
        "ttff_s": None if result.ttff_seconds is None else round(result.ttff_seconds, 3),
        "peak_vram_mb": None if result.peak_vram_mb is None else round(result.peak_vram_mb, 1),
        "peak_rss_mb": None if result.peak_rss_mb is None else round(result.peak_rss_mb, 1),
        "speedup_vs_reference": (round(reference.ms_per_frame["total"] / ms["total"], 3)
                                 if reference is not None else None),
        "cpu_time_speedup_vs_reference": (round(reference.cpu_seconds / result.cpu_seconds, 3)
                                          if reference is not None and result.cpu_seconds > 0 else None),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.extra.items()},
        "torch": torch.__version__,
        # Other processes share the CPU on small machines: the 1-minute load average says how much.
        "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _cell(value: float | None, width: int, decimals: int) -> str:
    return f"{value:>{width}.{decimals}f}" if value is not None else f"{'-':>{width}}"


def print_table(rows: list[dict]) -> None:
    print(f"{'path':<9} {'device':<6} {'dtype':<5} {'batch':>5} {'fps':>8} "
          + " ".join(f"{s + ' ms':>10}" for s in (*STAGES, "total")) + f" {'CPU ms':>10}"
          + f" {'TTFF s':>7} {'VRAM MB':>8} {'RSS MB':>8} {'speedup':>7}")
    for r in rows:
        ms = r["ms_per_frame"]
        print(f"{r['path']:<9} {r['device']:<6} {r['dtype']:<5} {r['batch']:>5} {r['fps']:>8.3f} "
              + " ".join(_cell(ms.get(s), 10, 1) for s in (*STAGES, "total"))
              + " " + _cell(r["cpu_ms_per_frame"], 10, 1)
              + f" {_cell(r['ttff_s'], 7, 2)} {_cell(r['peak_vram_mb'], 8, 0)} {_cell(r['peak_rss_mb'], 8, 0)}"
              + f" {_cell(r['speedup_vs_reference'], 7, 2)}")
    if rows:
        print(f"device: {rows[0]['device_name']}, model: {rows[0]['model']}, frames: {rows[0]['frames']}, "
              f"torch {rows[0]['torch']}, load average {rows[0]['load_avg']}")


def parse_list(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="fp32", help="comma list of fp32, bf16, fp16 (autocast of the networks)")
    parser.add_argument("--batch", default="1", help="comma list of frames per chunk")
    parser.add_argument("--frames", type=int, default=8, help="clip length")
    parser.add_argument("--model", choices=("full", "small"), default="full",
                        help="full: official architecture, parity synthetic weights; small: reduced config (CI)")
    parser.add_argument("--no-reference", action="store_true", help="skip the frame-by-frame fp32 reference")
    parser.add_argument("--channels-last", choices=("on", "off"), default="on", help="channels-last conv weights")
    parser.add_argument("--compile", default=None, choices=COMPILE_MODES,
                        help="torch.compile mode for the per-frame networks (reduce-overhead adds CUDA graphs)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up chunks before timing")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=None, help="the shared folder holding parity/ (default ../shared)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    enable_fast_kernels(device)     # before the reference too, so both paths get cuDNN's fastest kernels
    dtypes, batches = parse_list(args.dtype, str), parse_list(args.batch, int)
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}; use fp32, bf16, fp16")
    parity_dir = shared_parity_dir(args.shared)
    build = model_factory(args.model, parity_dir)
    clip = synthetic_clip(args.model, args.frames, parity_dir, args.seed).to(device)
    channels_last = args.channels_last == "on"

    rows, reference = [], None
    if not args.no_reference:
        reference = measure_reference(build, clip, device, args.seed, args.warmup)
        rows.append(record(reference, device, args.model, reference))
    for dtype in dtypes:
        for batch in batches:
            result = measure(build, clip, device, dtype, batch, args.seed, channels_last, args.compile, args.warmup)
            rows.append(record(result, device, args.model, reference))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
