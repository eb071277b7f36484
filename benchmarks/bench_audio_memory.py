"""Peak memory of audio → motion for short and long clips: it must not grow with the clip beyond the waveform.

    python benchmarks/bench_audio_memory.py [--minutes 1 10] [--rate 44100] [--channels 2]

For each length a synthetic voice is written to a temporary 16-bit WAV at ``--rate``, then a fresh process
runs ``audio_to_motion`` on it on the CPU with a tiny random HuBERT (1024-d like HuBERT-large, one layer) and
a randomly initialised A2M VAE. It prints the peak resident memory after a 2 s warm-up clip (models loaded,
kernels primed) and after the long clip. Only the 16-bit 16 kHz waveform (32 kB per second per channel) and
per-frame values (f0 candidates, the 64 coefficients per frame) grow with the clip; HuBERT features, f0 frames
and A2M activations are computed in fixed-size pieces. Peaks vary by some tens of MB between runs (allocator).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_voice(path: Path, seconds: float, rate: int, channels: int) -> None:
    """A harmonic voice with a slow envelope, written block by block (the writer never holds the whole clip)."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        total = int(seconds * rate)
        for start in range(0, total, rate):
            t = np.arange(start, min(start + rate, total)) / rate
            f0 = 120 + 30 * np.sin(2 * np.pi * 0.2 * t)
            phase = 2 * np.pi * np.cumsum(f0) / rate + start
            voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
            block = np.stack([voice] + [0.1 * np.sin(2 * np.pi * 300 * t)] * (channels - 1)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def child(path: str, warmup: str) -> None:
    import torch
    from transformers import HubertConfig, HubertModel

    sys.path.insert(0, str(ROOT))
    from r3dp_core.audio.motion import audio_to_motion
    from r3dp_core.device import peak_resident_mb
    from r3dp_core.models.a2m_vae import AudioToMotionVAE

    torch.manual_seed(0)
    hubert = HubertModel(HubertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=32, conv_dim=(16,) * 7, num_conv_pos_embeddings=4,
                                      num_conv_pos_embedding_groups=16, do_stable_layer_norm=True,
                                      feat_extract_norm="layer")).eval()
    model = AudioToMotionVAE().eval()
    audio_to_motion(warmup, model, hubert, seed=0)
    after_warmup = peak_resident_mb()
    start = time.perf_counter()
    exp = audio_to_motion(path, model, hubert, seed=0)
    print(json.dumps({"frames": exp.shape[0], "seconds": time.perf_counter() - start,
                      "warmup_peak_mb": after_warmup, "peak_mb": peak_resident_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2, choices=(1, 2))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"audio_to_motion on the CPU, {args.rate} Hz {args.channels}-channel WAV, tiny HuBERT, random A2M")
    print(f"{'clip':>8} {'frames':>7} {'time s':>7} {'peak RSS MB':>12} {'after warm-up MB':>17} {'growth MB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        warmup = Path(tmp) / "warmup.wav"
        write_voice(warmup, 2.0, args.rate, args.channels)
        for minutes in args.minutes:
            path = Path(tmp) / f"voice_{minutes:g}min.wav"
            write_voice(path, minutes * 60, args.rate, args.channels)
            run = subprocess.run([sys.executable, __file__, "--child", str(path), str(warmup)], check=True,
                                 capture_output=True, text=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{minutes:>6g} m {r['frames']:>7} {r['seconds']:>7.1f} {r['peak_mb']:>12.0f} "
                  f"{r['warmup_peak_mb']:>17.0f} {r['peak_mb'] - r['warmup_peak_mb']:>10.0f}")
            path.unlink()


if __name__ == "__main__":
    main()
