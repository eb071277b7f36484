"""``prepare_video``: a talking video → everything Talk3D's training reads (spec §1.2), cached in the persona folder.

Steps (each refusal is one :class:`~r3dp_core.errors.InputError` paragraph, raised before anything is written):

1. The file: readable, a video stream, an audio track, a span of at least :data:`MIN_SECONDS` (a quality warning
   at :data:`WARN_SECONDS` or less).
2. A quick face check on :data:`SAMPLE_COUNT` frames spread over the span (one seek each): no face at all, or
   several faces without a usable ``face`` choice, is refused here, in seconds.
3. Pass 1 over the 25 fps frames (:mod:`.video_frames`, in chunks): MediaPipe landmarks and blink blend shapes of
   the tracked face. More than :data:`MAX_MISSING` of the frames without it is refused; fewer are interpolated.
4. Tracks (:mod:`.alignment`, :mod:`.tracking`): six points smoothed and truncated, the similarity to the
   reference face, head angles, landmark tokens, blink, lips and mouth box; the audio at 16 kHz and its
   wav2vec2 windows.
5. Pass 2: aligned crops and masks (:mod:`.masks`) written as they are made into ``crops.npy`` / ``masks.npy``
   (memory-mapped), in a temporary folder beside ``folder`` that replaces it only when everything is written.

The folder (``PERSONA_DIR/prepared``) holds ``crops.npy`` ``[N,S,S,3]`` uint8, ``masks.npy`` ``[N,4,S,S]`` uint8,
``tracks.safetensors``, ``audio_features.safetensors`` (``aud_eo`` ``[N_a,16,44]``), ``audio.npy`` (float32 16 kHz)
and ``prepared.json`` (:attr:`PreparedVideo.info`). A later call with the same video bytes (SHA-256), span, image
size and face choice reuses it without decoding anything.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import model_files
from ...errors import InputError
from ...host import HERE, Host
from .alignment import (
    MEDIAPIPE_SIX,
    OFFICIAL_SIX,
    FaceDetector,
    FaceTrack,
    apply_affine,
    reference_points,
    similarity,
    six_points,
    smooth_six,
    warp_crop,
)
from .masks import LIP_IDS, MASKS, crop_masks, mouth_box
from .tracking import blink_au45, head_angles, landmark_track
from .video_frames import (
    FPS,
    SAMPLE_RATE,
    downscale,
    frames_25fps,
    load_audio_span,
    probe_span,
    sample_frames,
    video_sha256,
)

__all__ = ["MASKS", "PreparedVideo", "load_prepared", "prepare_video", "train_frame_count", "video_sha256"]

FORMAT = 1
MIN_SECONDS = 5.0
WARN_SECONDS = 60.0
MAX_MISSING = 0.10
SAMPLE_COUNT = 12
CHUNK = 32
#: The second face must be at least this fraction of the largest one's area to make ``face='largest'`` ambiguous.
AMBIGUOUS_AREA = 0.5
INFO_FILE = "prepared.json"
FILES = ("crops.npy", "masks.npy", "tracks.safetensors", "audio_features.safetensors", "audio.npy", INFO_FILE)
TRACKS = ("head_angles", "landmarks", "blink", "similarity", "mouth_box", "lips")


def train_frame_count(num_frames: int) -> int:
    """The official split: the first ``floor(N·10/11)`` frames train, the rest are held out."""
    return num_frames * 10 // 11


@dataclass
class PreparedVideo:
    """The prepared data of one video (module docstring).

    Attributes:
        folder: where it lives.
        crops: uint8 ``[N,S,S,3]`` aligned RGB crops (memory-mapped ``crops.npy``).
        masks: uint8 ``[N,4,S,S]`` 0/1, channels :data:`MASKS` = face, mouth, body, torso.
        tracks: ``head_angles`` ``[N,3]`` float32 (pitch, yaw, roll) degrees (official formula and quirk);
            ``landmarks`` ``[N,6,2]`` float32 in about [-1,1] (six raw-frame points / width, ``(·−0.5)·2``);
            ``blink`` ``[N]`` float32 AU45 in [0,2]; ``similarity`` ``[N,2,3]`` float32 frame pixels → crop pixels;
            ``mouth_box`` ``[N,4]`` float32 crop pixels x1,y1,x2,y2; ``lips`` ``[N,40,2]`` float32 crop pixels
            (MediaPipe outer then inner lip points).
        audio_features: ``[N_a,16,44]`` float32 wav2vec2 windows (official ``aud_eo``), ``N_a ≥ N``.
        audio: ``[N·640]`` float32 16 kHz mono of the span.
        info: source {path, sha256, start, end}, span, fps, frames, train_frames, frame_size, processing_scale,
            image_size, face, reference, masks, blink, interpolated_frames, six_points, notes.
    """

    folder: Path
    crops: np.ndarray
    masks: np.ndarray
    tracks: dict[str, torch.Tensor]
    audio_features: torch.Tensor
    audio: np.ndarray
    info: dict

    @property
    def num_frames(self) -> int:
        return int(self.crops.shape[0])

    @property
    def train_frames(self) -> int:
        return train_frame_count(self.num_frames)


def crop_images(prepared, frames, device: str | torch.device = "cpu") -> torch.Tensor:
    """The prepared crops of ``frames`` as ``[B,3,S,S]`` float32 in [-1, 1] on ``device`` (moved as uint8 first).
    ``prepared``: a :class:`PreparedVideo` or anything with its ``crops``."""
    from ...images import u8_image_to_tensor

    pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(prepared.crops[list(frames)])))
    return u8_image_to_tensor(pixels.to(device))


def load_prepared(folder: str | Path) -> PreparedVideo | None:
    """The prepared data in ``folder``, or None when it is absent or incomplete."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not all((folder / name).is_file() for name in FILES):
        return None
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        if info.get("format") != FORMAT:
            return None
        crops = np.load(folder / "crops.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
        tracks = load_file(str(folder / "tracks.safetensors"))
        audio_features = load_file(str(folder / "audio_features.safetensors"))["aud_eo"]
        audio = np.load(folder / "audio.npy")
    except (OSError, ValueError, KeyError):
        return None
    return PreparedVideo(folder, crops, masks, tracks, audio_features, audio, info)


def _request(sha256: str, start, end, image_size: int, face) -> dict:
    return {"sha256": sha256, "start": start, "end": end, "image_size": int(image_size), "face": face}


def _matches(prepared: PreparedVideo, request: dict) -> bool:
    info = prepared.info
    return (info.get("source", {}).get("sha256") == request["sha256"]
            and info.get("source", {}).get("start") == request["start"]
            and info.get("source", {}).get("end") == request["end"]
            and info.get("image_size") == request["image_size"] and info.get("face") == request["face"])


def _check_face_option(face) -> None:
    if face is None or face == "largest" or (isinstance(face, int) and not isinstance(face, bool) and face >= 0):
        return
    raise InputError(f"--face {face!r} is not a face choice: give 'largest' or a face number 0, 1, … counted from "
                     "the left of the picture.")


def _faces_in_samples(path: Path, span, detector: FaceDetector, face) -> None:
    """The quick checks on a few frames: a face at all, and one person unless ``face`` says which."""
    _, frames = sample_frames(path, span, SAMPLE_COUNT)
    frames = downscale(frames, span.processing_scale)
    found = [detector.detect(frame) for frame in frames]
    counts = np.array([len(f) for f in found])
    if not counts.any():
        raise InputError(
            f"{path}: no face was found in any of {len(frames)} frames sampled over the span "
            f"{span.start:g}–{span.end:.1f} s. Film the person facing the camera, with the face well lit and "
            "filling at least a fifth of the picture height (a profile, a covered or a very small face is not "
            "detected), or choose the part of the video that shows them with --start/--end.")
    with_faces = counts[counts > 0]
    several = int(np.median(with_faces))
    if several < 2:
        return
    where = f"{int((counts >= 2).sum())} of the {len(frames)} frames sampled"
    if isinstance(face, int):
        if face >= several:
            raise InputError(f"{path}: --face {face} asks for face number {face}, but the video shows {several} faces "
                             f"({where}); they are numbered 0 to {several - 1} from the left of the picture.")
        return
    ratios = [sorted((d.area for d in f), reverse=True) for f in found if len(f) >= 2]
    ratio = float(np.median([r[1] / r[0] for r in ratios]))
    if face == "largest" and ratio < AMBIGUOUS_AREA:
        return
    advice = (f"Choose the person with --face 0 … --face {several - 1} (faces numbered from the left of the picture)"
              + (", or --face largest for the biggest face." if face is None else
                 "; --face largest is not used because the faces are about the same size "
                 f"(the second is {100 * ratio:.0f} % of the largest)."))
    raise InputError(f"{path}: the video shows {several} faces ({where}); a persona is trained from one person. "
                     f"{advice} Or cut the video to a part where only that person is visible (--start/--end).")


def _interpolate(points: np.ndarray, blink: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing frames take points and blink linearly interpolated between the nearest frames with the face."""
    index = np.arange(len(found))
    have = np.flatnonzero(found)
    flat = points.reshape(len(found), -1)
    for column in range(flat.shape[1]):
        flat[~found, column] = np.interp(index[~found], have, flat[have, column])
    blink[~found] = np.interp(index[~found], have, blink[have])
    return flat.reshape(points.shape), blink


def _track_faces(path: Path, span, detector: FaceDetector, face, host: Host, progress: Callable[[int], None]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pass 1: points ``[N,478,2]`` (full-resolution pixels), blink scores ``[N]``, found ``[N]``, N."""
    track = FaceTrack(face)
    points, blinks, found = [], [], []
    scale = span.processing_scale
    for chunk in frames_25fps(path, span.start, span.end, CHUNK):
        for frame in downscale(chunk, scale):
            chosen = track.pick(detector.detect(frame))
            found.append(chosen is not None)
            points.append(np.zeros((478, 2)) if chosen is None else chosen.points / scale)
            blinks.append(0.0 if chosen is None or chosen.blink is None else chosen.blink)
        progress(len(found))
        host.check()
    if not found:
        raise InputError(f"{path}: no frame could be decoded in the span {span.start:g}–{span.end:.1f} s. "
                         "Re-encode the video (e.g. `ffmpeg -i in.mov out.mp4`) or check --start/--end.")
    return np.stack(points), np.asarray(blinks, np.float64), np.asarray(found), len(found)


def _too_short(path: Path, seconds: float, start: float) -> InputError:
    return InputError(f"{path}: only {seconds:.1f} s of usable video from {start:g} s on; at least {MIN_SECONDS:g} s "
                      "of the person talking are needed (a few minutes give good results). Use a longer recording "
                      "or a wider --start/--end span.")


def _audio_features(wave: np.ndarray, models_dir: Path, device, num_frames: int) -> torch.Tensor:
    from ..audio_features import find_wav2vec2, load_wav2vec2_folder, stream_config_for, stream_logits, unfold_windows

    folder = find_wav2vec2(models_dir)
    model = load_wav2vec2_folder(folder).to(device)
    try:
        logits = stream_logits(model, wave, stream_config_for(folder))
    finally:
        del model
    windows = unfold_windows(logits).float().contiguous()
    if windows.shape[0] < num_frames:
        pad = torch.zeros(num_frames - windows.shape[0], *windows.shape[1:])
        windows = torch.cat([windows, pad])
    return windows


def prepare_video(video: str | Path, folder: str | Path, *, image_size: int, generator=None,
                  start: float | None = None, end: float | None = None, face: str | int | None = "largest",
                  models_dir: str | Path | None = None, device: str | torch.device = "cpu", host: Host = HERE,
                  say: Callable[[str], None] = print) -> PreparedVideo:
    """Prepare ``video`` for training into ``folder`` (module docstring), or reuse what is there.

    Args:
        video: the talking video (any container PyAV reads, with sound).
        folder: ``PERSONA_DIR/prepared``; replaced as a whole when rebuilt.
        image_size: side S of the aligned crops and masks (512 officially).
        generator: the EG3D prior (:class:`~r3dp_core.talk3d.eg3d_generator.TriPlaneGenerator`) whose average face
            is the alignment reference; None (or a face MediaPipe does not find on it) → the template.
        start, end: seconds of the video to use (None: its start / end).
        face: ``'largest'``, a face number counted from the left, or None (refuse when several faces are seen).
        models_dir: where the face landmarker, the segmenter (optional) and wav2vec2 are found.
        device: where wav2vec2 runs.
        host: progress ``report(done, total)`` per chunk and ``check()`` between chunks.
        say: one line per note (warnings, fallbacks, what was interpolated).

    Raises:
        InputError: the bad inputs of the module docstring, each with what to do.
        ModelFileError: the face landmarker or wav2vec2 is missing.
    """
    from ..audio_features import find_wav2vec2

    video, folder = Path(video), Path(folder)
    _check_face_option(face)
    if int(image_size) < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    span = probe_span(video, start, end)
    sha256 = video_sha256(video)
    request = _request(sha256, start, end, image_size, face)
    cached = load_prepared(folder)
    if cached is not None and _matches(cached, request):
        say(f"Reusing the prepared frames in {folder} ({cached.num_frames} frames).")
        return cached
    if cached is not None:
        say(f"The prepared data in {folder} is for another video, span, size or face; preparing again.")

    if not span.has_audio:
        raise InputError(f"{video}: the video has no audio track. Talk3D learns the mouth from the person's own speech "
                         "in the video, so it needs the recording with its sound; if the sound is in a separate file, "
                         "mux it first (e.g. `ffmpeg -i video.mp4 -i speech.wav -c:v copy -c:a aac -shortest "
                         "out.mp4`).")
    if np.isfinite(span.end) and span.duration < MIN_SECONDS:
        raise _too_short(video, span.duration, span.start)
    models = model_files.default_models_dir(models_dir)
    landmarker = model_files.require("face_landmarker", models)
    find_wav2vec2(models)   # fail now rather than after the frames
    segmenter = model_files.BY_KEY["segmenter"].find(models)
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        say(text)

    if span.duration <= WARN_SECONDS:
        note(f"Note: {span.duration:.1f} s of video is short; the persona will be rough. The official videos are 3–5 "
             "minutes of one person talking.")
    with FaceDetector(landmarker) as detector:
        _faces_in_samples(video, span, detector, face)
        expected = max(span.expected_frames, 1) if np.isfinite(span.end) else 1
        points, blink_scores, found, count = _track_faces(
            video, span, detector, face, host, lambda done: host.report(done, 2 * max(expected, done)))
        standin = detector.is_standin
    if count / FPS < MIN_SECONDS:
        raise _too_short(video, count / FPS, span.start)
    missing = int((~found).sum())
    if missing > MAX_MISSING * count:
        raise InputError(
            f"{video}: the face is missing in {missing} of {count} frames ({100 * missing / count:.0f} %); at most "
            f"{100 * MAX_MISSING:.0f} % can be filled in. Use a part of the video where the face stays in view "
            "(--start/--end), or film again with the face always visible and unobstructed.")
    if missing:
        points, blink_scores = _interpolate(points, blink_scores, found)
        note(f"The face was not found in {missing} of {count} frames; their landmarks were interpolated.")
    if standin:
        blink = np.zeros(count, np.float32)
        note("The face landmarker is a stand-in without blend shapes: the blink track is 0.")
    else:
        blink = blink_au45(blink_scores)
    if segmenter is None:
        note("The selfie segmenter (selfie_multiclass_256x256.tflite) is not installed: face, body and torso masks are "
             "drawn from the landmarks instead (`r3dp models fetch` gets the segmenter).")

    # tracks
    six = smooth_six(six_points(points))
    landmarks = landmark_track(six, span.width)
    angles = head_angles(landmarks, span.width, span.height)
    reference, reference_kind = reference_points(generator, landmarker, image_size)
    if reference_kind == "template":
        note("The alignment reference is r3dp's canonical face template (the generator's average face was not "
             "detectable or no generator was given).")
    matrices = np.stack([similarity(six[i], reference) for i in range(count)])
    crop_points = np.stack([apply_affine(matrices[i], points[i]) for i in range(count)])
    lips = crop_points[:, list(LIP_IDS)]
    boxes = np.stack([mouth_box(p, image_size) for p in crop_points])

    wave = load_audio_span(video, span.start, count)
    features = _audio_features(wave, models, device, count)
    host.check()

    info = {
        "format": FORMAT,
        "source": {"path": str(video.resolve()), "sha256": sha256, "start": start, "end": end},
        "span": [span.start, span.start + count / FPS],
        "fps": FPS, "frames": count, "train_frames": train_frame_count(count),
        "frame_size": [span.width, span.height], "processing_scale": span.processing_scale,
        "image_size": int(image_size), "face": face, "reference": reference_kind,
        "reference_points": np.asarray(reference).round(3).tolist(),
        "masks": "landmarks" if segmenter is None else "segmenter",
        "blink": "none (stand-in landmarker)" if standin else "mediapipe blend shapes → AU45",
        "interpolated_frames": missing,
        "six_points": {"official_68": list(OFFICIAL_SIX), "mediapipe": list(MEDIAPIPE_SIX)},
        "audio_sample_rate": SAMPLE_RATE, "notes": notes,
    }
    tracks = {"head_angles": torch.from_numpy(angles), "landmarks": torch.from_numpy(landmarks),
              "blink": torch.from_numpy(blink), "similarity": torch.from_numpy(matrices.astype(np.float32)),
              "mouth_box": torch.from_numpy(boxes), "lips": torch.from_numpy(lips.astype(np.float32))}
    _write(video, folder, span, count, image_size, matrices, crop_points, segmenter, tracks, features, wave, info,
           host)
    prepared = load_prepared(folder)
    if prepared is None:
        raise OSError(f"The prepared data written to {folder} could not be read back.")
    say(f"Prepared {count} frames ({count / FPS:.1f} s) in {folder}: {prepared.train_frames} for training, "
        f"{count - prepared.train_frames} held out.")
    return prepared


def _write(video: Path, folder: Path, span, count: int, image_size: int, matrices: np.ndarray,
           crop_points: np.ndarray, segmenter: Path | None, tracks: dict, features: torch.Tensor, wave: np.ndarray,
           info: dict, host: Host) -> None:
    """Pass 2 and every file, in a temporary folder that replaces ``folder`` once complete."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        crops = np.lib.format.open_memmap(partial / "crops.npy", mode="w+", dtype=np.uint8,
                                          shape=(count, image_size, image_size, 3))
        masks = np.lib.format.open_memmap(partial / "masks.npy", mode="w+", dtype=np.uint8,
                                          shape=(count, len(MASKS), image_size, image_size))
        done = 0
        for chunk in frames_25fps(video, span.start, span.end, CHUNK):
            stop = min(done + len(chunk), count)
            for offset, frame in enumerate(chunk[:stop - done]):
                crops[done + offset] = warp_crop(frame, matrices[done + offset], image_size)
            masks[done:stop] = crop_masks(np.asarray(crops[done:stop]), crop_points[done:stop], segmenter)
            done = stop
            host.report(count + done, 2 * count)
            host.check()
            if done >= count:
                break
        if done != count:
            raise InputError(f"{video}: the second read of the video gave {done} frames instead of {count}; the file "
                             "is damaged. Re-encode it (e.g. `ffmpeg -i in.mp4 out.mp4`).")
        crops.flush()
        masks.flush()
        del crops, masks
        save_file({k: v.contiguous() for k, v in tracks.items()}, str(partial / "tracks.safetensors"))
        save_file({"aud_eo": features.contiguous()}, str(partial / "audio_features.safetensors"))
        np.save(partial / "audio.npy", wave.astype(np.float32))
        (partial / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
        os.replace(partial, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
