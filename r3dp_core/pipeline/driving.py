"""Motion from a driving video: landmarks per frame, a 3DMM video fit, resampled to 25 fps."""

from __future__ import annotations

from pathlib import Path

import torch

from .types import Motion


def _video_landmarks(path: Path, landmarker: Path) -> tuple[torch.Tensor, float, int]:
    from ..geometry.landmarks import detect_landmarks_video
    from ..video_io import read_video_frames

    chunks, fps, height = [], 25.0, 0
    for frames, video_fps in read_video_frames(path):
        fps = video_fps
        chunks.append(detect_landmarks_video(frames, landmarker).points.float())
        height = frames.shape[1]
    return torch.cat(chunks), fps, height


def video_motion(path: Path, kit, num_frames: int | None = None) -> Motion:
    """Expression and pose of a driving video (3DMM video fit), resampled to 25 fps."""
    from ..geometry.fitting import fit_video

    points, fps, height = _video_landmarks(path, kit.landmarker_path)
    fit = fit_video(kit.bfm, points, float(height))
    frames = fit.exp.shape[0]
    target = num_frames or max(1, round(frames * 25 / fps))
    index = torch.clamp((torch.arange(target) * fps / 25).long(), max=frames - 1)
    return Motion(exp=fit.exp[index].detach(), euler=fit.euler[index].detach(), trans=fit.trans[index].detach())
