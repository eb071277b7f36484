"""The main job: one photo + a voice clip (or a driving video) → an mp4, streamed chunk by chunk.

Inputs are validated before any model is loaded; frames are encoded as each chunk is produced, so
memory stays flat in clip length; the mp4 appears only when complete.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import model_files
from ..defaults import MASK_THRESHOLD
from ..device import Precision, peak_memory_allocated_mb, peak_resident_mb, release_cached_memory
from ..errors import InputError
from ..images import uint8_to_unit
from .driving import video_motion
from .face import FaceKit
from .portraits import PortraitCache, prepare_avatar
from .pose import resolve_pose
from .request import GenerateRequest
from .stream import iterate_chunks
from .types import PortraitMasks
from .validation import validate


@dataclass
class GenerateSummary:
    path: Path
    frames: int
    seconds: float
    peak_rss_mb: float
    peak_vram_mb: float | None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")


@dataclass
class JobModels:
    """Everything a job runs, loaded once: the video model, the face kit and, for audio, A2M and HuBERT."""

    video_model: torch.nn.Module
    kit: FaceKit
    a2m: torch.nn.Module | None = None
    hubert: torch.nn.Module | None = None


def needed_models(request: GenerateRequest) -> list[str]:
    """Keys of ``model_files.MODEL_FILES`` this job needs."""
    needed = ["video_model", "bfm", "bfm_mediapipe_index", "bfm_left_eye_faces", "bfm_right_eye_faces",
              "face_landmarker"]
    if request.head_mask is None:
        needed.append("segmenter")
    if request.expression_video is None and request.motion is None:
        needed += ["audio_model", "hubert"]
    return needed


def check_model_files(request: GenerateRequest, models_dir: Path, skip: tuple[str, ...] = ()) -> None:
    """Raise one error listing every model file the job needs and the folder lacks (where it goes, where it
    comes from); nothing is loaded."""
    specs = [model_files.BY_KEY[key] for key in needed_models(request) if key not in skip]
    missing = [spec for spec in specs if spec.find(models_dir) is None]
    if missing:
        raise InputError(f"{len(missing)} model file(s) missing (`r3dp models fetch` downloads what can be "
                         "downloaded):\n" + "\n".join("  - " + m.missing_message(models_dir) for m in missing))


def load_job_models(request: GenerateRequest, models_dir: Path, precision: Precision,
                    video_model: torch.nn.Module | None = None) -> JobModels:
    """Load every model the job needs; lists all missing files at once before loading anything.

    ``video_model``: use this (already prepared) video model instead of the models folder's checkpoint.
    """
    from ..audio.hubert import load_hubert
    from ..performance import optimize_for_inference
    from .loaders import load_audio_model, load_face_kit, load_video_model

    check_model_files(request, models_dir, skip=("video_model",) if video_model is not None else ())
    kit = load_face_kit(models_dir, need_segmenter=request.head_mask is None)
    # Per-stage low precision: the renderer and the compositing stay fp32 (whole-stream autocast costs ~10 dB).
    if video_model is None:
        video_model = optimize_for_inference(load_video_model(model_files.require("video_model", models_dir),
                                                              precision, fold=False), precision)
    if request.expression_video is not None or request.motion is not None:
        return JobModels(video_model, kit)
    a2m = load_audio_model(model_files.require("audio_model", models_dir), precision.device)
    # HuBERT is the one large audio network: half precision on accelerators, fp32 on the CPU
    hubert_dtype = torch.float32 if precision.device.type == "cpu" else precision.dtype
    hubert = load_hubert(models_dir, device=precision.device, dtype=hubert_dtype)
    return JobModels(video_model, kit, a2m, hubert)


def load_masks(request: GenerateRequest):
    """The ``--head-mask``/``--body-mask`` images as ``PortraitMasks`` (None without a head mask)."""
    from .inputs import load_image

    if request.head_mask is None:
        if request.body_mask is not None:
            raise InputError("--body-mask needs --head-mask: give the head mask too, or neither to use the segmenter.")
        return None

    def grey(path: Path) -> torch.Tensor:
        return uint8_to_unit(load_image(path)).amax(-1)

    head = grey(request.head_mask)
    if not bool((head > MASK_THRESHOLD).any()):
        raise InputError(f"{request.head_mask}: the head mask is empty (no pixel is brighter than half); "
                         "the head must be white on black.")
    return PortraitMasks(head, grey(request.body_mask) if request.body_mask is not None else None)


def video_soundtrack(request: GenerateRequest, inputs, seconds: float) -> dict | None:
    """The sound of a video-driven clip: the ``--audio`` clip if given, else the expression video's own track
    (None when it has none), cut to the clip's ``seconds``."""
    from ..audio.io import load_audio

    audio = inputs.audio
    if audio is None:
        try:
            audio = load_audio(request.expression_video)
        except InputError:  # a video without a sound track: the mp4 is silent
            return None
    return audio.to_comfy(seconds)


def run_job(request: GenerateRequest, inputs, models: JobModels, *, masks=None, progress=None, log=print,
            should_stop=None, portraits: PortraitCache | None = None) -> GenerateSummary:
    """Portrait → avatar, motion, head pose, then frames streamed chunk by chunk into the mp4.

    ``progress(done, total)`` is called after every chunk and ``should_stop()`` before each (it may raise to
    interrupt); whatever stops the run, no output file is left behind. ``portraits``: a cache that prepares
    each distinct portrait once across jobs (``r3dp batch``); without it the portrait is prepared here.
    """
    from ..video_io import VideoWriter
    from .frame_chain import talking_frames
    from .paste_back import PasteBackSource
    from .stages import speech_motion, with_blinks
    from .stream import DebugPanelSource

    started = time.perf_counter()
    model = models.video_model
    device = next(model.parameters()).device
    log("preparing the portrait (landmarks, 3DMM fit, segmentation, tri-plane)")
    with torch.inference_mode():
        # every prepare_source option goes through `portrait`, so that the cache key covers it
        portrait = {"background": inputs.background, "masks": masks, "min_face_area": request.min_face_area,
                    "face": request.face}
        avatar = (portraits.avatar(model, models.kit, inputs.image, log=log, **portrait) if portraits is not None
                  else prepare_avatar(model, models.kit, inputs.image, **portrait))
        if inputs.motion is not None:
            log(f"driving from the motion file {request.motion}")
            motion = inputs.motion
            if inputs.audio is not None:
                motion = dataclasses.replace(motion, audio=inputs.audio.to_comfy(motion.duration_s))
            motion = with_blinks(motion, request.blink, request.seed)
        elif request.expression_video is not None:
            log("fitting the driving video")
            motion = video_motion(request.expression_video, models.kit, log=log)
            motion = dataclasses.replace(motion, audio=video_soundtrack(request, inputs, motion.duration_s))
            motion = with_blinks(motion, request.blink, request.seed)
        else:
            log("audio to motion")
            motion = speech_motion(inputs.audio, models.a2m, models.hubert, mouth_amp=request.mouth_amp,
                                   temperature=request.temperature, seed=request.seed, blink=request.blink,
                                   sound=inputs.audio.to_comfy())
    pose_motion = (video_motion(request.pose_video, models.kit, motion.num_frames, log=log)
                   if request.pose_video else None)
    pose = resolve_pose(request.pose_recipe(pose_motion), avatar, motion)

    with torch.inference_mode():
        frames = talking_frames(model, models.kit.geometry, avatar, motion, pose, seed=request.seed,
                                head_threshold=request.head_threshold, mouth_scale=request.mouth_scale)
        if request.debug_panels:
            frames = DebugPanelSource(frames, avatar.image)
        elif request.output == "photo":
            frames = PasteBackSource(frames, avatar)
        log(f"rendering {frames.num_frames} frames on {device}")
        render_start = time.perf_counter()
        try:
            with VideoWriter(request.out, fps=motion.fps, audio=motion.audio) as writer:
                for _, _, chunk in iterate_chunks(frames, request.chunk_size, on_chunk=progress,
                                                  should_stop=should_stop):
                    writer.write(chunk.image)
        finally:
            release_cached_memory(device)  # a failed run must not keep the accelerator memory of its last chunk
    render_seconds = time.perf_counter() - render_start
    vram = peak_memory_allocated_mb(device)
    log(f"total {time.perf_counter() - started:.1f} s")
    return GenerateSummary(request.out, frames.num_frames, render_seconds, peak_resident_mb(), vram)


def generate(request: GenerateRequest, progress=None, log=print, should_stop=None,
             video_model: torch.nn.Module | None = None) -> GenerateSummary:
    """Run the whole job: validate every input, load the models, render. ``progress(done, total)`` is called
    after every chunk. ``video_model``: an already loaded video model instead of the models folder's (the
    self-test's tiny one)."""
    models_dir = model_files.default_models_dir(request.models_dir)
    check_model_files(request, models_dir, skip=("video_model",) if video_model is not None else ())
    inputs = validate(request, models_dir)
    masks = load_masks(request)
    precision = Precision.resolve(request.device, request.dtype)
    models = load_job_models(request, models_dir, precision, video_model=video_model)
    return run_job(request, inputs, models, masks=masks, progress=progress, log=log, should_stop=should_stop)
