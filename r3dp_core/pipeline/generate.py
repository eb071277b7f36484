"""The main job: one photo + a voice clip (or a driving video) → an mp4, streamed chunk by chunk.

Inputs are validated before any model is loaded; frames are encoded as each chunk is produced, so
memory stays flat in clip length; the mp4 appears only when complete.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import model_files
from ..device import Precision
from ..errors import InputError
from ..geometry.camera import HeadPose, driving_pose, orbit_pose
from .driving import video_motion
from .request import GenerateRequest
from .stream import iterate_chunks
from .types import Motion
from .validation import validate


def make_pose(mode: str, avatar, motion: Motion, pose_motion: Motion | None) -> HeadPose:
    from .stages import head_pose

    if pose_motion is not None and mode in ("auto", "driving"):
        return driving_pose(pose_motion.euler, pose_motion.trans, motion.num_frames, avatar.euler[:1],
                            avatar.trans[:1])
    if mode == "orbit":
        return orbit_pose(avatar.euler[:1], avatar.trans[:1], motion.num_frames)
    return head_pose(avatar, motion, mode)


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


def peak_rss_mb() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024


def generate(request: GenerateRequest, progress=None, log=print) -> GenerateSummary:
    """Run the whole job. ``progress(done, total)`` is called after every chunk."""
    from ..audio.blink import blink_schedule
    from ..audio.hubert import load_hubert
    from ..audio.motion import audio_to_motion
    from ..checkpoint import load_checkpoint
    from ..models.a2m_vae import A2MConfig, AudioToMotionVAE
    from ..performance import optimize_for_inference
    from ..video_io import VideoWriter
    from .loaders import load_face_kit, load_video_model
    from .stages import make_avatar, prepare_source, talking_frames

    models_dir = model_files.default_models_dir(request.models_dir)
    inputs = validate(request, models_dir)
    precision = Precision.resolve(request.device, request.dtype)
    needed = ["video_model", "bfm", "bfm_mediapipe_index", "bfm_left_eye_faces", "bfm_right_eye_faces",
              "face_landmarker", "segmenter"] + (["audio_model", "hubert"] if inputs.audio is not None else [])
    missing = [model_files.BY_KEY[k] for k in needed if model_files.BY_KEY[k].find(models_dir) is None]
    if missing:
        raise InputError("Model files are missing:\n" + "\n".join("  - " + m.missing_message(models_dir)
                                                                  for m in missing))
    started = time.perf_counter()
    kit = load_face_kit(models_dir)
    # Per-stage low precision: the renderer and the compositing stay fp32 (whole-stream autocast costs ~10 dB).
    model = optimize_for_inference(load_video_model(model_files.require("video_model", models_dir), precision,
                                                    fold=False), precision)
    log("preparing the portrait (landmarks, 3DMM fit, segmentation, tri-plane)")
    with torch.inference_mode():
        source = prepare_source(inputs.image, kit, background=inputs.background, min_face_area=request.min_face_area)
    with torch.inference_mode():
        avatar = make_avatar(model, source)

    if request.expression_video is not None:
        log("fitting the driving video")
        motion = video_motion(request.expression_video, kit)
        audio_track = None
    else:
        log("audio to motion")
        loaded = load_checkpoint(model_files.require("audio_model", models_dir), expected="audio2secc_vae")
        a2m = AudioToMotionVAE(A2MConfig.from_state_dict(loaded.state_dict))
        a2m.load_state_dict(loaded.state_dict, strict=True)
        a2m.eval()
        hubert = load_hubert(models_dir, device=precision.device)
        with torch.inference_mode():
            exp = audio_to_motion(inputs.audio, a2m, hubert, mouth_amp=request.mouth_amp,
                                  temperature=request.temperature, seed=request.seed)
        exp = exp[: max(1, math.floor(inputs.audio.duration_s * 25 + 0.5))]
        del a2m, hubert
        schedule = blink_schedule(exp.shape[0], enabled=request.blink, seed=request.seed)
        motion = Motion(exp=exp, blink=schedule.closure if request.blink else None)
        audio_track = {"waveform": torch.from_numpy(inputs.audio.pcm.astype(np.float32) / 32768.0)[None],
                       "sample_rate": 16000}
    pose_motion = video_motion(request.pose_video, kit, motion.num_frames) if request.pose_video else None
    pose = make_pose(request.camera, avatar, motion, pose_motion)

    with torch.inference_mode():
        frames = talking_frames(model, kit, avatar, motion, pose, seed=request.seed)
        log(f"rendering {frames.num_frames} frames on {precision.device} ({precision.dtype})")
        render_start = time.perf_counter()
        with VideoWriter(request.out, fps=25, audio=audio_track) as writer:
            for _, _, chunk in iterate_chunks(frames, request.chunk_size, on_chunk=progress):
                writer.write(chunk.image)
    render_seconds = time.perf_counter() - render_start
    vram = torch.cuda.max_memory_allocated() / 2**20 if precision.device.type == "cuda" else None
    log(f"total {time.perf_counter() - started:.1f} s")
    return GenerateSummary(request.out, frames.num_frames, render_seconds, peak_rss_mb(), vram)
