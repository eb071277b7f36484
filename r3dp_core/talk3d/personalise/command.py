"""``r3dp personalise``: its options and what it prints (a progress bar with the loss and an ETA, Ctrl-C saves)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable

from ...host import Host, progress_bar
from .presets import PRESETS
from .run import PersonaliseOptions, personalise
from .training import TrainingInterrupted


def face_choice(text: str) -> str | int:
    """``largest`` or a face number (0 = the first face MediaPipe reports)."""
    if text == "largest":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--face takes 'largest' or a face number, not {text!r}") from None


def frame_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--anchor-frames takes frame numbers separated by commas, not {text!r}") \
            from None


def add_personalise_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="a talking video of one person (a few minutes, static camera)")
    parser.add_argument("--out", required=True, help="the persona folder (created; run again to resume)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="full: the official schedule (80 000 U-Net steps); fast: a tenth of it for one GPU; "
                             "tiny: miniature networks to try the pipeline on a CPU (pictures meaningless)")
    parser.add_argument("--steps", type=int, help="total U-Net steps (phase B1); default: the preset's")
    parser.add_argument("--save-every", type=int, help="checkpoint + preview every K U-Net steps (default: preset)")
    parser.add_argument("--start", type=float, help="use the video from this second")
    parser.add_argument("--end", type=float, help="use the video up to this second")
    parser.add_argument("--face", type=face_choice,
                        help="which face when the video shows several: largest, or its number counted from the "
                             "left (0, 1, ...); without it a video with several faces is refused")
    parser.add_argument("--anchor-frames", type=frame_list,
                        help="phase A's anchor frames, e.g. 0,85,110 (default: chosen automatically)")
    parser.add_argument("--models-dir", help="models folder (default: $R3DP_MODELS or ~/.cache/r3dp/models)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16 runs the U-Net and the renderer under autocast (GPUs with bf16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw of the training")
    parser.add_argument("--restart", action="store_true",
                        help="discard the folder's training when it was made from another video or preset")


def options_from_args(args: argparse.Namespace) -> PersonaliseOptions:
    return PersonaliseOptions(video=args.video, out=args.out, preset=args.preset, steps=args.steps,
                              save_every=args.save_every, start=args.start, end=args.end, face=args.face,
                              models_dir=args.models_dir, device=args.device, dtype=args.dtype, restart=args.restart,
                              anchor_frames=args.anchor_frames, seed=args.seed)


class StopOnSignal:
    """The first Ctrl-C asks the run to stop at the next step boundary (it saves first); a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self) -> StopOnSignal:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once, unsaved)", file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def step_printer(stream=None) -> Callable[[str, int, int, dict], None]:
    """A progress line per stage: bar, step, loss and ETA (updated in place on a terminal, every 10 % otherwise)."""
    stream = stream if stream is not None else sys.stderr
    interactive = stream.isatty()
    started: dict[str, tuple[float, int]] = {}
    printed: dict[str, int] = {}

    def show(stage: str, done: int, total: int, terms: dict) -> None:
        now = time.perf_counter()
        first_time, first_done = started.setdefault(stage, (now, done - 1))
        rate = (done - first_done) / max(now - first_time, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        loss = terms.get("total", next(iter(terms.values()), None))
        shown = "" if loss is None else f" loss {loss:.4f}"
        line = f"{stage:<16} {progress_bar(done, total)} {done}/{total}{shown} ETA {_duration(eta)}"
        if interactive:
            print("\r" + line, end="\n" if done == total else "", file=stream, flush=True)
        elif 10 * done // max(total, 1) > printed.get(stage, -1) or done == total:
            printed[stage] = 10 * done // max(total, 1)
            print(line, file=stream, flush=True)

    return show


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def cmd_personalise(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    with StopOnSignal() as stop:
        try:
            result = personalise(options, host=Host(should_stop=stop.check),
                                 say=lambda line: print(line, file=sys.stderr, flush=True), on_step=step_printer())
        except TrainingInterrupted as interrupted:
            print(f"r3dp personalise: {interrupted}", file=sys.stderr)
            return 130
    heldout = result.metrics["heldout"]
    scores = ", ".join(f"{key} {value:.4g}" if value is not None else f"{key} not scored"
                       for key, value in heldout.items()
                       if isinstance(value, float) or key == "mouth_landmark_distance")
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
    print(f"wrote persona {result.folder} at U-Net step {result.step}{resumed}; loss terms: "
          f"{', '.join(['l1', 'mouth_l2', *result.terms])}")
    print(f"held-out: {scores} (metrics.json)")
    return 0
