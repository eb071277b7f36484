"""``r3dp personalise``: one talking video of one person → a persona folder, resumable.

The folder holds the persona (``persona.json`` + safetensors, :mod:`r3dp_core.talk3d.persona`) and the work that
makes it, each stage cached so a re-run continues where the last one stopped::

    PERSONA_DIR/
      personalise.json        what this folder is being trained from (video hash, span, face, preset)
      prepared/               aligned crops, masks, tracks, audio features (:mod:`.prepare`)
      phase_a.safetensors     the personalised generator, w_person, per-frame yaw/pitch (phase A, once)
      training/               checkpoint.safetensors + checkpoint.json, losses.jsonl (phase B)
      previews/step_NNNNNN.png held-out frames: targets above, renders below
      metrics.json            the held-out evaluation
      persona.json, generator/talk3d/identity/tracks.safetensors   the persona (written at the end)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import model_files
from ...checkpoint import load_into
from ...errors import InputError, ModelFileError
from ...host import HERE, Host
from ..eg3d_generator import TriPlaneGenerator
from ..model import Talk3DNetworks
from ..persona import Persona, write_persona_files
from .prepare import crop_images
from .presets import PersonalisePreset, get_preset
from .training import (
    TrainingSetup,
    TrainingState,
    finetune_superresolution,
    load_checkpoint,
    render_frames,
    save_checkpoint,
    train_unet,
)

RUN_FILE = "personalise.json"
PHASE_A_FILE = "phase_a.safetensors"
#: What r3dp's recipe does differently from the official code, recorded in every persona it trains.
DEVIATIONS = [
    "landmarks: MediaPipe face landmarker instead of FAN (six MediaPipe points stand for the official 68-point "
    "indices 30, 8, 45, 36, 64, 60)",
    "masks: MediaPipe selfie segmenter + lip polygon instead of BiSeNet (landmark-only masks without the segmenter)",
    "blink: MediaPipe eye-blink blend shapes mapped to the AU45 range instead of OpenFace AU45_r",
    "sync-loss mouth boxes from landmarks instead of Wav2Lip's S3FD detector",
    "stage B2 fine-tunes EG3D's own super-resolution; the official GFPGAN stage is not built",
    "one process, no DDP: the batch is the official per-GPU batch",
]
CONSENT_NOTE = (
    "A persona is a person's likeness: train one only from video of someone who agreed to it, and label what you "
    "make with it as synthetic. The EG3D and Talk3D weights are licensed for non-commercial research only "
    "(NVIDIA Source Code License, CC BY-NC 4.0); the Wav2Lip lip-sync expert is research-only.")


@dataclass
class PersonaliseOptions:
    """Every option of ``r3dp personalise`` (see the CLI's help for each)."""

    video: str | Path
    out: str | Path
    preset: str = "full"
    steps: int | None = None          #: total U-Net steps (phase B1); the preset's when None
    save_every: int | None = None     #: checkpoint + preview every this-many U-Net steps; the preset's when None
    start: float | None = None        #: seconds into the video
    end: float | None = None
    face: str | int | None = None    #: None: refuse a video with several faces (say which to take)
    models_dir: str | Path | None = None
    device: str = "auto"
    dtype: str = "float32"
    restart: bool = False
    anchor_frames: list[int] | None = None
    seed: int = 0
    preset_overrides: dict[str, Any] | None = None   #: preset fields to change (field=value)


@dataclass
class PersonaliseResult:
    folder: Path
    step: int
    resumed_from: int | None
    metrics: dict[str, Any]
    terms: list[str]
    notes: list[str] = field(default_factory=list)


Say = Callable[[str], None]
StepReport = Callable[[str, int, int, dict[str, float]], None]


# --- the prior ---------------------------------------------------------------------------------------------------

def load_prior_generator(models_dir: Path, preset: PersonalisePreset) -> tuple[TriPlaneGenerator, Path]:
    """The EG3D prior of the ``eg3d_ffhq`` slot for ``preset``: the official pickle (or its converted
    safetensors) for ``full``/``fast``, the stand-in tiny generator (``standins.write_talk3d_models``) for
    ``tiny``.

    Raises:
        ModelFileError: no generator of the preset's size in the slot, naming the file and where it comes from.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..official_files import read_eg3d_generator

    spec = model_files.BY_KEY["eg3d_ffhq"]
    wanted = "tiny" if preset.name == "tiny" else "full"
    seen = []
    for path in spec.candidates(models_dir):
        if not path.exists():
            continue
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                kind = (handle.metadata() or {}).get("config", "full")
            if kind != wanted:
                seen.append(f"{path} ({kind})")
                continue
            state = load_file(str(path))
        else:
            if wanted != "full":
                seen.append(f"{path} (full)")
                continue
            state = read_eg3d_generator(path)[0].state_dict
        generator = TriPlaneGenerator(preset.generator)
        load_into(generator, state, source=str(path))
        return generator, path
    if wanted == "tiny":
        raise ModelFileError(
            f"The tiny preset trains the stand-in tiny generator, and {models_dir} has none"
            + (f" (it has {', '.join(seen)})" if seen else "")
            + ". Write the stand-ins with `python -c \"from r3dp_core.standins import write_talk3d_models; "
              f"write_talk3d_models('{models_dir}')\"`, or use --preset fast/full with the real EG3D generator.")
    raise ModelFileError(spec.missing_message(models_dir)
                         + (f" (The folder has only {', '.join(seen)}, which the {preset.name} preset cannot use.)"
                            if seen else ""))


# --- the run record ------------------------------------------------------------------------------------------------

def _run_identity(options: PersonaliseOptions, sha256: str) -> dict[str, Any]:
    return {"video_sha256": sha256, "preset": options.preset, "start": options.start, "end": options.end,
            "face": options.face}


def _check_folder(folder: Path, identity: dict[str, Any], restart: bool, say: Say) -> None:
    """Refuse a folder trained from another video, span, face or preset unless ``restart`` (then clear it)."""
    record = folder / RUN_FILE
    if not record.exists():
        if folder.exists() and any(folder.iterdir()) and not restart:
            raise InputError(f"{folder} is not empty and holds no personalise run ({RUN_FILE}). Choose an empty or "
                             "new folder for the persona, or pass --restart to clear it.")
        return
    recorded = json.loads(record.read_text())
    differences = [f"{key} {recorded.get(key)!r} → {value!r}" for key, value in identity.items()
                   if recorded.get(key) != value]
    if not differences:
        return
    if not restart:
        raise InputError(f"{folder} holds a persona trained from other input ({'; '.join(differences)}). Pass "
                         "--restart to discard that training and start again, or choose another folder.")
    say(f"restart: discarding the previous training in {folder} ({'; '.join(differences)})")
    _clear(folder)


def _clear(folder: Path) -> None:
    """Remove what personalise writes into ``folder`` (nothing else)."""
    for name in ("prepared", "training", "previews"):
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in (RUN_FILE, PHASE_A_FILE, "metrics.json", "persona.json", "generator.safetensors",
                 "talk3d.safetensors", "identity.safetensors", "tracks.safetensors"):
        (folder / name).unlink(missing_ok=True)


# --- phase A cache ---------------------------------------------------------------------------------------------------

def _save_phase_a(folder: Path, generator: TriPlaneGenerator, result) -> None:
    from ...checkpoint import save_safetensors

    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    tensors.update(w_person=result.w_person, yaw_pitch=result.yaw_pitch)
    save_safetensors(tensors, folder / PHASE_A_FILE,
                     {"anchors": json.dumps(result.anchors), "losses": json.dumps(result.losses),
                      "notes": json.dumps(result.notes)})


def _load_phase_a(folder: Path, generator: TriPlaneGenerator) -> dict[str, Any] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / PHASE_A_FILE
    if not path.exists():
        return None
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    generator.load_state_dict({k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")})
    return {"w_person": tensors["w_person"], "yaw_pitch": tensors["yaw_pitch"],
            "anchors": json.loads(metadata.get("anchors", "[]")), "losses": json.loads(metadata.get("losses", "{}")),
            "notes": json.loads(metadata.get("notes", "[]"))}


# --- previews ------------------------------------------------------------------------------------------------------

def write_preview(path: Path, targets: torch.Tensor, renders: torch.Tensor) -> Path:
    """A PNG strip: ``targets`` above ``renders`` (both ``[B,3,S,S]`` in [-1, 1]), written atomically."""
    import cv2

    def row(images):
        pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
        return torch.cat(list(pixels.permute(0, 2, 3, 1)), dim=1)

    strip = torch.cat([row(targets), row(renders)], dim=0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(temporary), np.ascontiguousarray(strip[..., ::-1]))
    temporary.replace(path)
    return path


# --- the run -------------------------------------------------------------------------------------------------------

def check_options(options: PersonaliseOptions) -> PersonalisePreset:
    """The checks made before anything is loaded (also ``r3dp batch --personalise``'s up-front row checks);
    returns the preset the options name.

    Raises:
        InputError: an unknown preset, steps or save_every below 1, or a video that is not a file.
    """
    try:
        preset = get_preset(options.preset, **(options.preset_overrides or {}))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if options.steps is not None and options.steps < 1:
        raise InputError(f"--steps must be at least 1, got {options.steps}.")
    if options.save_every is not None and options.save_every < 1:
        raise InputError(f"--save-every must be at least 1, got {options.save_every}.")
    if not Path(options.video).is_file():
        raise InputError(f"{options.video} is not a file. Give the talking video of the person with --video.")
    return preset


def personalise(options: PersonaliseOptions, *, host: Host = HERE, say: Say = print,
                on_step: StepReport | None = None) -> PersonaliseResult:
    """Train (or resume training) the persona of ``options.video`` into ``options.out``.

    Args:
        options: what to train and how (:class:`PersonaliseOptions`).
        host: where the models compute, progress and interrupt (:class:`~r3dp_core.host.Host`).
        say: one-line messages (notes, warnings, what was resumed).
        on_step: ``on_step(stage, done, total, losses)`` after every optimisation step of a stage
            (``"U-Net"``, ``"super-resolution"``), and as ``preparation`` and ``phase A`` advance (chunks of frames,
            frames' cameras; no losses then).

    Raises:
        InputError / ModelFileError: bad input or a missing model file, before any training.
        TrainingInterrupted: stopped by the host or Ctrl-C after saving a checkpoint.
    """
    from ...device import resolve_device
    from ..loss_networks import load_loss_networks
    from .evaluation import evaluate_heldout, heldout_frames
    from .phase_a import DEVIATIONS as PHASE_A_DEVIATIONS
    from .phase_a import PhaseAResult, run_phase_a
    from .prepare import prepare_video, video_sha256

    preset = check_options(options)
    video, folder = Path(options.video), Path(options.out)
    total_steps = options.steps or preset.unet_steps
    models_dir = model_files.default_models_dir(options.models_dir)
    device = resolve_device(options.device)

    identity = _run_identity(options, video_sha256(video))
    _check_folder(folder, identity, options.restart, say)
    generator, prior_path = load_prior_generator(models_dir, preset)
    say(CONSENT_NOTE)
    loss_networks = load_loss_networks(models_dir, device, say=say)
    generator = generator.to(device)
    prepared = prepare_video(video, folder / "prepared", image_size=preset.image_size, generator=generator,
                             start=options.start, end=options.end, face=options.face, models_dir=models_dir,
                             device=device, host=_stage_host(host, "preparation", on_step), say=say)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**identity, "video": str(video.resolve()), "prior": str(prior_path)}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=1) + "\n")

    def report(stage: str) -> Callable[[int, int, dict[str, float]], None]:
        def step(done: int, total: int, terms: dict[str, float]) -> None:
            host.report(done, total, None)
            if on_step is not None:
                on_step(stage, done, total, terms)
        return step

    phase_a = _load_phase_a(folder, generator)
    if phase_a is None:
        result: PhaseAResult = run_phase_a(generator, prepared, preset, loss_networks.lpips,
                                           anchors=options.anchor_frames, host=_stage_host(host, "phase A", on_step),
                                           say=say, seed=options.seed)
        _save_phase_a(folder, generator, result)
        phase_a = _load_phase_a(folder, generator)
    else:
        say(f"phase A: reusing the personalised generator in {folder / PHASE_A_FILE}")
    generator.requires_grad_(False).eval()
    w_person, yaw_pitch = phase_a["w_person"].to(device), phase_a["yaw_pitch"].float()
    setup = TrainingSetup(generator, w_person, yaw_pitch, prepared, preset, loss_networks,
                          dtype=torch.bfloat16 if options.dtype == "bfloat16" else torch.float32)

    torch.manual_seed(options.seed)
    networks = Talk3DNetworks(preset.networks).to(device)
    eval_frames = heldout_frames(prepared, preset.eval_frames)
    preview_frames = eval_frames[:: max(1, len(eval_frames) // preset.preview_frames)][:preset.preview_frames]

    def evaluate(use_delta: bool) -> dict[str, Any]:
        return evaluate_heldout(generator, networks, w_person, prepared, yaw_pitch, frames=eval_frames,
                                use_delta=use_delta, loss_networks=loss_networks, seed=options.seed,
                                landmarker_path=model_files.BY_KEY["face_landmarker"].find(models_dir))

    training = folder / "training"
    loaded = load_checkpoint(training)
    resumed_from = None
    if loaded is None:
        state = TrainingState(seed=options.seed, windows_per_step=preset.windows_per_step)
        state.start_metrics = evaluate(use_delta=False)
        tensors = None
    else:
        state, tensors = loaded
        resumed_from = state.step
        say(f"resumed from the checkpoint at U-Net step {state.step} (continuing to {total_steps})")

    def save_preview(current: TrainingState) -> None:
        renders = render_frames(generator, networks, w_person, prepared, yaw_pitch, preview_frames,
                                seed=options.seed)
        write_preview(folder / "previews" / f"step_{current.step:06d}.png",
                      crop_images(prepared, preview_frames, device), renders)

    started = time.perf_counter()
    if state.step < total_steps:
        state = train_unet(setup, networks, training, total_steps, state=state, tensors=tensors, host=host,
                           on_step=report("U-Net"), on_save=save_preview, save_every=options.save_every,
                           say=say)
        tensors = None
    elif tensors is not None:
        networks.load_state_dict({k[len("networks."):]: v for k, v in tensors.items() if k.startswith("networks.")})
        if state.step > total_steps:
            say(f"the checkpoint is at U-Net step {state.step}, past --steps {total_steps}: nothing to train")
    networks.eval()

    checkpoint = load_checkpoint(training)
    sr_state = {k[len("superresolution."):]: v for k, v in checkpoint[1].items()
                if k.startswith("superresolution.")} if checkpoint else {}
    if state.sr_tuned_at != state.step or not sr_state:
        sr_state = finetune_superresolution(setup, networks, seed=options.seed, host=host,
                                            on_step=report("super-resolution"))
        state.sr_tuned_at = state.step
        _resave_with_sr(training, state, networks, sr_state, options.seed, preset)
    untuned_sr = {k: v.clone() for k, v in generator.superresolution.state_dict().items()}
    generator.superresolution.load_state_dict(sr_state)

    metrics = evaluate(use_delta=True)
    without_delta = evaluate(use_delta=False)
    start = state.start_metrics
    heldout = {**metrics, "psnr_at_start": start.get("psnr"), "ssim_at_start": start.get("ssim"),
               "psnr_without_delta": without_delta.get("psnr")}
    summary = {"step": state.step, "heldout": heldout}
    (folder / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")

    persona = Persona(generator=generator.state_dict(), networks=networks.state_dict(), w_person=w_person,
                      tracks=_persona_tracks(prepared, yaw_pitch), info=_persona_info(
                          options, preset, prepared, phase_a, loss_networks.terms(), state,
                          PHASE_A_DEVIATIONS, time.perf_counter() - started))
    write_persona_files(folder, persona)
    generator.superresolution.load_state_dict(untuned_sr)
    return PersonaliseResult(folder, state.step, resumed_from, summary, loss_networks.terms(), state.deviations)


def _resave_with_sr(training: Path, state: TrainingState, networks: Talk3DNetworks, sr_state: dict,
                    seed: int, preset: PersonalisePreset) -> None:
    """Add the tuned SR to the final checkpoint (optimiser and RNG state kept as they were)."""
    loaded = load_checkpoint(training)
    optimizer = torch.optim.Adam(networks.parameters(), lr=preset.unet_lr)
    rng = torch.Generator().manual_seed(seed)
    if loaded is not None:
        from .training import _parameter_names, _restore_optimizer

        tensors = loaded[1]
        _restore_optimizer(optimizer, {k: v for k, v in tensors.items() if k.startswith("optimizer.")},
                           _parameter_names(networks, optimizer))
        rng.set_state(tensors["rng_state"])
    save_checkpoint(training, state, networks, optimizer, rng, superresolution=sr_state)


def _stage_host(host: Host, stage: str, on_step: StepReport | None) -> Host:
    """``host`` whose progress reports also reach ``on_step(stage, done, total, {})`` (stages without losses)."""
    if on_step is None:
        return host

    def progress(done: int, total: int, preview) -> None:
        host.report(done, total, preview)
        on_step(stage, done, total, {})

    return Host(place=host.place, progress=progress, should_stop=host.should_stop)


def _persona_tracks(prepared, yaw_pitch: torch.Tensor) -> dict[str, torch.Tensor]:
    tracks = {"yaw_pitch": yaw_pitch.float().cpu()}
    for name in ("head_angles", "landmarks", "blink", "similarity"):
        if name in prepared.tracks:
            tracks[name] = prepared.tracks[name].float().cpu()
    return tracks


def _persona_info(options: PersonaliseOptions, preset: PersonalisePreset, prepared, phase_a: dict,
                  terms: list[str], state: TrainingState, phase_a_deviations: list[str],
                  seconds: float) -> dict[str, Any]:
    source = dict(prepared.info.get("source", {}))
    return {
        "name": Path(options.out).name,
        "made_by": "r3dp personalise",
        "preset": preset.name,
        "architecture": "tiny" if preset.name == "tiny" else "full",
        "source_video": source,
        "split": {"train_frames": prepared.train_frames, "heldout_frames": prepared.num_frames - prepared.train_frames,
                  "rule": "first 10/11 train, last 1/11 held out"},
        "steps": {"unet": state.step, "sr_tuned_at": state.sr_tuned_at, "windows_per_step": state.windows_per_step},
        "anchor_frames": phase_a["anchors"],
        "phase_a_losses": phase_a["losses"],
        "loss_terms": ["l1", "mouth_l2", *terms],
        "deviations": DEVIATIONS + list(phase_a_deviations) + state.deviations,
        "notes": phase_a["notes"],
        "preparation": {k: v for k, v in prepared.info.items() if k != "source"},
        "training_seconds_this_run": round(seconds, 1),
        "preset_settings": {k: v for k, v in asdict(preset).items() if k not in ("generator", "networks")},
    }
