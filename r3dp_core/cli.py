"""The ``r3dp`` command line.

Every user-caused failure is an ``R3DPError``: it is printed as one paragraph and the command exits with
status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import InputError, R3DPError

CONVERTIBLE = ("secc2plane_torso", "secc2plane", "audio2secc_vae")


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import MODEL_DESCRIPTIONS, load_checkpoint, save_safetensors

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise InputError(f"Output {out} must end in .safetensors (the converter writes safetensors only).")
    if Path(args.input).resolve() == out.resolve():
        raise InputError("Input and output are the same file; choose another output path.")
    loaded = load_checkpoint(args.input)
    if loaded.kind not in CONVERTIBLE:
        raise InputError(f"{args.input} looks like {MODEL_DESCRIPTIONS[loaded.kind]}; `r3dp convert` converts "
                         "Real3D-Portrait checkpoints (secc2plane_torso, audio2secc_vae).")
    metadata = {"format": "pt", "r3dp_model": loaded.kind, "r3dp_source": Path(args.input).name,
                "r3dp_config": json.dumps(loaded.config, sort_keys=True, default=str)}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        save_safetensors(loaded.state_dict, partial, metadata)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {out}: {loaded.kind}, {len(loaded.state_dict)} tensors"
          f"{', config from config.yaml' if loaded.config else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r3dp", description="Real3D-Portrait talking portraits (r3dp).")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert an official .ckpt to a flat .safetensors file",
                             description="Convert an official Real3D-Portrait .ckpt (any layout) to a flat "
                                         ".safetensors file with exactly the official state-dict keys; the "
                                         "config.yaml beside the checkpoint is stored in the metadata.")
    convert.add_argument("input", help="official checkpoint (.ckpt/.pt/.pth/.safetensors)")
    convert.add_argument("output", help="where to write the .safetensors file")
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except R3DPError as exc:
        print(f"r3dp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"r3dp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
