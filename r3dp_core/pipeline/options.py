"""The options of ``r3dp generate`` (and ``r3dp batch``), each defined once: one ``Option`` entry per option.

An entry holds the option's name, type, default, accepted range or choices, doc and official value. Everything
that mirrors a generate option reads :data:`GENERATE`:

* the command line: :func:`add_generate_arguments` builds ``r3dp generate``'s parser and the parser every row of
  ``r3dp batch`` is read with (:func:`generate_parser`); ``r3dp batch``'s own options are :data:`BATCH`;
* ``GenerateRequest``'s defaults and :func:`~r3dp_core.pipeline.request.request_from_options`;
* input validation's range checks (:meth:`Option.range_error`);
* the ComfyUI widgets that mirror an option (their defaults and bounds: :attr:`Option.widget_min`/``widget_max``);
* the README's option tables: ``python -m r3dp_core.pipeline.options --markdown generate`` prints one,
  ``--update-readme`` rewrites README's blocks between ``<!-- options:COMMAND -->`` and
  ``<!-- /options:COMMAND -->`` (a test fails when they drift).

The values themselves live in :mod:`r3dp_core.defaults` (or, for the head-pose recipe's, on ``PoseRecipe``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..geometry.framing import MAX_PHOTO_SIDE, parse_face_choice
from .pose import EASINGS, MAX_POSE_STRENGTH, POSE_MODES, PoseRecipe

OUTPUT_MODES = ("crop", "photo", "video")
#: Where ``--blink`` takes a persona's blinks from.
BLINK_SOURCES = ("schedule", "replay")
#: The largest seed a ComfyUI widget offers.
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Option:
    """One command-line option.

    Attributes:
        name: the ``GenerateRequest`` field and batch column; the flag is ``--name-with-dashes``.
        type: the parsed value's type (``str``, ``int``, ``float``, ``bool`` or ``Path``).
        default: the value when the option is not given (None: none).
        doc: the ``--help`` text and the README's description.
        minimum, maximum: the accepted range, inclusive (None: unbounded); ``exclusive_minimum``: the minimum
            itself is refused.
        official: the official Real3D-Portrait value, where there is one.
        choices: the accepted values of a text option.
        required: the option must be given.
        negatable: a bool given as ``--name``/``--no-name`` (else a flag that only turns it on).
        widget: a ComfyUI widget's bounds where they are narrower than the accepted range.
        range_note: what an out-of-range message adds in parentheses (default: the official value).
        parse: turns the parsed text into the request's value (``face``: ``'largest'`` or an index).
        request: the option is a ``GenerateRequest`` field (``dry_run`` is not).
        positional: given without a flag (``r3dp batch JOBS``).
        metavar: the value's name in ``--help``.
        const: the value of the flag given without a value (the value is then optional).
    """

    name: str
    type: type
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    official: Any = None
    choices: tuple[str, ...] = ()
    required: bool = False
    negatable: bool = False
    widget: tuple[float, float] | None = None
    range_note: str = ""
    parse: Callable[[Any], Any] | None = None
    request: bool = True
    positional: bool = False
    metavar: str | None = None
    const: Any = None

    @property
    def flag(self) -> str:
        return self.name if self.positional else "--" + self.name.replace("_", "-")

    @property
    def widget_min(self) -> float | None:
        """The lowest value a ComfyUI widget mirroring this option offers."""
        return self.widget[0] if self.widget else self.minimum

    @property
    def widget_max(self) -> float | None:
        """The highest value a ComfyUI widget mirroring this option offers."""
        return self.widget[1] if self.widget else self.maximum

    def widget_kwargs(self) -> dict:
        """``default`` (and ``min``/``max`` for a number) of a ComfyUI widget that mirrors this option."""
        kwargs = {"default": self.default}
        if self.type in (int, float):
            kwargs.update({key: value for key, value in (("min", self.widget_min), ("max", self.widget_max))
                           if value is not None})
        return kwargs

    def convert(self, value):
        """The request's value for the parsed ``value``: paths as ``Path`` (an optional one left empty: None)."""
        if self.parse is not None:
            return self.parse(value)
        if self.type is Path:
            return Path(value) if value or self.required else None
        return value

    def range_error(self, value) -> str | None:
        """The message refusing ``value`` when it is outside the accepted range, else None."""
        low, high = self.minimum, self.maximum
        above = low is None or (value > low if self.exclusive_minimum else value >= low)
        if above and (high is None or value <= high):
            return None
        if high is None:
            return f"{self.flag} must be >= {low:g}, got {value}."
        note = self.range_note or (f"official {self.official:g}" if self.official is not None else "")
        note = f" ({note})" if note else ""
        if self.exclusive_minimum:
            what = "a fraction in" if (low, high) == (0, 1) else "in"
            return f"{self.flag} {value} must be {what} ({low:g}, {high:g}]{note}."
        return f"{self.flag} {value} is outside {low:g}..{high:g}{note}."

    def argparse_kwargs(self) -> dict:
        """``add_argument``'s keyword arguments for this option."""
        kwargs: dict[str, Any] = {"help": self.doc.replace("%", "%%")}
        if self.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if self.negatable else "store_true"
            if self.negatable:
                kwargs["default"] = self.default
            return kwargs
        if self.type in (int, float):
            kwargs["type"] = self.type
        if self.const is not None:
            kwargs.update(nargs="?", const=self.const)
        if self.choices:
            kwargs["choices"] = self.choices
        if self.metavar:
            kwargs["metavar"] = self.metavar
        if self.required:
            kwargs["required"] = True
        elif self.default is not None:
            kwargs["default"] = self.default
        return kwargs


@dataclass(frozen=True)
class OptionTable:
    """The options of one command, in ``--help`` order; ``table["name"]`` is one of them."""

    command: str
    options: tuple[Option, ...]

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options)

    def __getitem__(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)


_MODELS_DIR = Option("models_dir", Path, None, "models folder (default: $R3DP_MODELS or ~/.cache/r3dp/models)")
_DEVICE = Option("device", str, "auto", "auto, cpu, cuda, cuda:N or mps")
_DTYPE = Option("dtype", str, "auto",
                "auto, fp32, fp16 or bf16 (auto is fp32 on the CPU, where bf16 is about 2x faster)")

GENERATE = OptionTable("generate", (
    Option("image", Path, None, "portrait photo (give --image or --persona)"),
    Option("persona", Path, None, "a persona folder (`r3dp personalise`) to animate with --audio instead of a photo; "
                                  "needs only the persona and Talk3D's wav2vec2"),
    Option("audio", Path, None, "speech clip (wav/flac/ogg/mp3, 8-48 kHz)"),
    Option("out", Path, None, "output .mp4", required=True),
    _MODELS_DIR,
    Option("pose_video", Path, None, "video whose head pose drives the camera"),
    Option("expression_video", Path, None, "video whose expressions drive the face (instead of audio)"),
    Option("bg", Path, None, "background image (default: extracted from the portrait)"),
    Option("camera", str, defaults.POSE_MODE, choices=POSE_MODES, official="static",
           doc="head pose: auto (the default: the pose video's, the expression video's or the motion file's pose if "
               "any, else natural; a persona: replay), static (the photo's pose, the official pipeline's), driving, "
               "orbit, keyframes, natural (a calm seeded head motion that follows the speech), replay (a persona: its "
               "training video's cameras, forward then backward; a persona's other modes turn about its mean camera, "
               "yaw and pitch only)"),
    Option("keyframes", str, PoseRecipe.keyframes,
           "with --camera keyframes: 'seconds: yaw, pitch; ...' in degrees from the photo's pose, e.g. "
           "'0: 0, 0; 2: 15, 0; 4: -15, 5'"),
    Option("easing", str, PoseRecipe.easing, choices=EASINGS,
           doc="with --camera keyframes: smooth (ease in and out of every key) or linear"),
    Option("pose_strength", float, PoseRecipe.pose_strength, minimum=0.0, maximum=MAX_POSE_STRENGTH,
           doc=f"scale the head's motion, 0-{MAX_POSE_STRENGTH:g}: a driving pose about its first frame (0 = held, "
               "1 = as driven, 2 = doubled); natural motion about the photo's pose (linear up to 1, livelier above, "
               "always within the same absolute bounds); orbit and keyframe angles are not scaled"),
    Option("pose_smoothing", int, PoseRecipe.pose_smoothing, minimum=1, official=PoseRecipe.pose_smoothing,
           widget=(1, 31),
           doc=f"frames the camera is averaged over, odd (official {PoseRecipe.pose_smoothing}; 1 = none)"),
    Option("natural_on_top", bool, PoseRecipe.natural_on_top,
           "with --camera orbit or keyframes: add natural head motion to the path"),
    Option("mouth_amp", float, defaults.MOUTH_AMP, minimum=0.0, maximum=2.0, official=defaults.MOUTH_AMP,
           range_note=f"official default {defaults.MOUTH_AMP:g}",
           doc=f"mouth amplitude the audio model is conditioned on (official {defaults.MOUTH_AMP:g}; audio driving "
               "only)"),
    Option("mouth_scale", float, defaults.MOUTH_SCALE, minimum=0.0, maximum=defaults.MOUTH_SCALE_MAX,
           range_note="1 keeps the motion",
           doc=f"scale the mouth's motion in the rendered face, 0-{defaults.MOUTH_SCALE_MAX:g} (1 = as driven; audio "
               "and video)"),
    Option("blink", bool, defaults.BLINK, "periodic blinks", negatable=True, official=True),
    Option("blink_source", str, "schedule", choices=BLINK_SOURCES,
           doc="with --persona: schedule (r3dp's periodic blinks, seeded) or replay (the training video's blinks)"),
    Option("temperature", float, defaults.TEMPERATURE, "audio-to-motion sampling temperature", minimum=0.0,
           official=defaults.TEMPERATURE, widget=(0.0, 1.0)),
    Option("seed", int, defaults.SEED, "random seed (latent noise, blinks, natural head motion, renderer)",
           widget=(0, MAX_SEED)),
    _DEVICE,
    _DTYPE,
    Option("chunk_size", int, defaults.CHUNK_SIZE, "frames rendered together (memory vs speed)", widget=(1, 256)),
    Option("face", str, "largest", parse=parse_face_choice,
           doc="which face to animate when the photo shows several: largest (never a face under 1 % of the photo; "
               "--dry-run lists every face found), or an index 0, 1, ... counting faces from left to right"),
    Option("min_face_area", float, defaults.MIN_FACE_AREA, minimum=0.0, maximum=1.0, exclusive_minimum=True,
           official=defaults.MIN_FACE_AREA, widget=(0.05, 0.8),
           doc="the face covers at least this fraction of the square cut around it (official "
               f"{defaults.MIN_FACE_AREA:g}; 0.15-0.5 are sensible)"),
    Option("output", str, "crop", choices=OUTPUT_MODES,
           doc=f"crop: the {defaults.FRAME_SIZE}x{defaults.FRAME_SIZE} animated square (a persona: its aligned face); "
               f"photo: pasted back into the photo at its resolution (longest side capped at {MAX_PHOTO_SIDE} px); "
               "video (a persona): pasted back into its training video, whose cameras are replayed"),
    Option("video", Path, None, "with --persona --output video: the persona's training video, if it is no longer "
                                "where the persona says (checked by its SHA-256)"),
    Option("head_mask", Path, None, "mask image of the head with hair (white on black, the photo's size), used "
                                    "instead of the selfie segmenter"),
    Option("body_mask", Path, None, "with --head-mask: mask image of the rest of the person (neck, shoulders)"),
    Option("debug_panels", bool, False,
           "write source | SECC | raw render | depth | final side by side "
           f"({5 * defaults.FRAME_SIZE}x{defaults.FRAME_SIZE}) to inspect a run"),
    Option("motion", Path, None, "motion file driving the face instead of audio: an r3dp .safetensors motion (Save "
                                 "Motion) or an official .npy coefficient dict (exp [T,64], optional euler/trans [T,3] "
                                 "for the head pose); --audio, if given, is its sound"),
    Option("map_to_init_pose", bool, PoseRecipe.map_to_init_pose, negatable=True, official=True,
           doc="a driving head pose starts at the photo's pose and applies the driving pose's changes (official "
               "default); --no-map-to-init-pose uses the driving pose as it is"),
    Option("head_threshold", float, defaults.HEAD_THRESHOLD, minimum=0.0, maximum=1.0,
           official=defaults.HEAD_THRESHOLD,
           doc="HTB-SR: rendered head opacity above which a pixel counts as solid head, 0-1 (official "
               f"{defaults.HEAD_THRESHOLD:g})"),
    Option("dry_run", bool, False, request=False,
           doc="validate every input and report what would be done, without loading any other model"),
))
"""``r3dp generate``'s options, in ``--help`` order."""

BATCH = OptionTable("batch", (
    Option("jobs", Path, None, "job list (.csv or .jsonl); relative input paths are taken from its folder",
           positional=True, metavar="JOBS"),
    Option("out_dir", Path, None, "output folder; each row's out is relative to it, and results.jsonl is written "
                                  "there", required=True, metavar="DIR"),
    Option("personalise", bool, False, "the rows are personalise jobs (columns: video, out, preset, steps, save_every, "
                                       "start, end, face, anchor_frames, seed, restart): train one persona per row "
                                       "(out: its folder, default the video's name); a complete persona is skipped, "
                                       "any other resumes"),
    _MODELS_DIR,
    dataclasses.replace(_DEVICE, doc="auto, cpu, cuda, cuda:N or mps (each Ray worker: its GPU)"),
    dataclasses.replace(_DTYPE, doc="auto, fp32, fp16 or bf16 (--personalise: auto/fp32 float32, bf16 bfloat16 "
                                    "autocast)"),
    Option("strict", bool, False, "render nothing if any row is bad"),
    Option("force", bool, False, "render jobs whose output already exists again (--personalise: run complete "
                                 "personas again; they resume, so only the evaluation is redone)"),
    Option("ray", str, None, "render on Ray (pip install 'r3dp[ray]'): no ADDRESS starts a local cluster, 'auto' "
                             "joins the running one, or give its address; every path must be readable by every node",
           const="local", metavar="ADDRESS"),
    Option("cpus_per_worker", int, None, "with --ray on a cluster without GPUs: CPUs per worker (default: the smaller "
                                         "of 4 and the CPUs of the largest node; one worker per free GPU otherwise)"),
    Option("worker_start_timeout", float, None, "with --ray: seconds a worker may take to be scheduled and load its "
                                                "models before it is given up and reported (default 600)",
           metavar="SECONDS"),
))
"""``r3dp batch``'s own options (the generate options of its rows are :data:`GENERATE`'s; with ``--personalise``,
``r3dp personalise``'s), in ``--help`` order."""

TABLES = {table.command: table for table in (GENERATE, BATCH)}


def add_arguments(parser: argparse.ArgumentParser, table: OptionTable) -> argparse.ArgumentParser:
    """Add every option of ``table`` to ``parser``, in the table's order."""
    for option in table:
        parser.add_argument(option.flag, **option.argparse_kwargs())
    return parser


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``r3dp generate``'s options to ``parser`` (the ``generate`` sub-command's, or a batch row's)."""
    return add_arguments(parser, GENERATE)


def generate_parser() -> argparse.ArgumentParser:
    """A parser of ``r3dp generate``'s options alone (what a row of ``r3dp batch`` is read with)."""
    return add_generate_arguments(argparse.ArgumentParser(prog="r3dp generate"))


# ------------------------------------------------------------------------------------------ README tables

README_START = "<!-- options:{} -->"
README_END = "<!-- /options:{} -->"


def _code(value) -> str:
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _shown_default(option: Option) -> str:
    if option.required or option.positional:
        return "required"
    if option.type is bool:
        return "on" if option.default else "off"
    if option.default is None or option.default == "":
        return "—"
    return _code(option.default)


def _shown_range(option: Option) -> str:
    if option.choices:
        return ", ".join(_code(choice) for choice in option.choices)
    low, high = option.minimum, option.maximum
    if low is None and high is None:
        return ""
    if high is None:
        return f"≥ {low:g}"
    if option.exclusive_minimum:
        return f"({low:g}, {high:g}]"
    return f"{low:g}–{high:g}"


def _shown_official(option: Option) -> str:
    if option.official is None:
        return ""
    if isinstance(option.official, bool):
        return "on" if option.official else "off"
    return _code(option.official)


def _shown_flag(option: Option) -> str:
    if option.positional:
        return f"`{option.metavar or option.name}`"
    if option.negatable:
        return f"`{option.flag}`, `--no-{option.flag[2:]}`"
    if option.const is not None:
        return f"`{option.flag} [{option.metavar}]`"
    if option.metavar:
        return f"`{option.flag} {option.metavar}`"
    return f"`{option.flag}`"


def markdown_table(table: OptionTable) -> str:
    """``table`` as a markdown table: option, default, accepted values, official value, what it does."""
    lines = ["| option | default | accepted | official | what it does |", "|---|---|---|---|---|"]
    for option in table:
        cells = (_shown_flag(option), _shown_default(option), _shown_range(option), _shown_official(option),
                 option.doc.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_block(text: str, command: str) -> str | None:
    """The text between ``command``'s markers in ``text`` (README), or None when they are missing."""
    start, end = README_START.format(command), README_END.format(command)
    match = re.search(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), text, re.S)
    return match.group(1) if match else None


def update_readme(text: str) -> str:
    """``text`` with every command's block between its markers replaced by its generated table."""
    for command, table in TABLES.items():
        start, end = README_START.format(command), README_END.format(command)
        block = f"{start}\n{markdown_table(table)}\n{end}"
        text = re.sub(re.escape(start) + r"\n.*?" + re.escape(end), lambda _, block=block: block, text, flags=re.S)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r3dp_core.pipeline.options",
                                     description="Print a command's option table in markdown, or rewrite the "
                                                 "README's option tables.")
    parser.add_argument("--markdown", choices=sorted(TABLES), help="print this command's option table")
    parser.add_argument("--update-readme", metavar="README", nargs="?", const="README.md", type=Path,
                        help="rewrite the tables between the <!-- options:COMMAND --> markers of README "
                             "(default README.md)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(TABLES[args.markdown]))
    if args.update_readme:
        readme = args.update_readme
        readme.write_text(update_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    if not (args.markdown or args.update_readme):
        parser.print_usage(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
