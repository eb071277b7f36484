"""Checking every input of a job before any model is loaded (``r3dp generate --dry-run`` stops here).

Only the face landmarker is needed: the portrait must contain a usable face, and a driving video must show
one in most of its frames. Odd but valid inputs are accepted and normalised, and what was done is listed in
``ValidatedInputs.notes``; every problem is an ``InputError`` whose one-paragraph message starts with the
file, says what is wrong and what to do. Validation stays cheap (a 10-minute clip takes well under a
second): files are decoded once, and a driving video is checked on :data:`VIDEO_SAMPLE_FRAMES` frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults, model_files
from ..audio.energy import SILENCE_DBFS
from ..defaults import FRAME_SIZE
from ..errors import InputError
from ..geometry.framing import MAX_PHOTO_SIDE
from .inputs import load_image, read_image
from .options import GENERATE, OUTPUT_MODES
from .pose import POSE_MODES
from .request import GenerateRequest, check_subject

#: Shortest voice clip accepted (5 motion frames).
MIN_AUDIO_SECONDS = 0.2
#: Frames of a driving video checked for a face (spread over its length).
VIDEO_SAMPLE_FRAMES = 16


@dataclass
class ValidatedInputs:
    """The decoded inputs of a job. image/background: ``[H,W,3]`` RGB uint8; audio: the ``--audio`` clip as a
    ``Sound`` (decoded once: what is muxed, with its 16 kHz view, already converted), or None;
    faces: faces seen in the portrait, described one per line in face_lines (``framing.describe_faces``);
    warnings: what may not be what the user meant (an ambiguous 'largest', a tiny face); notes: what was
    normalised or noticed."""

    image: np.ndarray
    audio: object | None
    background: np.ndarray | None
    face_found_in: str
    faces: int = 1
    video_frames: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    motion: object | None = None             # the --motion file's Motion, at 25 fps
    face_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(request: GenerateRequest, models_dir: Path) -> ValidatedInputs:
    """Read and check every input; needs only the face landmarker (no network is loaded)."""
    from ..audio.io import load_audio, load_sound, loudest_dbfs

    _check_options(request)
    portrait = read_image(request.image, remove_bars=request.head_mask is None)
    notes = [f"portrait: {note}" for note in portrait.notes]
    audio = sound = None
    if request.audio is not None:
        sound = load_sound(request.audio)
        audio = load_audio(sound)  # the 16 kHz view, kept by the sound: the checks here read it, and so do the stages
        if audio.duration_s < MIN_AUDIO_SECONDS:
            raise InputError(f"{request.audio}: the clip is only {audio.duration_s:.2f} s long; give at least "
                             f"{MIN_AUDIO_SECONDS} s of speech.")
        notes += _silence_notes(request.audio, audio, loudest_dbfs)
        if request.expression_video is not None:
            notes.append(f"audio: {request.audio} is the sound of the video; the expressions come from "
                         "--expression-video")
        if request.motion is not None:
            notes.append(f"audio: {request.audio} is the sound of the clip; the expressions come from --motion")
    motion = _read_motion(request.motion, notes) if request.motion is not None else None
    background = load_image(request.bg) if request.bg is not None else None
    landmarker = model_files.require("face_landmarker", models_dir)
    face_lines, face_warnings = _check_faces(request.image, portrait.pixels, landmarker, request.face)
    faces = len(face_lines)
    if faces > 1:
        which = "the largest" if request.face == "largest" else f"number {request.face} from the left"
        notes.append(f"portrait: {faces} faces found; {which} is animated")
    video_frames = {}
    for flag, video in (("--expression-video", request.expression_video), ("--pose-video", request.pose_video)):
        if video is not None:
            video_frames[flag] = _check_video(video, landmarker, notes)
    if request.pose_video is not None:
        notes += _length_notes(request, audio, video_frames, motion)
    return ValidatedInputs(image=portrait.pixels, audio=sound, background=background,
                           face_found_in=str(request.image), faces=faces, video_frames=video_frames, notes=notes,
                           motion=motion, face_lines=face_lines, warnings=face_warnings)


def _read_motion(path: Path, notes: list[str]):
    """The ``--motion`` file at 25 fps (the clip's frame rate), with a note of what it drives."""
    from .motion_files import load_motion_file, motion_at_25_fps

    motion = load_motion_file(path)
    if abs(motion.fps - defaults.MOTION_FPS) > 1e-3:
        notes.append(f"motion: {path} is at {motion.fps:g} fps; resampled to {defaults.MOTION_FPS:g} fps")
        motion = motion_at_25_fps(motion)
    pose = "expressions and head pose" if motion.euler is not None else "expressions only (no head pose)"
    notes.append(f"motion: {path}: {motion.num_frames} frames at {defaults.MOTION_FPS:g} fps, {pose}")
    return motion


#: Camera modes that do not follow a pose video: fitting one for them would be wasted and silently ignored.
CAMERAS_WITHOUT_POSE_VIDEO = tuple(mode for mode in POSE_MODES if mode not in ("driving", "auto"))


#: The options whose accepted range (in the option table) the head-pose recipe checks, with its own messages.
RANGES_CHECKED_BY_THE_RECIPE = ("pose_strength", "pose_smoothing")


def _check_ranges(request: GenerateRequest, *names: str) -> None:
    """Refuse the first of the options ``names`` whose value is outside the range its table entry accepts."""
    for name in names:
        message = GENERATE[name].range_error(getattr(request, name))
        if message is not None:
            raise InputError(message)


def _check_options(request: GenerateRequest) -> None:
    check_subject(request)
    if request.persona is not None:
        raise InputError("a persona job is checked by pipeline.persona.validate_persona, not as a photo job.")
    if request.output == "video":
        raise InputError("--output video pastes a persona back into its training video; with --image use crop (the "
                         "animated square) or photo (pasted back into the photo), or give --persona.")
    if request.camera == "replay":
        raise InputError("--camera replay replays a persona's training video; a photo has none. Use auto, static, "
                         "driving, orbit, keyframes or natural with --image.")
    if request.audio is None and request.expression_video is None and request.motion is None:
        raise InputError("Give a voice clip (--audio), a driving video (--expression-video) or a motion file "
                         "(--motion).")
    if request.motion is not None and request.expression_video is not None:
        raise InputError("--motion and --expression-video both drive the face; give one of them.")
    if request.pose_video is not None and request.camera in CAMERAS_WITHOUT_POSE_VIDEO:
        raise InputError(f"--pose-video is followed only by --camera driving (or auto); --camera {request.camera} "
                         "keeps its own head path and would ignore the video. Drop --pose-video, or use "
                         "--camera driving to follow it.")
    _check_ranges(request, "head_threshold")
    request.pose_recipe()  # checks the mode, keyframes, strength and smoothing window
    _check_ranges(request, "mouth_amp", "mouth_scale")
    if request.output not in OUTPUT_MODES:
        raise InputError(f"Unknown output {request.output!r}: use one of {', '.join(OUTPUT_MODES)}.")
    if request.debug_panels and request.output != "crop":
        raise InputError(f"--debug-panels shows the {FRAME_SIZE}x{FRAME_SIZE} square stage by stage; use it with "
                         "--output crop.")
    _check_ranges(request, "min_face_area")
    if request.face != "largest" and not (isinstance(request.face, int) and request.face >= 0):
        raise InputError(f"--face {request.face!r}: give 'largest' or an index 0, 1, ... (faces left to right).")
    _check_ranges(request, "temperature")
    check_output_path(request.out)


def check_output_path(out: Path | None) -> None:
    """The output is a writable ``.mp4`` path (its folder may not exist yet).

    Raises:
        InputError: no output, another suffix, a folder, or nowhere writable.
    """
    if out is None:
        raise InputError("Give the output file with --out (an .mp4 path).")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"{out}: the output must end in .mp4.")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give the path of the .mp4 file to write.")
    folder = out.parent.resolve()
    while not folder.exists():  # VideoWriter creates missing folders: the first existing one must be writable
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot be written ({folder} is not a writable folder). Choose another output "
                         "path.")


def _check_faces(path: Path, image: np.ndarray, landmarker: Path, face: str | int) -> tuple[list[str], list[str]]:
    """The faces the pipeline finds in the portrait (at its own aspect ratio), one line each, and the warnings
    about the choice; the requested face must be among them (``'largest'``: among those of at least 1 %)."""
    from ..geometry.framing import choose_face, describe_faces, face_warnings, find_faces

    faces = find_faces(image, landmarker)
    try:
        choose_face(faces, face, photo_size=image.shape[:2])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return describe_faces(faces, *image.shape[:2]), face_warnings(faces, face, image.shape[:2])


def _silence_notes(path: Path, audio, loudest_dbfs) -> list[str]:
    first = loudest_dbfs(audio.pcm[0])
    if first >= SILENCE_DBFS:
        return []
    others = max((loudest_dbfs(channel) for channel in audio.pcm[1:]), default=float("-inf"))
    if others >= SILENCE_DBFS:
        return [f"audio: the first (left) channel of {path}, the one the speech model reads, is silent while another "
                "channel is not: the mouth will stay closed. Put the voice on the left channel or mix it to mono"]
    return [f"audio: no speech detected in {path} (silent, loudest {first:.0f} dBFS): the mouth will stay closed"]


def _check_video(path: Path, landmarker: Path, notes: list[str]) -> int:
    """Decode a driving video once and look for a face on a sample of its frames; returns its 25 fps length.

    The sample follows the rule ``driving.video_motion`` applies to every frame: refused when no checked frame,
    or at most half of them, shows a face.
    """
    from ..geometry.landmarks import detect_image_points
    from ..video_io import sample_video_frames
    from .driving import MAX_FACELESS_FRACTION, resample_index

    info, frames = sample_video_frames(path, VIDEO_SAMPLE_FRAMES)
    if not info["frames"]:
        what = "the file has no video stream" if info["width"] is None else "the video has no decodable frames"
        raise InputError(f"{path}: {what}. Give a video (mp4, mov, webm, avi) that shows a face.")
    _, found = detect_image_points(frames, landmarker)
    faceless = int((~found).sum())
    if faceless == found.size:
        raise InputError(f"{path}: no face found in the video ({found.size} frames checked across its length). Use a "
                         "video in which one face is clearly visible, roughly frontal.")
    if faceless > MAX_FACELESS_FRACTION * found.size:
        raise InputError(f"{path}: no face found in {faceless} of {found.size} frames checked across the video (more "
                         f"than {MAX_FACELESS_FRACTION:.0%}). Trim it to the part where the face is visible.")
    fps = info["fps"] or defaults.MOTION_FPS
    length = int(resample_index(info["frames"], fps).shape[0])
    resampled = f" → {length} frames at 25 fps" if abs(fps - defaults.MOTION_FPS) > 1e-3 else ""
    faceless_note = (f"; no face in {faceless} of {found.size} checked frames (those frames reuse the previous face)"
                     if faceless else "")
    notes.append(f"video: {path}: {info['frames']} frames at {fps:.2f} fps ({info['frames'] / fps:.2f} s, "
                 f"{info['width']}x{info['height']}){resampled}{faceless_note}")
    return length


def _length_notes(request: GenerateRequest, audio, video_frames: dict[str, int], motion=None) -> list[str]:
    pose = video_frames["--pose-video"]
    if request.expression_video is not None:
        clip = video_frames["--expression-video"]
    elif motion is not None:
        clip = motion.num_frames
    elif audio is not None:
        clip = max(1, int(np.floor(audio.duration_s * defaults.MOTION_FPS + 0.5)))
    else:
        return []
    if pose < clip:
        return [f"video: the pose video ({pose} frames) is shorter than the clip ({clip} frames): it is played "
                "forward and backward (official mirror loop)"]
    if pose > clip:
        return [f"video: the pose video ({pose} frames) is longer than the clip ({clip} frames): its first {clip} "
                "frames are used"]
    return []


def describe(request: GenerateRequest, inputs: ValidatedInputs) -> str:
    """What the job would do, one line per input, then the notes (``r3dp generate --dry-run`` prints this)."""
    which = "the largest" if request.face == "largest" else f"number {request.face} from the left"
    faces = f"{inputs.faces} faces found, {which} is used" if inputs.faces > 1 else "face found"
    lines = [f"portrait   {request.image} ({inputs.image.shape[1]}x{inputs.image.shape[0]}), {faces}"]
    lines += [f"           {line}" for line in inputs.face_lines]
    if inputs.audio is not None:
        audio = inputs.audio.at_16k()
        frames = max(1, int(np.floor(audio.duration_s * defaults.MOTION_FPS + 0.5)))
        channels = {1: "mono", 2: "stereo"}.get(audio.num_channels, f"{audio.num_channels} channels")
        lines.append(f"audio      {request.audio}: {audio.duration_s:.2f} s, {audio.source_rate} Hz {channels} -> "
                     f"{frames} frames at 25 fps")
    for flag, frames in inputs.video_frames.items():
        video = request.expression_video if flag == "--expression-video" else request.pose_video
        lines.append(f"video      {flag} {video}: {frames} frames at 25 fps")
    if inputs.motion is not None:
        lines.append(f"motion     --motion {request.motion}: {inputs.motion.num_frames} frames at 25 fps")
    smoothing = f"smoothed over {request.pose_smoothing} frames" if request.pose_smoothing > 1 else "unsmoothed"
    lines.append(f"camera     {request.camera} (strength {request.pose_strength:g}, {smoothing}"
                 f"{', natural motion on top' if request.natural_on_top else ''}); "
                 f"background {'from ' + str(request.bg) if request.bg else 'extracted'}")
    sound = ("audio muxed" if inputs.audio is not None
             else "the expression video's own sound, if it has any" if request.expression_video is not None
             else "the motion file's own sound, if it has any" if request.motion is not None else "")
    size = (f"{FRAME_SIZE}x{FRAME_SIZE}" if request.output == "crop"
            else f"the photo's size, longest side at most {MAX_PHOTO_SIDE}")
    lines.append(f"output     {request.out} (H.264 {size}{', ' + sound if sound else ''})")
    lines += [f"note       {note}" for note in inputs.notes]
    lines += [f"warning    {warning}" for warning in inputs.warnings]
    return "\n".join(lines)
