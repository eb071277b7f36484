"""The main job: one photo + a voice clip (or a driving video) → an mp4, streamed chunk by chunk.

A job is admitted (``admission.admit``: model files, inputs, masks) before any model is loaded; its motion is
resolved once (``motion.resolve_motion``), like its head pose; frames are encoded as each chunk is produced, so
memory stays flat in clip length; the mp4 appears only when complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import model_files
from ..device import Precision, peak_memory_allocated_mb, peak_resident_mb, release_cached_memory
from .admission import admit, check_model_files
from .driving import video_motion
from .face import FaceKit
from .motion import motion_recipe, resolve_motion
from .portraits import PortraitCache, prepare_avatar
from .pose import resolve_pose
from .request import GenerateRequest
from .stream import iterate_chunks
from .types import GenerateSummary

__all__ = ["GenerateSummary", "JobModels", "generate", "load_job_models", "run_job"]


@dataclass
class JobModels:
    """Everything a job runs, loaded once: the video model, the face kit and, for audio, A2M and HuBERT."""

    video_model: torch.nn.Module
    kit: FaceKit
    a2m: torch.nn.Module | None = None
    hubert: torch.nn.Module | None = None


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
        recipe = motion_recipe(request, inputs)
        log({"file": f"driving from the motion file {request.motion}", "video": "fitting the driving video",
             "audio": "audio to motion"}[recipe.source])
        motion = resolve_motion(recipe, a2m=models.a2m, hubert=models.hubert, kit=models.kit, log=log)
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
    self-test's tiny one). A persona request (``--persona``) runs :func:`~.persona.run_persona_job`."""
    admitted = admit(request, skip_models=("video_model",) if video_model is not None else ())
    if request.is_persona:
        from .persona import run_persona_job

        return run_persona_job(request, admitted.inputs, admitted.models_dir, progress=progress, log=log,
                               should_stop=should_stop)
    precision = Precision.resolve(request.device, request.dtype)
    models = load_job_models(request, admitted.models_dir, precision, video_model=video_model)
    return run_job(request, admitted.inputs, models, masks=admitted.masks, progress=progress, log=log,
                   should_stop=should_stop)
