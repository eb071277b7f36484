"""Memory of the Paste Back nodes' two paths at the photo's resolution: IMAGE frames vs streaming into an mp4.

    python benchmarks/bench_paste_back_memory.py [--photo 1920x1080] [--image-seconds 5] [--stream-seconds 5 30]
                                                 [--chunk-size 16] [--json]

Only the paste-back is run, with cheap inputs: 25 distinct 512² frames (the shared test portrait, moved a little
each frame) repeated to the clip's length, and a moving person mask, stand in for HTB-SR Composite's output; the
photo is that portrait scaled to the photo's height and widened with its edge pixels, and the animated square is
the photo's height. Each run is a fresh process:

* ``image``: ``paste_clip``, what the Paste Back node runs (the whole clip as an IMAGE batch and its masks);
* ``stream``: ``ClipPasteSource`` + ``write_clip_video``, what Paste Back (stream) → Save Video (r3dp) runs
  (pasted and H.264-encoded chunk by chunk, with an AAC soundtrack).

Printed per run: the process's peak resident memory, the resident memory once the inputs exist, and the
paste-back's own memory: the peak above that (the inputs, the 512² clip ComfyUI holds as HTB-SR Composite's
output, 3 MiB + 1 MiB a frame, are the same for both paths and are not counted in it).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FPS = 25


def _trim() -> None:
    """Hand freed heap pages back to the system (glibc), so that resident memory counts live memory."""
    trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    if trim is not None:
        trim(0)


def inputs(shared: Path, photo_size: tuple[int, int], seconds: float):
    """``(frames [T,512,512,3], person [T,512,512], avatar, audio)``."""
    import dataclasses

    import cv2
    import numpy as np
    import torch

    from r3dp_core.standins import synthetic_avatar

    count = int(round(seconds * FPS))
    portrait = cv2.cvtColor(cv2.imread(str(shared / "testdata" / "astronaut_512.png")), cv2.COLOR_BGR2RGB)
    width, height = photo_size
    side = min(width, height)
    grown = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_CUBIC)
    left = (width - side) // 2
    photo = np.pad(grown, ((0, height - side), (left, width - side - left), (0, 0)), mode="edge")
    rows, cols = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    distinct = [torch.from_numpy(np.roll(portrait, (i % 5 - 2, i // 5 - 2), axis=(0, 1))).float() / 255
                for i in range(FPS)]
    people = [((((rows - 300) / 190) ** 2 + ((cols - 256 - 4 * (i - 12)) / 150) ** 2) < 1).float() for i in range(FPS)]
    pick = torch.arange(count) % FPS
    frames = torch.stack(distinct)[pick]
    person = torch.stack(people)[pick]
    segmap = torch.zeros(1, 6, 512, 512)
    segmap[:, 3] = people[0]
    segmap[:, 0] = 1 - people[0]
    avatar = dataclasses.replace(synthetic_avatar(512), segmap=segmap, photo=torch.from_numpy(photo),
                                 photo_square=torch.tensor([left, 0, side]))
    rate = 16000
    time_axis = torch.arange(int(seconds * rate)) / rate
    audio = {"waveform": (0.1 * torch.sin(2 * torch.pi * 220 * time_axis))[None, None], "sample_rate": rate}
    return frames, person, avatar, audio


def child(path: str, shared: Path, photo_size: tuple[int, int], seconds: float, chunk_size: int) -> dict:
    """One path in this process; returns its figures."""
    import torch

    from r3dp_core.device import peak_resident_mb, reset_peak_resident, resident_mb
    from r3dp_core.pipeline.paste_back import ClipPasteSource, paste_clip, write_clip_video

    torch.set_num_threads(1)
    frames, person, avatar, audio = inputs(shared, photo_size, seconds)
    _trim()
    before = resident_mb()
    reset_peak_resident()
    started = time.perf_counter()
    resident = []
    with torch.inference_mode(), tempfile.TemporaryDirectory(prefix="r3dp-bench-paste-") as tmp:
        if path == "image":
            images, masks = paste_clip(frames, avatar, person)
            size = tuple(images.shape[1:3])
            output_mb = (images.numel() * images.element_size() + masks.numel() * masks.element_size()) / 2**20
        else:
            def sample(done, total, last):
                _trim()
                resident.append(resident_mb())

            source = ClipPasteSource(frames, avatar, person)
            write_clip_video(source, Path(tmp) / "out.mp4", FPS, audio, chunk_size=chunk_size, on_chunk=sample)
            size, output_mb = (source.height, source.width), 0.0
    peak = peak_resident_mb()
    wall = time.perf_counter() - started
    growth = max(resident) - resident[len(resident) // 10] if resident else None
    return {"path": path, "seconds": seconds, "frames": int(frames.shape[0]), "size": f"{size[1]}x{size[0]}",
            "wall_s": round(wall, 1), "fps": round(frames.shape[0] / wall, 2), "peak_rss_mb": round(peak, 1),
            "inputs_rss_mb": round(before, 1), "paste_back_mb": round(peak - before, 1),
            "output_mb": round(output_mb, 1),
            "stream_growth_mb": None if growth is None else round(growth, 1), "chunk_size": chunk_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default="1920x1080", help="WxH of the photo (default 1920x1080)")
    parser.add_argument("--image-seconds", type=float, nargs="*", default=[5.0], help="clip lengths, IMAGE path")
    parser.add_argument("--stream-seconds", type=float, nargs="*", default=[5.0, 30.0],
                        help="clip lengths, streaming path")
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per chunk of the streaming path")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared folder")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    photo_size = tuple(int(v) for v in args.photo.lower().split("x"))
    if args.child:
        seconds = (args.image_seconds if args.child == "image" else args.stream_seconds)[0]
        print(json.dumps(child(args.child, args.shared, photo_size, seconds, args.chunk_size)))
        return 0
    results = []
    for path, lengths in (("image", args.image_seconds), ("stream", args.stream_seconds)):
        for seconds in lengths:
            flag = "--image-seconds" if path == "image" else "--stream-seconds"
            command = [sys.executable, __file__, "--child", path, flag, str(seconds), "--photo", args.photo,
                       "--chunk-size", str(args.chunk_size), "--shared", str(args.shared)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        for result in results:
            print(json.dumps(result))
        return 0
    print(f"{'path':>7} {'clip s':>7} {'frames':>7} {'size':>10} {'fps':>6} {'peak RSS MB':>12} {'inputs MB':>10} "
          f"{'paste-back MB':>14}   (CPU, 1 thread; stream: chunks of {args.chunk_size})")
    for r in results:
        print(f"{r['path']:>7} {r['seconds']:>7g} {r['frames']:>7} {r['size']:>10} {r['fps']:>6.2f} "
              f"{r['peak_rss_mb']:>12.1f} {r['inputs_rss_mb']:>10.1f} {r['paste_back_mb']:>14.1f}")
    for r in results:
        if r["path"] == "image":
            print(f"IMAGE path, {r['seconds']:g} s: {r['output_mb'] / r['seconds']:.0f} MB per second of clip (the "
                  f"IMAGE batch and its masks, {r['output_mb']:.0f} MB) + {r['paste_back_mb'] - r['output_mb']:.0f} MB "
                  "of one chunk's intermediates")
    streams = [r["paste_back_mb"] for r in results if r["path"] == "stream"]
    if len(streams) > 1:
        spread = 100 * (max(streams) / min(streams) - 1)
        print(f"streaming, largest vs smallest paste-back memory: {spread:+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
