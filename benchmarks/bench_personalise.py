"""Speed and peak memory of ``r3dp personalise`` at the full (official) configuration, and the projected time of
the official schedule.

Each stage runs a handful of real optimisation steps on random full-size weights and synthetic 512² frames, in its
own process (so each peak is its own): phase A's joint inversion (3 anchors), PTI tuning, per-frame camera
inversion, and phase B1's U-Net step (the official 2 windows = 4 frames, or ``--windows 1`` with gradient
checkpointing when that does not fit). Prints one line per stage and the projection::

    python benchmarks/bench_personalise.py --device cpu --steps 2
    python benchmarks/bench_personalise.py --device cuda --steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import numpy as np
import torch
import torch.utils.flop_counter

STAGES = ("inversion", "tuning", "camera", "unet", "sr")


def synthetic_prepared(frames: int, size: int):
    """``frames`` synthetic frames (smooth colour fields, a face-sized mask) as a prepared video."""
    from r3dp_core.standins import standin_prepared

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, x * y], -1)
    crops = np.stack([(255 * np.clip(base + 0.05 * rng.standard_normal(3), 0, 1)).astype(np.uint8)
                      for _ in range(frames)])
    masks = np.zeros((frames, 4, size, size), np.uint8)
    masks[:, 0, size // 8: 7 * size // 8, size // 5: 4 * size // 5] = 1
    masks[:, 1, 5 * size // 8: 6 * size // 8, 3 * size // 8: 5 * size // 8] = 1
    return standin_prepared(crops, masks=masks)


def peak_mb(device: torch.device) -> float:
    from r3dp_core.device import peak_memory_allocated_mb, peak_resident_mb

    return (peak_memory_allocated_mb(device) if device.type != "cpu" else None) or peak_resident_mb()


UNITS = {"inversion": "joint-inversion step ({anchors} frames)",
         "tuning": "PTI tuning step ({anchors} frames + locality)",
         "camera": "camera-inversion step (1 frame)",
         "unet": "U-Net step ({frames} frames{checkpointed})",
         "sr": "SR fine-tune step (2 frames)"}


def run_stage(stage: str, device_name: str, steps: int, windows: int, checkpointing: bool, anchors: int = 3,
              count_flops: bool = False) -> dict:
    from r3dp_core.device import resolve_device
    from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator
    from r3dp_core.talk3d.personalise import phase_a, training
    from r3dp_core.talk3d.personalise.presets import get_preset

    device = resolve_device(device_name)
    preset = get_preset("full", inversion_steps=steps, tune_steps=steps, camera_first_steps=steps,
                        camera_steps=steps, camera_loss_threshold=-1.0, sr_steps=steps, windows_per_step=windows)
    torch.manual_seed(0)
    generator = TriPlaneGenerator(preset.generator).to(device).requires_grad_(False)
    prepared = synthetic_prepared(40 if stage in ("unet", "sr") else anchors, preset.image_size)
    frames = list(range(anchors))
    w = generator.mapping(torch.randn(1, preset.generator.z_dim))[:, 0]
    renderer = phase_a._Renderer(generator, 0)
    rng = torch.Generator().manual_seed(0)
    down = training.BicubicDownSample(4).to(device)
    counter = torch.utils.flop_counter.FlopCounterMode(display=False) if count_flops else contextlib.nullcontext()
    started = time.perf_counter()
    with counter:
        _run(stage, steps, windows, checkpointing, anchors, device, preset, generator, prepared, w, renderer, rng,
             down, frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    result = {"stage": stage, "unit": UNITS[stage].format(anchors=anchors, frames=2 * windows,
                                                         checkpointed=", checkpointed" if checkpointing else ""),
              "seconds_per_step": seconds, "peak_mb": peak_mb(device), "device": str(device)}
    if count_flops:
        result["tflop_per_step"] = counter.get_total_flops() / steps / 1e12
    return result


def _run(stage, steps, windows, checkpointing, anchors, device, preset, generator, prepared, w, renderer, rng, down,
         frames) -> None:
    from r3dp_core.talk3d.model import Talk3DNetworks
    from r3dp_core.talk3d.personalise import phase_a, training

    if stage == "inversion":
        targets = phase_a._targets(prepared, frames, down, device)
        mask = phase_a.feature_mask(prepared, frames).to(device)
        phase_a.invert_anchors(generator, targets, mask, steps, 0.01, None, renderer, rng, w_mean=w, w_std=1.0)
    elif stage == "tuning":
        targets = phase_a._targets(prepared, frames, down, device)
        ws = w.expand(anchors, -1)
        phase_a.tune_generator(generator, targets, ws, torch.zeros(anchors, 2, device=device), steps, 1e-3, -1.0,
                               1e-4, None, renderer, rng)
    elif stage == "camera":
        prepared = synthetic_prepared(1, preset.image_size)
        mask = phase_a.feature_mask(prepared, [0]).to(device)
        phase_a.invert_cameras(generator, prepared, w, torch.zeros(1, w.shape[1], device=device),
                               torch.zeros(2, device=device), mask, first_steps=steps, steps=steps, lr=0.01,
                               threshold=-1.0, lpips=None, renderer=renderer)
    else:
        networks = Talk3DNetworks(preset.networks).to(device)
        setup = training.TrainingSetup(generator, w, torch.zeros(prepared.num_frames, 2), prepared, preset)
        if stage == "unet":
            import tempfile
            from pathlib import Path

            state = training.TrainingState(windows_per_step=windows, checkpointing=checkpointing)
            with tempfile.TemporaryDirectory() as folder:
                training.train_unet(setup, networks, Path(folder), steps, state=state, save_every=10 ** 9)
        else:
            training.finetune_superresolution(setup, networks, seed=0)


def projected_hours(results: dict[str, dict], frames: int, key: str = "seconds_per_step",
                    scale: float = 1.0) -> dict[str, float]:
    """Official schedule: inversion 600 + tuning 400 steps, cameras 200 + 50·(N−1) steps (no early stop), U-Net
    80 000 steps, SR 1 000 steps; each step costs ``results[stage][key] · scale`` seconds."""
    s = {name: r[key] * scale for name, r in results.items()}
    hours = {"phase A": (600 * s["inversion"] + 400 * s["tuning"] + (200 + 50 * (frames - 1)) * s["camera"]) / 3600,
             "phase B1": 80_000 * s["unet"] / 3600, "phase B2": 1_000 * s["sr"] / 3600}
    hours["total"] = sum(hours.values())
    return hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=2, help="steps timed per stage (after none warm-up)")
    parser.add_argument("--windows", type=int, default=2, help="U-Net windows per step (2 = the official 4 frames)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the U-Net")
    parser.add_argument("--minutes", type=float, default=4.0, help="video length for the projection")
    parser.add_argument("--anchors", type=int, default=3, help="phase A anchor frames (official 3)")
    parser.add_argument("--only", choices=STAGES, nargs="+", help="measure these stages only")
    parser.add_argument("--flops", action="store_true",
                        help="also count each step's floating-point operations (torch's FlopCounterMode: matmuls and "
                             "convolutions; the timing then includes the counter's overhead) and project the official "
                             "schedule at --gpu-tflops")
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="with --flops: the sustained TFLOP/s assumed for a GPU (default 20: about half of a "
                             "24 GB RTX 3090/A6000-class card's TF32 peak) — an assumption, not a measurement")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.device, args.steps, args.windows, args.checkpointing,
                                   args.anchors, args.flops)))
        return
    results = {}
    for stage in args.only or STAGES:
        command = [sys.executable, __file__, "--stage", stage, "--device", args.device, "--steps", str(args.steps),
                   "--windows", str(args.windows), "--anchors", str(args.anchors)] \
            + (["--checkpointing"] if args.checkpointing else []) + (["--flops"] if args.flops else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            reason = "killed: out of memory" if done.returncode == -9 else (
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
            print(f"{stage:<10} failed ({reason})", flush=True)
            continue
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[stage]
        flops = f", {r['tflop_per_step']:.2f} TFLOP" if "tflop_per_step" in r else ""
        print(f"{stage:<10} {r['seconds_per_step']:8.2f} s per {r['unit']}, peak {r['peak_mb']:.0f} MB "
              f"({r['device']}){flops}", flush=True)
    if len(results) == len(STAGES):
        frames = int(args.minutes * 60 * 25)
        hours = projected_hours(results, frames)
        print(f"official schedule for a {args.minutes:g}-minute video ({frames} frames): "
              + ", ".join(f"{name} {value:.1f} h" for name, value in hours.items()))
        if args.flops:
            estimate = projected_hours(results, frames, "tflop_per_step", 1 / args.gpu_tflops)
            print(f"estimate at {args.gpu_tflops:g} sustained TFLOP/s (counted FLOPs, not a GPU measurement): "
                  + ", ".join(f"{name} {value:.1f} h" for name, value in estimate.items()))


if __name__ == "__main__":
    main()
