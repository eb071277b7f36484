"""Motion from a driving video: landmarks per frame, a 3DMM video fit, resampled to 25 fps.

Rules for odd driving videos:

* **Frames without a face** reuse the previous frame's landmarks (leading ones the first detected frame's), as
  the official landmark extraction does; how many were filled is logged. The video is refused when no frame
  has a face, or when more than half of them (:data:`MAX_FACELESS_FRACTION`) have none: the motion would then
  mostly be invented.
* **Other frame rates** are resampled to 25 fps by taking, for output frame ``i``, source frame
  ``floor(i·fps/25)``; the official code has no resampling (it reads every frame as a 25 fps frame).
* **Length**: with ``num_frames`` (e.g. a pose video driving an audio clip) the 25 fps sequence is fitted to that
  length the official way: played forward, backward, forward … (:func:`mirror_index`), so a shorter video
  ping-pongs and a longer one is cut.
* **Non-square frames** (the official code asserts square ones) are fitted as if padded to the centred square
  that contains them, so the 3DMM camera sees the face where a square video would have it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ..defaults import MOTION_FPS
from ..errors import InputError
from ..geometry.camera import mirror_index
from .types import Motion

#: A driving video in which more than this fraction of the frames shows no face is refused.
MAX_FACELESS_FRACTION = 0.5


def resample_index(count: int, fps: float, target: int | None = None) -> torch.Tensor:
    """Source frame of each 25 fps output frame ``[target]`` (default length ``round(count·25/fps)``, at least 1)."""
    fps = fps if fps and fps > 0 else MOTION_FPS
    target = target or max(1, round(count * MOTION_FPS / fps))
    return torch.clamp((torch.arange(target, dtype=torch.float64) * fps / MOTION_FPS).long(), max=count - 1)


def motion_from_frames(frames: torch.Tensor | np.ndarray, fps: float, landmarker: str | Path, bfm,
                       num_frames: int | None = None, face: str | int = "largest", label: str = "The driving video",
                       log: Callable[[str], None] | None = None) -> Motion:
    """Motion of driving frames held in memory (e.g. a ComfyUI IMAGE batch or VIDEO).

    Args:
        frames: ``[T,H,W,3]`` RGB, uint8 or float in [0,1].
        fps: their frame rate.
        landmarker: ``face_landmarker.task``. bfm: the ``FaceModel3DMM``.
        num_frames: fit the result to this length by mirror looping (see module docstring); default: the
            video's own length at 25 fps.
        face: ``'largest'`` or MediaPipe's face index, when several faces are visible.
        label: how messages name the video.
    Returns:
        ``Motion`` at 25 fps with ``exp [N,64]``, ``euler``, ``trans [N,3]``.
    Raises:
        InputError: no frames, or too few frames with a face.
    """
    from ..geometry.landmarks import track_video
    from ..images import as_uint8_frames

    video = as_uint8_frames(frames)
    if video.shape[0] == 0:
        raise InputError(f"{label} has no frames; give a video that shows a face.")
    marks = track_video(lambda: [video], landmarker, face)
    return _fit_motion(marks, video.shape[1:3], fps, bfm, num_frames, label, log)


def video_motion(path: str | Path, kit, num_frames: int | None = None, face: str | int = "largest",
                 log: Callable[[str], None] | None = None) -> Motion:
    """Motion of a driving video file, read block by block (memory does not grow with its length).

    Same rules and result as :func:`motion_from_frames`; ``kit`` is the ``FaceKit`` (landmarker and BFM).
    """
    from ..geometry.landmarks import track_video
    from ..video_io import read_video_frames

    path = Path(path)
    seen: dict = {}

    def blocks() -> Iterable[np.ndarray]:
        for block, fps in read_video_frames(path):
            seen.update(size=block.shape[1:3], fps=fps)
            yield block

    marks = track_video(blocks, kit.landmarker_path, face)
    if not seen:
        raise InputError(f"{path}: the video has no decodable frames. Give a video that shows a face.")
    return _fit_motion(marks, seen["size"], seen["fps"], kit.bfm, num_frames, str(path), log)


def _fit_motion(marks, size: tuple[int, int], fps: float, bfm, num_frames: int | None, label: str,
                log: Callable[[str], None] | None) -> Motion:
    from ..geometry.fitting import fit_video

    count = int(marks.found.shape[0])
    faceless = count - int(marks.found.sum())
    if faceless == count:
        raise InputError(f"{label}: no face found in any of its {count} frames. Use a video in which one face is "
                         "clearly visible, roughly frontal.")
    if faceless > MAX_FACELESS_FRACTION * count:
        raise InputError(f"{label}: no face found in {faceless} of its {count} frames (more than "
                         f"{MAX_FACELESS_FRACTION:.0%}). Trim the video to the part where the face is visible.")
    if faceless and log is not None:
        log(f"{label}: no face in {faceless} of {count} frames; those frames reuse the previous frame's face")
    height, width = size
    side = max(height, width)
    points = marks.points.float() + torch.tensor([(side - width) / 2, (side - height) / 2])
    fit = fit_video(bfm, points, float(side))
    index = resample_index(count, fps)
    if num_frames is not None:
        index = index[mirror_index(num_frames, index.shape[0])]
    index = index.to(fit.exp.device)
    return Motion(exp=fit.exp[index].detach(), euler=fit.euler[index].detach(), trans=fit.trans[index].detach())
