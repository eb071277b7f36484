"""Time per frame of Talk3D's per-frame path at the real configuration: Deltaplane U-Net → render → SR.

Builds the EG3D fixed-tri-plane generator (:mod:`r3dp_core.talk3d.eg3d_generator`, 30.7 M parameters, seeded
random weights: the cost does not depend on their values), makes the identity tri-plane ``P_ID`` once from a
random ``w`` (not timed), then times, per precision:

* ``deltaplane`` — the Deltaplane U-Net (:class:`~r3dp_core.talk3d.model.Talk3DNetworks`, 17.6 M parameters,
  seeded random weights) predicting ``ΔP`` from ``P_ID`` and the frame's tokens, float32 or under autocast;
* ``render`` — ``P_ID + ΔP`` volume-rendered at 128² with 48 + 48 samples per ray (fixed near/far, fixed
  plane axes), always float32 (r3dp's policy: the importance sampling is ill-conditioned);
* ``sr`` — ``SuperresolutionHybrid8XDC`` 128² → 512², float32 or under autocast (``bf16`` on the CPU, as
  ``prepare_for_inference`` sets it up).

Default: CPU, fp32 and bf16, batch 1. On a CPU without native bf16 (no AVX512-BF16/AMX) bf16 is emulated and
slower; the table says so.

    python benchmarks/bench_talk3d_frame.py                    # CPU, fp32 and bf16
    python benchmarks/bench_talk3d_frame.py --device cuda --dtypes fp32 fp16 --batch 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r3dp_core.device import cpu_has_native_bfloat16, resolve_dtype  # noqa: E402
from r3dp_core.talk3d.eg3d_generator import TriPlaneGenerator, prepare_for_inference  # noqa: E402
from r3dp_core.talk3d.model import Talk3DNetworks  # noqa: E402


def deltaplane_step(networks: Talk3DNetworks, p_id: torch.Tensor, tokens: torch.Tensor,
                    dtype: torch.dtype) -> torch.Tensor:
    """``ΔP`` ``[F, 96, 256, 256]`` of the Deltaplane U-Net for ``p_id`` ``[1, 96, 256, 256]`` repeated over the
    ``F`` frames' tokens ``[F, 5, 64]``; fp16/bf16 under autocast (the BN and softmax stay float32 there)."""
    planes = p_id.expand(tokens.shape[0], -1, -1, -1)
    if dtype == torch.float32:
        return networks(planes, tokens)
    with torch.autocast(p_id.device.type, dtype=dtype):
        return networks(planes, tokens).float()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device: torch.device, repeats: int):
    """(best seconds over ``repeats`` after one warm-up, last result)."""
    result = fn()
    _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def run(device: torch.device, dtype_name: str, batch: int, repeats: int) -> dict:
    dtype = resolve_dtype(dtype_name, device)
    torch.manual_seed(0)
    model = prepare_for_inference(TriPlaneGenerator().to(device), dtype)
    with torch.inference_mode():
        ws = model.mapping(torch.randn(1, model.config.z_dim, device=device), truncation_psi=0.7)
        p_id = model.synthesize_planes(ws)                  # once per identity: not timed
        camera = model.cameras(torch.linspace(-0.2, 0.2, batch), torch.zeros(batch))
        noise_generator = torch.Generator(device).manual_seed(0)
        row: dict = {"device": str(device), "dtype": dtype_name, "batch": batch, "threads": torch.get_num_threads()}

        networks = Talk3DNetworks().to(device).eval()
        tokens = networks.tokens(torch.randn(batch, 8, 44, 16, device=device), torch.rand(batch, 1, device=device),
                                 torch.randn(batch, 3, device=device) * 10, torch.rand(batch, 3, 2, device=device))
        delta_seconds, delta = _timed(lambda: deltaplane_step(networks, p_id, tokens, dtype), device, repeats)
        row["deltaplane_ms_per_frame"] = round(1000 * delta_seconds / batch, 1)

        def render():
            return model.render_features(p_id, camera, delta_planes=delta, generator=noise_generator)

        render_seconds, rendered = _timed(render, device, repeats)
        sr_seconds, _ = _timed(lambda: model.super_resolve(rendered, ws), device, repeats)
    row["render_ms_per_frame"] = round(1000 * render_seconds / batch, 1)
    row["sr_ms_per_frame"] = round(1000 * sr_seconds / batch, 1)
    row["total_ms_per_frame"] = round(sum(v for k, v in row.items() if k.endswith("_ms_per_frame")), 1)
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bfloat16():
        row["note"] = "bf16 emulated on this CPU"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], help="fp32, bf16, fp16 (not on the CPU)")
    parser.add_argument("--batch", type=int, default=1, help="frames per call")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [run(device, name, args.batch, args.repeats) for name in args.dtypes]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'device':<7} {'dtype':<5} {'batch':>5} {'deltaplane':>11} {'render':>9} {'sr':>9} {'total':>9}"
          "  (ms per frame)")
    for row in rows:
        print(f"{row['device']:<7} {row['dtype']:<5} {row['batch']:>5} {row['deltaplane_ms_per_frame']:>11.1f} "
              f"{row['render_ms_per_frame']:>9.1f} {row['sr_ms_per_frame']:>9.1f} {row['total_ms_per_frame']:>9.1f}"
              f"  {row.get('note', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
