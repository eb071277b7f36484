"""``python -m r3dp_core.parity CASE.safetensors [CASE ...]`` — exit status 0 only if every case passes."""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import R3DPError
from .runner import run_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r3dp_core.parity", description=__doc__)
    parser.add_argument("cases", nargs="+", help="case_<stage>.safetensors files (the .json sidecar must be beside)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    all_passed = True
    for path in args.cases:
        try:
            report = run_case(path)
        except (R3DPError, KeyError, ValueError) as exc:
            print(f"FAIL: {path}: {exc}")
            all_passed = False
            continue
        print(report.summary(), flush=True)
        all_passed &= report.passed
    if len(args.cases) > 1:
        print("PASS: all cases" if all_passed else "FAIL: at least one case failed")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
