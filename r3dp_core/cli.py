"""The ``r3dp`` command line.

Every user-caused failure is an ``R3DPError``: it is printed as one paragraph and the command exits with
status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .errors import InputError, R3DPError
from .host import progress_bar

CONVERTIBLE = ("secc2plane_torso", "secc2plane", "audio2secc_vae")


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import MODEL_DESCRIPTIONS, load_checkpoint, write_converted

    out = Path(args.output)
    if args.talk3d:
        return _convert_talk3d_person(Path(args.input), out, args.checkpoint)
    if Path(args.input).suffix == ".pkl" or _is_talk3d_checkpoint(args.input):
        return _convert_talk3d_file(Path(args.input), out)
    if out.suffix != ".safetensors":
        raise InputError(f"Output {out} must end in .safetensors (the converter writes safetensors only).")
    if Path(args.input).resolve() == out.resolve():
        raise InputError("Input and output are the same file; choose another output path.")
    loaded = load_checkpoint(args.input)
    if loaded.kind not in CONVERTIBLE:
        raise InputError(f"{args.input} looks like {MODEL_DESCRIPTIONS[loaded.kind]}; `r3dp convert` converts "
                         "Real3D-Portrait checkpoints (secc2plane_torso, audio2secc_vae).")
    write_converted(loaded, out)
    print(f"wrote {out}: {loaded.kind}, {len(loaded.state_dict)} tensors"
          f"{', config from config.yaml' if loaded.config else ''}")
    return 0


def _is_talk3d_checkpoint(path: str) -> bool:
    from .talk3d.official_files import is_talk3d_checkpoint
    return is_talk3d_checkpoint(path)


def _convert_talk3d_person(folder: Path, out: Path, checkpoint: str | None) -> int:
    from .talk3d.official_files import convert_official_person

    if not folder.is_dir():
        raise InputError(f"--talk3d needs the official person folder (DATA_ROOT/ID, with G_tune.pkl); {folder} is "
                         "not a folder.")
    if out.exists() and not (out / "persona.json").is_file():
        raise InputError(f"{out} exists and is not a persona; choose a new folder for the persona.")
    written, notes = convert_official_person(folder, out, checkpoint)
    print(f"wrote persona {written}")
    for note in notes:
        print(f"  note: {note}")
    return 0


def _convert_talk3d_file(path: Path, out: Path) -> int:
    """An official Talk3D checkpoint or EG3D generator pickle → one safetensors file with the official keys."""
    import json

    from .checkpoint import save_safetensors
    from .talk3d.official_files import read_eg3d_generator, read_talk3d_checkpoint

    if out.suffix != ".safetensors":
        raise InputError(f"Output {out} must end in .safetensors (the converter writes safetensors only).")
    if path.suffix == ".pkl":
        checked, init_kwargs = read_eg3d_generator(path)
        metadata = {"model": "eg3d_fixed_triplane", "official_init_kwargs": json.dumps(init_kwargs, default=repr)}
        tensors = checked.state_dict
    else:
        checkpoint = read_talk3d_checkpoint(path)
        checked = checkpoint.networks
        metadata = {"model": "talk3d"}
        tensors = {**checked.state_dict, **(checkpoint.superresolution or {})}
    save_safetensors(tensors, out, metadata)
    print(f"wrote {out}: {metadata['model']}, {len(tensors)} tensors")
    for note in checked.notes:
        print(f"  note: {note}")
    if checked.extras:
        print(f"  ignored {len(checked.extras)} extra tensors: {', '.join(checked.extras[:5])}"
              f"{', ...' if len(checked.extras) > 5 else ''}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import model_files

    models_dir = model_files.default_models_dir(args.models_dir)
    if args.action != "import" and args.path:
        raise InputError(f"`r3dp models {args.action}` takes no path; did you mean `r3dp models import {args.path}`?")
    if args.action != "fetch" and (args.official or args.accept_licenses or args.talk3d):
        raise InputError(f"--official, --talk3d and --accept-licenses belong to `r3dp models fetch`, not `r3dp "
                         f"models {args.action}`: run `r3dp models fetch --official`.")
    if args.action == "fetch":
        return _fetch_models(models_dir, official=args.official, accept_licenses=args.accept_licenses,
                             max_extracted_bytes=args.max_extracted_size, max_ratio=args.max_compression_ratio,
                             talk3d=args.talk3d)
    if args.action == "import":
        return _import_models(args, models_dir)
    print(f"models folder: {models_dir}")
    missing, talk3d_missing = 0, []
    for spec, found in model_files.status(models_dir):
        state = f"present  {found}" if found else "MISSING  " + str(models_dir / spec.relpath)
        if spec.talk3d_only:   # not needed by `r3dp generate`: say what it is for
            state += f"  (for {'/'.join(spec.required_for)}: {spec.purpose})"
            if found is None:
                talk3d_missing.append(spec)
        else:
            missing += found is None
        print(f"  {spec.key:<20} {state}")
    if missing:
        print(f"{missing} file(s) missing: `r3dp models fetch --official` downloads them all (the official "
              "checkpoints and the BFM from their Google Drive folders once you accept their terms); `r3dp models "
              "import PATH` puts files you downloaded by hand (folder or archive) in place.")
    if talk3d_missing:
        print(f"{len(talk3d_missing)} Talk3D file(s) missing (only Talk3D needs them, `r3dp generate` does not):")
        for spec in talk3d_missing:
            print(f"  {spec.key:<20} {spec.how_to_get()}")
    return 0


def _download_progress(key: str):
    """A one-line progress bar on stderr for one download."""
    def show(done: int, total: int | None) -> None:
        size = f"{done / 2**20:.1f}" + (f"/{total / 2**20:.1f}" if total else "") + " MB"
        print(f"\r  {key:<20} {size}", end="", file=sys.stderr, flush=True)

    return show


def _accept_official_terms(accepted: bool) -> None:
    """Print the terms of the official files and have the user accept them (``--accept-licenses`` does, for
    scripts); without a terminal to ask in and without the flag, refuse."""
    from .gdrive import TERMS

    print(TERMS)
    if accepted:
        print("Accepted with --accept-licenses.")
        return
    if not (sys.stdin is not None and sys.stdin.isatty()):
        raise InputError("`r3dp models fetch --official` needs you to accept the terms above and has no terminal to "
                         "ask you in: read them, then pass --accept-licenses to accept them. Nothing was downloaded.")
    answer = input("Do you accept these terms? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError("The terms were not accepted, so nothing was downloaded. `r3dp models fetch` (without "
                         "--official) still downloads the other files; the official ones can be downloaded by hand "
                         "and put in place with `r3dp models import PATH`.")


def _fetch_models(models_dir: Path, opener=None, snapshot_download=None, *, official: bool = False,
                  accept_licenses: bool = False, drive_opener=None, max_extracted_bytes: int | None = None,
                  max_ratio: float | None = None, talk3d: bool = False) -> int:
    """Download every missing file that has a public address and, with ``official``, the official checkpoints
    and BFM from Google Drive; the files only Talk3D needs only with ``talk3d`` (they are large and Real3D-Portrait
    never reads them); list the manual steps for the rest. A failed download does not stop the others:
    every failure is listed at the end and the status is 1. ``opener``/``drive_opener``/``snapshot_download``
    replace the network calls (tests); the Drive address also follows ``$R3DP_GDRIVE_URL``."""
    from . import model_files

    drive_needed = official and any(spec.official_drive and found is None
                                    for spec, found in model_files.status(models_dir))
    if drive_needed:
        _accept_official_terms(accept_licenses)   # before anything is downloaded
    manual, failures = [], []
    for spec, found in model_files.status(models_dir):
        if found is not None:
            print(f"  {spec.key:<20} present")
            continue
        if spec.talk3d_only and not talk3d:
            print(f"  {spec.key:<20} skipped (only Talk3D needs it: `r3dp models fetch --talk3d`)")
            continue
        try:
            if spec.url:
                print(f"  {spec.key:<20} downloading {spec.url}")
                try:
                    model_files.download(spec, models_dir, progress=_download_progress(spec.key),
                                         **({"opener": opener} if opener else {}))
                finally:
                    print(file=sys.stderr)
                print(f"  {spec.key:<20} saved to {models_dir / spec.relpath}")
            elif spec.hub_repo:
                print(f"  {spec.key:<20} downloading {spec.hub_repo} from Hugging Face ({spec.size})")
                target = model_files.fetch_hub_folder(spec, models_dir, snapshot_download=snapshot_download)
                print(f"  {spec.key:<20} saved to {target}")
            elif not (official and spec.official_drive):
                manual.append(spec)
        except R3DPError as exc:   # a failed download, a wrong file: the others are still fetched
            print(f"  {spec.key:<20} FAILED (listed at the end)")
            failures.append((spec.key, str(exc)))
    if drive_needed:
        failures += _fetch_official(models_dir, drive_opener, max_extracted_bytes, max_ratio)
    for spec in manual:
        print(f"  {spec.key:<20} manual step: {spec.source}")
    if manual:
        print("then run `r3dp models import PATH` with the downloaded folder or archive: it finds each file, checks "
              "it and puts it in its place.")
        if any(spec.official_drive for spec in manual):
            print("Or run `r3dp models fetch --official`: it downloads the official checkpoints and the BFM from "
                  "their public Google Drive folders once you accept their terms.")
    if failures:
        print(f"{len(failures)} download{'s' if len(failures) != 1 else ''} failed:", file=sys.stderr)
        for what, message in failures:
            print(f"  {what}: {message}", file=sys.stderr)
        return 1
    return 0


def _fetch_official(models_dir: Path, opener, max_extracted_bytes: int | None,
                    max_ratio: float | None) -> list[tuple[str, str]]:
    """The Drive part of ``r3dp models fetch --official`` (terms already accepted); returns its failures."""
    from .gdrive import drive_base_url, fetch_official

    print(f"  official files from Google Drive ({drive_base_url()}):")
    shown = {}

    def progress(name: str, done: int, total: int | None) -> None:
        shown[name] = True
        _download_progress(name)(done, total)

    def say(line: str) -> None:
        if shown:
            print(file=sys.stderr)
            shown.clear()
        print(f"    {line}")

    report = fetch_official(models_dir, licenses_accepted=True, opener=opener, progress=progress, say=say,
                            max_extracted_bytes=max_extracted_bytes, max_ratio=max_ratio)
    if shown:
        print(file=sys.stderr)
    return report.failures


def _import_models(args: argparse.Namespace, models_dir: Path) -> int:
    from .model_import import import_models

    if not args.path:
        raise InputError("`r3dp models import` needs the folder or archive (.zip, .tar.gz) to import from.")
    report = import_models(args.path, models_dir, link=args.link, convert=args.convert, force=args.force,
                           **_archive_caps(args))
    how = "linked" if args.link else "converted" if args.convert else "copied"
    for key, source, target in report.placed:
        print(f"  {key:<20} {how} {source} -> {target}")
    for key, existing in report.in_place:
        print(f"  {key:<20} already in place: {existing} is the file found (nothing to copy)")
    for key, existing in report.kept:
        print(f"  {key:<20} kept {existing} (already present; --force replaces it)")
    for source, reason in report.refused:
        print(f"  REFUSED              {source}: {reason}")
    for source, reason in report.skipped:
        print(f"  skipped              {source}: {reason}")
    for note in report.notes:
        print(f"  note: {note}")
    if report.missing:
        print(f"still missing in {models_dir}:")
        for spec in report.missing:
            print(f"  {spec.key:<20} {spec.relpath} — {spec.how_to_get()}")
    else:
        print(f"all model files are in {models_dir}")
    return 1 if report.refused else 0


def _archive_caps(args: argparse.Namespace) -> dict:
    caps = {"max_extracted_bytes": args.max_extracted_size, "max_ratio": args.max_compression_ratio}
    return {key: value for key, value in caps.items() if value is not None}


def byte_size(text: str) -> int:
    """``20G``, ``500MB``, ``1.5T``, ``1000000``: a size in bytes (decimal units, as disks are sized)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 20G, 500M or a number of bytes")
    return int(float(match.group(1)) * 1000 ** "_kmgt".index(match.group(2).lower() or "_"))


def positive_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number (e.g. 200)")
    return value


def cmd_doctor(args: argparse.Namespace) -> int:
    import platform

    import torch

    from . import model_files
    from .device import resolve_device

    print(f"python      {platform.python_version()} ({sys.executable})")
    print(f"torch       {torch.__version__}; cuda available: {torch.cuda.is_available()}; "
          f"mps available: {torch.backends.mps.is_available()}")
    print(f"device      auto -> {resolve_device('auto')}")
    problems = 0
    for module in ("mediapipe", "av", "librosa", "transformers", "safetensors", "cv2", "scipy"):
        try:
            imported = __import__(module)
            print(f"{module:<11} {getattr(imported, '__version__', 'ok')}")
        except ImportError as exc:
            problems += 1
            print(f"{module:<11} MISSING ({exc}); install with: pip install -r requirements.txt")
    models_dir = model_files.default_models_dir(args.models_dir)
    status = model_files.status(models_dir)
    missing = [spec.key for spec, found in status if found is None and not spec.talk3d_only]
    print(f"models      {models_dir}: " + (f"missing {', '.join(missing)} (see `r3dp models`)" if missing
                                             else "all present"))
    if talk3d_missing := [spec.key for spec, found in status if found is None and spec.talk3d_only]:
        print(f"talk3d      missing {', '.join(talk3d_missing)} (only Talk3D needs them; see `r3dp models`)")
    if args.selftest:
        _selftest(args)
    return 1 if problems else 0


def _selftest(args: argparse.Namespace) -> None:
    from .pipeline.personalise_selftest import run_personalise_selftest
    from .pipeline.selftest import run_selftest

    length = {"seconds": args.seconds} if args.seconds else {}
    result = run_selftest(device=args.device, out=Path(args.out) if args.out else None, models_dir=args.models_dir,
                          log=lambda message: print(f"selftest    {message}"), **length)
    print(f"selftest    {result.frames} frames ({result.speech_seconds:.2f} s of speech, landmarks: "
          f"{result.landmarks}) at {result.size}x{result.size}, {result.fps:.2f} fps on {result.device}")
    print(f"selftest    wrote {result.path}")
    personalised = run_personalise_selftest(device=args.device, models_dir=args.models_dir,
                                            log=lambda message: print(f"selftest    personalise: {message}"))
    print(f"selftest    personalise: {personalised.summary()}")


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipeline.admission import admit
    from .pipeline.generate import generate
    from .pipeline.request import request_from_options
    from .pipeline.validation import describe

    request = request_from_options(args)
    if args.dry_run:
        admitted = admit(request, check_models=False)
        if request.is_persona:
            from .pipeline.persona import describe_persona

            print(describe_persona(request, admitted.inputs))
        else:
            print(describe(request, admitted.inputs))
        print("dry run: inputs are valid; nothing was rendered")
        return 0

    def progress(done: int, total: int) -> None:
        print(f"\r{progress_bar(done, total)} {done}/{total} frames", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    summary = generate(request, progress=progress, log=lambda msg: print(msg, file=sys.stderr))
    vram = f", peak VRAM {summary.peak_vram_mb:.0f} MB" if summary.peak_vram_mb is not None else ""
    print(f"wrote {summary.path}: {summary.frames} frames, {summary.fps:.2f} fps, "
          f"peak RSS {summary.peak_rss_mb:.0f} MB{vram}")
    return 0


def batch_printer(stream=None):
    """What ``r3dp batch`` prints for each ``BatchEvent``, on ``stream`` (default: stderr). On a terminal a job's
    frames update one line in place; written to a file or a pipe, a job prints a line at each tenth of its
    clip, so that a log gets a dozen lines per job rather than an update per chunk."""
    stream = stream if stream is not None else sys.stderr
    interactive = stream.isatty()
    tenths: dict[int, int] = {}  # line -> tenths of its clip printed (non-interactive)

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    def show(event) -> None:
        if event.kind == "frames" and interactive:
            print(f"\r  line {event.line}: {progress_bar(event.done, event.total)} {event.done}/{event.total} frames",
                  end="" if event.done < event.total else "\n", file=stream, flush=True)
        elif event.kind == "frames":
            tenth = 10 * event.done // max(event.total, 1)
            if tenth > tenths.get(event.line, 0):
                tenths[event.line] = tenth
                say(f"  line {event.line}: {event.done}/{event.total} frames ({10 * tenth} %)")
        elif event.kind == "start":
            tenths.pop(event.line, None)
            say(f"[{event.index}/{event.count}] line {event.line} -> {event.output} ({event.worker})")
        elif event.kind == "finished" and event.result.status == "done":
            say(f"  line {event.line}: done, {event.result.frames} frames in {event.result.seconds:.1f} s")
        elif event.kind == "finished":
            say(f"  line {event.line}: failed: {event.result.error}")
        elif event.kind == "invalid":
            say(f"line {event.line}: error: {event.error}")
        elif event.kind == "skipped":
            say(f"line {event.line}: skipped, {event.output} is complete (--force renders it again)")
        elif event.kind == "retry":
            say(f"  line {event.line}: worker {event.worker} died; retrying on another worker")
        elif event.kind == "replaced":
            say(f"worker {event.worker} died ({event.error}); starting {event.replacement} in its place")
        elif event.kind == "worker_failed":
            say(f"worker {event.worker} could not start: {event.error}")

    return show


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch.run import run_batch

    printer = batch_printer()
    if args.personalise:
        from .batch.personalise import personalise_printer

        printer = personalise_printer(printer)
    report = run_batch(args.jobs, args.out_dir, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                       strict=args.strict, force=args.force, ray=args.ray, cpus_per_worker=args.cpus_per_worker,
                       worker_start_timeout=args.worker_start_timeout, on_event=printer, personalise=args.personalise)
    counts = report.counts
    portraits = ("" if args.personalise else
                 f"; portraits prepared {report.portraits_prepared}, reused {report.portraits_reused}")
    print(f"batch: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{report.seconds:.1f} s{portraits}; results in {report.results_path}")
    if report.worker_errors:
        print(f"{len(report.worker_errors)} Ray worker(s) could not start:\n"
              + "\n".join("  " + error.replace("\n", "\n    ") for error in report.worker_errors))
    return 1 if counts["failed"] else 0


def _add_convert(sub) -> None:
    """``r3dp convert IN OUT``: official checkpoints (or a Talk3D person) to safetensors."""
    convert = sub.add_parser("convert", help="convert official files to safetensors (or a Talk3D person to a persona)",
                             description="Convert an official Real3D-Portrait .ckpt (any layout), a Talk3D checkpoint "
                                         "or an EG3D generator .pkl to a flat .safetensors file with exactly the "
                                         "official state-dict keys (a Real3D-Portrait config.yaml beside the "
                                         "checkpoint is stored in the metadata). Pickled code in the files (optimizer "
                                         "objects, EG3D's embedded sources) is never run. With --talk3d, INPUT is a "
                                         "person folder trained with the official Talk3D code and OUTPUT a persona "
                                         "folder.")
    convert.add_argument("input", help="official checkpoint (.ckpt/.pt/.pth/.pkl/.safetensors), or with --talk3d the "
                                       "official person folder (G_tune.pkl, inversion_w_person.pt, "
                                       "inversion_0-0_angles.pt, ...)")
    convert.add_argument("output", help="where to write the .safetensors file (with --talk3d: the persona folder)")
    convert.add_argument("--talk3d", action="store_true",
                         help="convert a person trained with the official Talk3D code into an r3dp persona")
    convert.add_argument("--checkpoint", help="with --talk3d: the Talk3D checkpoint (.pt) when it is not in the "
                                              "person folder or its checkpoints/ folder")
    convert.set_defaults(func=cmd_convert)


def _add_generate(sub) -> None:
    """``r3dp generate``: its options are the option table's (``pipeline/options.py``)."""
    from .pipeline.options import add_generate_arguments

    gen = sub.add_parser("generate", help="photo (or persona) + voice clip (or driving video) -> talking mp4",
                         description="Render a talking-portrait video. Inputs are validated before any model "
                                     "is loaded; the mp4 is written only when complete.")
    add_generate_arguments(gen)
    gen.set_defaults(func=cmd_generate)


def _add_models(sub) -> None:
    """``r3dp models [list|fetch|import]``."""
    models = sub.add_parser("models", help="list present and missing model files, fetch or import them",
                            description="list: what the models folder holds and lacks. fetch: download every "
                                        "missing file that has a public address (HuBERT included), with resume and "
                                        "checksums; --official adds the official checkpoints and BFM from Google "
                                        "Drive. import PATH: check the files of a downloaded folder or archive "
                                        "(the official release, the BFM bundle, flat) and put each in its slot.")
    models.add_argument("action", nargs="?", choices=["list", "fetch", "import"], default="list")
    models.add_argument("path", nargs="?", help="import: the folder or archive (.zip, .tar.gz) you downloaded")
    models.add_argument("--models-dir", help="models folder (default: $R3DP_MODELS or ~/.cache/r3dp/models)")
    models.add_argument("--link", action="store_true", help="import: symlink the files instead of copying them")
    models.add_argument("--convert", action="store_true",
                        help="import: write the checkpoints as .safetensors (as `r3dp convert` does)")
    models.add_argument("--force", action="store_true", help="import: replace files already in their slots (each "
                                                            "stays whole until its replacement is complete)")
    models.add_argument("--official", action="store_true",
                        help="fetch: also download the official checkpoints and the BFM from their public Google "
                             "Drive folders (after you accept their terms), checked as `import` checks them")
    models.add_argument("--talk3d", action="store_true",
                        help="fetch: also download the files only Talk3D needs that have a public address (its "
                             "wav2vec2 audio model, 1.3 GB, and the LPIPS loss network, 233 MB); `r3dp models` lists "
                             "the ones to import by hand (EG3D, ArcFace, the Wav2Lip lip-sync expert)")
    models.add_argument("--accept-licenses", action="store_true",
                        help="fetch --official: accept the terms of the official files without being asked (scripts)")
    models.add_argument("--max-extracted-size", type=byte_size, metavar="SIZE",
                        help="import, fetch --official: refuse an archive that extracts to more than SIZE "
                             "(default 20G; e.g. 50G)")
    models.add_argument("--max-compression-ratio", type=positive_ratio, metavar="N",
                        help="import, fetch --official: refuse an archive whose content is more than N times its "
                             "own size, a decompression bomb (default 200)")
    models.set_defaults(func=cmd_models)


def _add_doctor(sub) -> None:
    """``r3dp doctor [--selftest]``."""
    doctor = sub.add_parser("doctor", help="check the environment; --selftest runs the whole job on stand-in models")
    doctor.add_argument("--models-dir", help="models folder to check")
    doctor.add_argument("--selftest", action="store_true",
                        help="run `generate` on the example photo and speech with stand-in models in a temporary "
                             "folder: landmarks, fitting, audio, rendering and the mp4 with sound, nothing downloaded")
    doctor.add_argument("--device", default="auto", help="device for the self-test (auto, cpu, cuda, mps)")
    doctor.add_argument("--seconds", type=float,
                        help="seconds of the example speech the self-test uses (default 1.2; 25 frames per second)")
    doctor.add_argument("--out", help="the self-test's mp4 (default: r3dp-selftest.mp4 in the temporary folder)")
    doctor.set_defaults(func=cmd_doctor)


def _add_batch(sub) -> None:
    """``r3dp batch JOBS``: its own options are the batch table's (``pipeline/options.py``); its rows' are
    generate's."""
    from .pipeline.options import BATCH, add_arguments

    batch = sub.add_parser("batch", help="render every job of a CSV/JSONL list (or train a persona per row), locally "
                                         "or on a Ray cluster",
                           description="Render many clips: JOBS is a CSV (header row) or JSONL file whose columns "
                                       "are generate's options with underscores (image, audio, out, seed, ...; an "
                                       "empty cell means the default). Every row is checked first; bad rows are "
                                       "reported with their line and the others run. DIR/results.jsonl records "
                                       "every row; outputs that already exist are skipped. With --personalise the "
                                       "columns are personalise's options (video, out, preset, steps, ...) and each "
                                       "row trains a persona (complete ones skipped, others resumed).")
    add_arguments(batch, BATCH)
    batch.set_defaults(func=cmd_batch)


def _add_personalise(sub) -> None:
    """``r3dp personalise --video V --out DIR``: a person's Talk3D persona, trained from their video."""
    from .talk3d.personalise.command import add_personalise_arguments, cmd_personalise

    personalise = sub.add_parser(
        "personalise", help="train a persona (a person's own Talk3D model) from a few minutes of their video",
        description="Prepare the video (25 fps, MediaPipe landmarks, aligned 512² crops, masks, blink, head tokens, "
                    "wav2vec2 audio features), personalise the EG3D prior (VIVE3D), train the audio-guided U-Net and "
                    "fine-tune the super-resolution, then score the held-out last 1/11 of the video. Checkpoints "
                    "are saved every --save-every steps and on Ctrl-C; running the command again resumes.")
    add_personalise_arguments(personalise)
    personalise.set_defaults(func=cmd_personalise)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r3dp", description="Real3D-Portrait talking portraits (r3dp).")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert, _add_generate, _add_models, _add_doctor, _add_batch, _add_personalise):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging would drown the CLI's output
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
