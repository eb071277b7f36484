"""``r3dp generate --persona``: a persona (``r3dp personalise``) animated by new speech, streamed into an mp4.

The steps are :mod:`r3dp_core.talk3d.animate`'s; this module adds what the front ends share: the Head Pose recipe
resolved for a persona (:func:`persona_head_pose`), the checks of a persona job before anything is loaded
(:func:`validate_persona`, which ``admission.admit`` runs for a request with ``persona``) and the job itself
(:func:`run_persona_job`). A persona job needs only the persona folder and Talk3D's wav2vec2 (no BFM, HuBERT,
landmarker or video model).

Modes: ``--output crop`` writes the aligned S² face (512²; the tiny architecture 64²) at any camera;
``--output video`` pastes it back into the persona's training video, which replays that video's cameras and head
tokens (``--camera replay``, or ``auto``; any other camera is refused there). The head-rotation tokens follow the
camera: the training video's at ``replay``, their mean otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import InputError
from .request import GenerateRequest

#: Output modes of a persona job.
PERSONA_OUTPUTS = ("crop", "video")
#: Head-pose modes a persona takes (``auto`` is ``replay``); ``driving`` needs a 3DMM fit of a pose video.
PERSONA_CAMERAS = ("replay", "auto", "static", "orbit", "keyframes", "natural")
#: One-shot inputs a persona job cannot use, with what each is for.
ONE_SHOT_INPUTS = {"pose_video": "a driving head pose (fitted with the 3DMM)",
                   "expression_video": "driving expressions (fitted with the 3DMM)",
                   "motion": "a motion file of 3DMM expressions", "bg": "the photo's background",
                   "head_mask": "the photo's head mask", "body_mask": "the photo's body mask"}


def persona_camera_mode(camera: str) -> str:
    """The camera a persona takes for the ``--camera`` mode: ``auto`` → ``replay`` (the person's own recorded head
    motion); the others as they are."""
    return "replay" if camera == "auto" else camera


def persona_head_pose(recipe, persona, drive):
    """A Head Pose recipe (:class:`~r3dp_core.pipeline.pose.PoseRecipe`) resolved for a persona's drive: a
    :class:`~r3dp_core.geometry.camera.HeadPose` of N frames for
    :func:`~r3dp_core.talk3d.animate.persona_cameras`, or ``"replay"`` for the ``replay``/``auto`` modes.

    The "photo's pose" of the one-shot modes is the persona's resting camera (the mean of its training cameras,
    :func:`~r3dp_core.talk3d.animate.neutral_yaw_pitch`): ``static`` holds it, ``orbit``/``keyframes`` are offsets
    from it in degrees (yaw +15° turns the head as the one-shot path does), ``natural`` moves about it following
    the speech's activity (seeded).

    Raises:
        InputError: ``driving`` (a persona has no 3DMM fit of a pose video).
    """
    from ..talk3d.animate import FPS, neutral_yaw_pitch, yaw_pitch_to_euler
    from .pose import resolve_pose

    mode = persona_camera_mode(recipe.mode)
    if mode == "replay":
        return "replay"
    if mode == "driving":
        raise InputError("A persona cannot follow a driving head pose (that needs a 3DMM fit of a pose video); use "
                         "--camera replay (the training video's head motion), static, orbit, keyframes or natural.")
    euler = yaw_pitch_to_euler(neutral_yaw_pitch(persona))
    avatar = SimpleNamespace(euler=euler, trans=torch.zeros(1, 3), face_index=None)
    count = drive.num_frames
    motion = SimpleNamespace(num_frames=count, fps=float(FPS), audio=drive.sound, duration_s=count / FPS,
                             euler=None, trans=None)
    return resolve_pose(recipe, avatar, motion)


# --- admission ------------------------------------------------------------------------------------------------------

@dataclass
class PersonaInputs:
    """A persona job's checked inputs: its ``persona.json``, its training frames M, the speech (a
    :class:`~r3dp_core.audio.io.Sound`) and its N output frames, the source video (``--output video``), notes."""

    info: dict[str, Any]
    training_frames: int
    audio: Any
    frames: int
    video: Path | None = None
    notes: list[str] = field(default_factory=list)


def _refuse_one_shot_options(request: GenerateRequest) -> list[str]:
    """Refuse the photo-only inputs; list the photo-only settings changed from their defaults (ignored)."""
    from .options import GENERATE

    for name, what in ONE_SHOT_INPUTS.items():
        if getattr(request, name) is not None:
            raise InputError(f"--{name.replace('_', '-')} is {what}, which a persona does not use: a persona is "
                             "driven by --audio alone. Drop it, or animate a photo with --image.")
    if request.debug_panels:
        raise InputError("--debug-panels shows the photo pipeline's stages; a persona has none. Drop it.")
    ignored = [GENERATE[name].flag for name in ("mouth_amp", "temperature", "face", "min_face_area", "head_threshold")
               if getattr(request, name) != GENERATE[name].default]
    return [f"{', '.join(ignored)} only apply to a photo and are ignored for a persona"] if ignored else []


def validate_persona(request: GenerateRequest) -> PersonaInputs:
    """Check a persona job before loading anything: the options, the persona folder (``persona.json``, its files,
    its tracks), the speech, the output path and, for ``--output video``, the source video (by its SHA-256).

    Raises:
        InputError: one paragraph per problem, with what to do.
    """
    from ..audio.io import load_audio, load_sound
    from ..talk3d.animate import frame_count
    from .validation import MIN_AUDIO_SECONDS, check_output_path

    if request.image is not None:
        raise InputError("--persona and --image are exclusive: --image animates a photo, --persona a trained "
                         "persona. Give one of them.")
    notes = _refuse_one_shot_options(request)
    if request.output not in PERSONA_OUTPUTS:
        raise InputError(f"--output {request.output} is not a persona output: use crop (the aligned face) or video "
                         "(pasted back into the persona's training video).")
    camera = persona_camera_mode(request.camera)
    if camera not in PERSONA_CAMERAS:
        raise InputError(f"--camera {request.camera}: a persona cannot follow a driving head pose (that needs a 3DMM "
                         "fit of a pose video); use replay (the training video's head motion), static, orbit, "
                         "keyframes or natural.")
    if request.output == "video" and camera != "replay":
        raise InputError(f"--output video pastes the face back into the persona's training video, whose neck, hair "
                         f"and background were filmed at that video's cameras; --camera {request.camera} would not "
                         "line up with them. Use --camera replay (or auto) with --output video, or --output crop for "
                         "other cameras.")
    request.pose_recipe()   # checks keyframes, strength and smoothing
    if request.audio is None:
        raise InputError("--persona needs --audio: the new speech the persona says.")
    check_output_path(request.out)
    info, count, has_similarity = _read_persona_description(Path(request.persona))
    sound = load_sound(request.audio)
    seconds = load_audio(sound).duration_s
    if seconds < MIN_AUDIO_SECONDS:
        raise InputError(f"{request.audio}: the clip is only {seconds:.2f} s long; give at least "
                         f"{MIN_AUDIO_SECONDS} s of speech.")
    video = None
    if request.output == "video":
        if not has_similarity:
            raise InputError(f"persona {request.persona} has no similarity track (where the face sits in each video "
                             "frame), so it cannot be pasted back; use --output crop.")
        video = _checked_source_video(Path(request.persona), info, request.video)
    elif request.video is not None:
        notes.append(f"--video {request.video} is used only with --output video; ignored")
    return PersonaInputs(info, count, sound, frame_count(seconds), video, notes)


def _read_persona_description(folder: Path) -> tuple[dict[str, Any], int, bool]:
    """``(persona.json, training frames, has a similarity track)``, reading only the JSON and the tracks' header."""
    from safetensors import SafetensorError, safe_open

    from ..errors import ModelFileError
    from ..talk3d.persona import FILES, read_persona_info

    if not folder.is_dir():
        raise InputError(f"{folder}: the persona folder does not exist. Give a folder made by `r3dp personalise` "
                         "(it holds persona.json).")
    info = read_persona_info(folder)
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ModelFileError(f"persona {folder} lacks {', '.join(missing)}; it is incomplete. Run `r3dp personalise` "
                             "for it again (it resumes).")
    try:
        with safe_open(str(folder / FILES["tracks"]), "pt") as handle:
            keys = set(handle.keys())
            count = int(handle.get_slice("yaw_pitch").get_shape()[0]) if "yaw_pitch" in keys else 0
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(f"persona {folder}: {FILES['tracks']} cannot be read ({exc}).") from None
    if count < 1:
        raise ModelFileError(f"persona {folder}: {FILES['tracks']} has no yaw_pitch track (the training cameras).")
    return info, count, "similarity" in keys


def _checked_source_video(folder: Path, info: dict[str, Any], given: Path | None) -> Path:
    """The training video (``given`` or the stored path), checked by hash."""
    from ..talk3d.animate import find_source_video

    return find_source_video(info, given, name=str(info.get("name") or folder.name))


def describe_persona(request: GenerateRequest, inputs: PersonaInputs) -> str:
    """What a persona job would do, one line per input (``r3dp generate --persona --dry-run`` prints this)."""
    info = inputs.info
    size = 64 if info.get("architecture") == "tiny" else 512
    seconds = inputs.audio.at_16k().duration_s
    lines = [f"persona    {request.persona}: {info.get('name', Path(request.persona).name)} "
             f"({info.get('architecture', 'full')} architecture, {inputs.training_frames} training frames at 25 fps)",
             f"audio      {request.audio}: {seconds:.2f} s -> {inputs.frames} frames at 25 fps"]
    camera = persona_camera_mode(request.camera)
    tokens = "replayed" if camera == "replay" else "the training mean"
    blink = request.blink_source if request.blink else "none"
    replayed = " (the training video's, forward then backward)" if camera == "replay" else ""
    lines.append(f"camera     {camera}{replayed}; head tokens {tokens}; blink {blink}")
    if request.output == "video":
        lines.append(f"source     {inputs.video} (hash checked)")
        what = "pasted back into the training video's frames"
    else:
        what = f"the aligned {size}x{size} face"
    lines.append(f"output     {request.out} (H.264, {what}, audio muxed as AAC)")
    lines += [f"note       {note}" for note in inputs.notes]
    return "\n".join(lines)


# --- the job --------------------------------------------------------------------------------------------------------

def load_wav2vec2(models_dir: Path, device: torch.device):
    """Talk3D's wav2vec2 on ``device`` and its streaming contexts: ``(model, StreamConfig)``.

    Raises:
        ModelFileError: the model is not installed (with how to get it).
    """
    from ..talk3d.audio_features import find_wav2vec2, load_wav2vec2_folder, stream_config_for

    folder = find_wav2vec2(models_dir)
    return load_wav2vec2_folder(folder).to(device), stream_config_for(folder)


def run_persona_job(request: GenerateRequest, inputs: PersonaInputs, models_dir: Path, *, progress=None, log=print,
                    should_stop=None, wav2vec2=None, persona=None):
    """Animate the persona with the request's speech and write the mp4 (streamed, atomic, speech as AAC).

    Args:
        inputs: :func:`validate_persona`'s.
        models_dir: where wav2vec2 is found (unless ``wav2vec2`` is given).
        progress: ``progress(done, total)`` after every chunk; should_stop: called before each (raises to stop).
        wav2vec2: an already loaded ``(model, StreamConfig)`` (a batch worker's), else it is loaded here and freed
            after the audio features.
        persona: an already loaded :class:`~r3dp_core.talk3d.animate.PersonaModel`, else the request's is loaded.

    Returns:
        :class:`~r3dp_core.pipeline.generate.GenerateSummary`.
    """
    from ..device import Precision, peak_memory_allocated_mb, peak_resident_mb, release_cached_memory
    from ..host import Host
    from ..talk3d.animate import (
        drive_from_speech,
        load_persona_model,
        paste_into_source,
        persona_cameras,
        persona_frames,
    )
    from ..video_io import VideoWriter
    from .types import GenerateSummary

    started = time.perf_counter()
    device = Precision.resolve(request.device, request.dtype).device
    if persona is None:
        log(f"loading persona {request.persona}")
        persona = load_persona_model(request.persona, device)
    camera = persona_camera_mode(request.camera)
    owned = wav2vec2 is None
    model, stream_config = load_wav2vec2(models_dir, device) if owned else wav2vec2
    log("speech to audio features (wav2vec2)")
    drive = drive_from_speech(persona, inputs.audio, model, blink=request.blink_source if request.blink else "none",
                              head_tokens="replay" if camera == "replay" else "neutral", seed=request.seed,
                              stream_config=stream_config)
    if owned:
        del model
        release_cached_memory(device)
    yaw_pitch = persona_cameras(persona, drive, persona_head_pose(request.pose_recipe(), persona, drive))
    host = Host(progress=(lambda done, total, _: progress(done, total)) if progress is not None else None,
                should_stop=should_stop)
    frames = persona_frames(persona, drive, yaw_pitch, seed=request.seed, chunk=request.chunk_size, host=host)
    if request.output == "video":
        frames = paste_into_source(persona, drive, frames, inputs.video)
    log(f"rendering {drive.num_frames} frames on {device}")
    render_start = time.perf_counter()
    try:
        with VideoWriter(request.out, fps=drive.fps, audio=drive.sound) as writer:
            for chunk in frames:
                writer.write(chunk)
    finally:
        release_cached_memory(device)
    render_seconds = time.perf_counter() - render_start
    log(f"total {time.perf_counter() - started:.1f} s")
    return GenerateSummary(Path(request.out), drive.num_frames, render_seconds, peak_resident_mb(),
                           peak_memory_allocated_mb(device))
