"""Held-out evaluation of a persona (issue #26, item 6): how well the personalised generator + U-Net re-draw the
frames they were not trained on.

The last 1/11 of the prepared frames (``[train_frames, N)``, the official split) are rendered from their own
conditioning — audio windows, blink (no training noise), head angles, landmark token and per-frame camera, exactly
as in training — and compared with the aligned crops. Renders are clamped to [-1, 1] (as a written video would be)
and compared at the crop size ``S``.

Metrics (plain floats, JSON-ready; higher is better unless said):

* ``psnr`` — mean over frames of the per-frame PSNR in dB on [0, 1] images (per-frame MSE floored at 1e-10, so at
  most 100 dB); as the official ``eval/compare.py`` (skimage PSNR, averaged over frames), on floats instead of
  uint8 BGR.
* ``ssim`` — mean SSIM (``kornia.metrics.ssim``, Gaussian window 11, σ 1.5, on [0, 1], mean over pixels and
  channels, then over frames).
* ``mouth_landmark_distance`` (lower is better) — MediaPipe's 40 lip points (outer + inner lip,
  :data:`~r3dp_core.geometry.landmarks.OUTER_LIP_IDS` + ``INNER_LIP_IDS``) detected on the render and on the crop,
  each set mean-centred, mean per-point L2 distance in crop pixels, averaged over the frames where both have a face
  (the official LMD with MediaPipe in place of FAN's 68 points 48–67). ``None`` when no landmarker is given or no
  frame has a face in both (tiny renders): the reason is in ``notes``; ``mouth_landmark_frames`` counts the frames
  scored.
* ``lpips`` (lower is better) — LPIPS-alex of render vs crop in [-1, 1], mean over frames. Only with the LPIPS file.
* ``identity`` — cosine of the ArcFace IR-SE50 embeddings of the whole render and the whole crop (the loss network's
  own 112² pooling; crops are face-aligned already), mean over frames. Only with the ArcFace file.
* ``sync`` — the lip-sync expert's confidence: for each scored frame ``f`` the five rendered frames ``c … c+4``
  (``c = f − 2`` clamped into the held-out part) are cut at the prepared mouth boxes, resized to 96² (bilinear,
  antialiased), BGR in [0, 1], lower halves stacked ``[15, 48, 96]``, and scored by Wav2Lip's SyncNet against the
  16 mel frames starting at ``⌊80·c/25⌋``; ``sync_probability`` (cosine clamped into (0, 1)) averaged over the
  clips. Only with the SyncNet file. This renders up to five times as many frames.

Keys of the optional terms are absent (not ``None``) when their network is missing, as ``metrics.json`` lists them.

Determinism: the renderer's two random draws are fixed per frame (``torch.Generator().manual_seed(seed + frame)``,
drawn on the CPU), so a frame gets the same noise in every evaluation, whatever the batch size or device; the
blink gets no noise. The same call gives the same figures; another ``batch`` may differ at float rounding.
Everything runs under ``torch.no_grad`` with both networks in eval mode (restored after).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from .prepare import crop_images
from .training import SYNC_FACE, render_chunk, sync_mel

#: Frames per SyncNet clip.
SYNC_FRAMES = 5
#: PSNR's MSE floor (on [0, 1]): a perfect frame scores 100 dB instead of ``inf`` (JSON has no infinity).
MSE_FLOOR = 1e-10
SSIM_WINDOW = 11
ALWAYS = ("psnr", "ssim", "mouth_landmark_distance")
OPTIONAL = ("lpips", "sync", "identity")


def heldout_frames(prepared, count: int) -> list[int]:
    """``count`` frame indices spread evenly over the held-out part ``[train_frames, N)`` (first and last included);
    every held-out frame when there are ``count`` or fewer. Sorted, distinct.

    Raises:
        InputError: the prepared video has no held-out frame.
    """
    start, stop = int(prepared.train_frames), int(prepared.num_frames)
    if stop <= start:
        raise InputError(f"the prepared video has no held-out frames ({stop} frames, {start} for training); "
                         "use a longer video.")
    if count <= 0:
        return []
    if count >= stop - start:
        return list(range(start, stop))
    return sorted({int(round(x)) for x in np.linspace(start, stop - 1, count)})


def _tensor(values) -> torch.Tensor:
    """A tensor as it is; an array (a read-only memory map too) copied into one."""
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.array(values))


def psnr_per_frame(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` PSNR in dB of ``[B, 3, H, W]`` images in [0, 1] (float64 on the CPU, as MPS has no float64; MSE floored
    at :data:`MSE_FLOOR`)."""
    mse = (image.detach().cpu().double() - target.detach().cpu().double()).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def ssim_per_frame(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean SSIM of ``[B, 3, H, W]`` images in [0, 1] (kornia, window 11)."""
    import kornia

    return kornia.metrics.ssim(image.float(), target.float(), SSIM_WINDOW, max_val=1.0).flatten(1).mean(1)


def lip_points(points: np.ndarray) -> np.ndarray:
    """The 40 lip points (outer then inner) of MediaPipe faces ``[..., 478, 2]`` → ``[..., 40, 2]``."""
    from ...geometry.landmarks import INNER_LIP_IDS, OUTER_LIP_IDS

    return points[..., list(OUTER_LIP_IDS) + list(INNER_LIP_IDS), :]


def mouth_distance(rendered: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame mouth landmark distance of lip point sets ``[B, P, 2]``: each set mean-centred, then the mean over
    points of the L2 distance → ``[B]`` (in the points' units)."""
    rendered = rendered - rendered.mean(axis=-2, keepdims=True)
    target = target - target.mean(axis=-2, keepdims=True)
    return np.linalg.norm(rendered - target, axis=-1).mean(axis=-1)


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] → ``[B, H, W, 3]`` uint8 RGB (rounded)."""
    scaled = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(scaled.permute(0, 2, 3, 1).cpu().numpy())


def sync_face(image: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """SyncNet's face input of one frame: the mouth box of ``image`` ``[3, S, S]`` (in [-1, 1], RGB), resized to
    96² (bilinear, antialiased), BGR in [0, 1], lower half → ``[3, 48, 96]`` (CPU float32)."""
    size = image.shape[-1]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1 = min(max(x1, 0), size - 1), min(max(y1, 0), size - 1)
    x2, y2 = min(max(x2, x1 + 1), size), min(max(y2, y1 + 1), size)
    crop = image[None, :, y1:y2, x1:x2].float().cpu()
    crop = F.interpolate(crop, size=(SYNC_FACE, SYNC_FACE), mode="bilinear", align_corners=False, antialias=True)
    return ((crop.flip(1) + 1) / 2)[0, :, SYNC_FACE // 2:]


def _sync_functions():
    """``(wav2lip_mel, sync_probability)`` of the loss networks (a seam for tests)."""
    from ..loss_networks import sync_probability, wav2lip_mel

    return wav2lip_mel, sync_probability


def mel_window(mel: np.ndarray, start_frame: int) -> torch.Tensor:
    """The ``[1, 80, 16]`` Wav2Lip mel window of the five frames starting at ``start_frame`` (zero-padded)."""
    return sync_mel(mel, start_frame)[0]


def sync_clip_start(frame: int, first: int, count: int) -> int:
    """Start of the five-frame clip scored for ``frame``: ``frame − 2`` clamped into ``[first, count − 5]`` (into
    ``[0, count − 5]`` when the held-out part is shorter than five frames)."""
    low = first if count - first >= SYNC_FRAMES else 0
    return int(min(max(frame - SYNC_FRAMES // 2, low), max(count - SYNC_FRAMES, 0)))


def _training_flags(*modules) -> list[tuple[torch.nn.Module, bool]]:
    return [(m, m.training) for m in modules if isinstance(m, torch.nn.Module)]


def evaluate_heldout(generator, networks, w_person: torch.Tensor, prepared, yaw_pitch: torch.Tensor, *,
                     frames: Sequence[int], use_delta: bool = True, loss_networks=None,
                     landmarker_path: str | Path | None = None, seed: int = 0, batch: int = 4) -> dict[str, Any]:
    """Score renders of held-out ``frames`` against their crops (module docstring for each metric).

    Args:
        generator: the personalised :class:`~r3dp_core.talk3d.eg3d_generator.TriPlaneGenerator`; its output side
            must equal the crops' ``S``.
        networks: :class:`~r3dp_core.talk3d.model.Talk3DNetworks` (on the generator's device); unused when
            ``use_delta`` is False.
        w_person: ``[1, w_dim]`` (or ``[w_dim]``) the person's latent; ``P_ID = synthesize_planes(w repeated to
            num_ws rows)`` (backbone noise ``'const'``); ``[1, num_ws, w_dim]`` styles are used as they are.
        prepared: a ``PreparedVideo`` (``crops`` uint8 ``[N,S,S,3]``, ``tracks``, ``audio_features`` ``[N_a,16,44]``,
            ``audio`` 16 kHz float32 for ``sync``, ``train_frames``, ``num_frames``).
        yaw_pitch: ``[N, 2]`` per-frame camera offsets in radians (phase A).
        frames: frame indices to score (:func:`heldout_frames`); any frame of the video is accepted.
        use_delta: render ``P_ID + ΔP`` (the U-Net's output); False renders ``P_ID`` alone (``ΔP = 0``: the
            ``*_at_start`` and ``psnr_without_delta`` figures).
        loss_networks: :class:`~r3dp_core.talk3d.loss_networks.LossNetworks` or None; each present network adds its
            term (``lpips``, ``identity``, ``sync``), on the generator's device.
        landmarker_path: MediaPipe ``face_landmarker.task`` (or a stand-in landmarker file) for the mouth landmark
            distance; None leaves it ``None``.
        seed: the renderer-noise seed (frame ``f`` draws with ``seed + f``).
        batch: frames rendered together (memory; the figures depend on it only at float rounding, as batched
            convolutions may sum in another order).

    Returns:
        ``{"psnr", "ssim", "mouth_landmark_distance" (float or None), ["lpips"], ["sync"], ["identity"],
        "frames": [int], "mouth_landmark_frames": int, "notes": [str]}`` — floats, ints, strings and None only.

    Raises:
        InputError: no frames, frames outside the video, or a render size unlike the crops'.
    """
    frames = [int(f) for f in frames]
    count = int(prepared.num_frames)
    if not frames:
        raise InputError("evaluate_heldout needs at least one frame to score.")
    if min(frames) < 0 or max(frames) >= count:
        raise InputError(f"evaluation frames must lie in [0, {count}), got {min(frames)} … {max(frames)}.")
    size = int(prepared.crops.shape[1])
    if generator.config.superresolution.img_resolution != size:
        raise InputError(f"the generator renders {generator.config.superresolution.img_resolution}² frames but the "
                         f"prepared crops are {size}²; prepare the video for this generator.")
    batch = max(int(batch), 1)
    lpips = getattr(loss_networks, "lpips", None) if loss_networks is not None else None
    identity = getattr(loss_networks, "identity", None) if loss_networks is not None else None
    syncnet = getattr(loss_networks, "sync", None) if loss_networks is not None else None
    notes: list[str] = []

    # frames to render: the scored ones, plus every frame of the sync clips
    clip_starts = ([sync_clip_start(f, int(prepared.train_frames), count) for f in frames]
                   if syncnet is not None and count >= SYNC_FRAMES else [])
    if syncnet is not None and not clip_starts:
        notes.append(f"sync not scored: the video has fewer than {SYNC_FRAMES} frames.")
    sync_frames = {c + k for c in clip_starts for k in range(SYNC_FRAMES)}
    scored = set(frames)
    # the scored frames first, in batches of their own, so their figures do not depend on the sync term
    to_render = sorted(scored) + sorted(sync_frames - scored)
    boxes = _tensor(prepared.tracks["mouth_box"]).float() if sync_frames else None

    device = generator.device
    flags = _training_flags(generator, networks, lpips, identity, syncnet)
    per_frame: dict[str, dict[int, float]] = {name: {} for name in ("psnr", "ssim", "lpips", "identity")}
    renders_u8: dict[int, np.ndarray] = {}
    mouth_faces: dict[int, torch.Tensor] = {}
    try:
        for module, _ in flags:
            module.eval()
        with torch.no_grad():
            w = w_person.to(device).float()
            if w.ndim < 3:      # one w for every style row (Talk3D's w_person); [1, num_ws, w_dim] is used as is
                w = w.reshape(1, 1, -1).expand(1, generator.num_ws, -1).contiguous()
            planes = generator.synthesize_planes(w)
            for begin in range(0, len(to_render), batch):
                chunk = to_render[begin:begin + batch]
                image = render_chunk(generator, networks if use_delta else None, planes, w, prepared, chunk,
                                     _tensor(yaw_pitch), seed).clamp(-1, 1)
                keep = [i for i, f in enumerate(chunk) if f in scored]
                if keep:
                    picked = [chunk[i] for i in keep]
                    rendered = image[keep]
                    target = crop_images(prepared, picked, device)
                    values = {"psnr": psnr_per_frame((rendered + 1) / 2, (target + 1) / 2),
                              "ssim": ssim_per_frame((rendered + 1) / 2, (target + 1) / 2)}
                    if lpips is not None:
                        values["lpips"] = lpips(rendered, target).reshape(-1)
                    if identity is not None:
                        values["identity"] = (identity(rendered) * identity(target)).sum(-1)
                    for name, tensor in values.items():
                        per_frame[name].update(zip(picked, tensor.detach().cpu().double().tolist()))
                    if landmarker_path is not None:
                        renders_u8.update(zip(picked, as_uint8(rendered)))
                for i, f in enumerate(chunk):
                    if boxes is not None and f in sync_frames:
                        mouth_faces[f] = sync_face(image[i], boxes[f].tolist())
            sync_value = None
            if clip_starts:
                wav2lip_mel, sync_probability = _sync_functions()
                mel = wav2lip_mel(np.asarray(prepared.audio, np.float32))
                scores = []
                for begin in range(0, len(clip_starts), batch):
                    starts = clip_starts[begin:begin + batch]
                    faces = torch.stack([torch.cat([mouth_faces[c + k] for k in range(SYNC_FRAMES)]) for c in starts])
                    mels = torch.stack([mel_window(mel, c) for c in starts])
                    audio_embedding, face_embedding = syncnet(mels.to(device), faces.to(device))
                    scores.append(sync_probability(audio_embedding, face_embedding).reshape(-1).cpu().double())
                sync_value = float(torch.cat(scores).mean())
    finally:
        for module, training in flags:
            module.train(training)

    result: dict[str, Any] = {name: _mean(per_frame[name], frames) for name in ("psnr", "ssim")}
    distance, scored_count, note = _mouth_landmark_distance(renders_u8, prepared, frames, landmarker_path)
    result["mouth_landmark_distance"] = distance
    if note:
        notes.append(note)
    if lpips is not None:
        result["lpips"] = _mean(per_frame["lpips"], frames)
    if syncnet is not None and sync_value is not None:
        result["sync"] = sync_value
    if identity is not None:
        result["identity"] = _mean(per_frame["identity"], frames)
    result.update(frames=frames, mouth_landmark_frames=scored_count, notes=notes)
    return result


def _mean(values: dict[int, float], frames: Sequence[int]) -> float:
    return float(math.fsum(values[f] for f in frames) / len(frames))


def _mouth_landmark_distance(renders: dict[int, np.ndarray], prepared, frames: Sequence[int],
                             landmarker_path: str | Path | None) -> tuple[float | None, int, str | None]:
    """(mean distance or None, frames scored, a note when None) of the rendered frames vs their crops."""
    if landmarker_path is None:
        return None, 0, "mouth_landmark_distance not scored: no face landmarker file was given."
    from ...geometry.landmarks import detect_image_points

    rendered = np.stack([renders[f] for f in frames])
    targets = np.ascontiguousarray(np.asarray(prepared.crops[list(frames)], dtype=np.uint8))
    render_points, render_found = detect_image_points(rendered, landmarker_path, face="largest", max_faces=1)
    target_points, target_found = detect_image_points(targets, landmarker_path, face="largest", max_faces=1)
    both = render_found & target_found
    if not both.any():
        where = "the renders" if not render_found.any() else "the crops" if not target_found.any() else \
            "a render and its crop together"
        return None, 0, (f"mouth_landmark_distance not scored: MediaPipe found no face in {where} "
                         f"({int(render_found.sum())}/{len(frames)} renders, {int(target_found.sum())}/{len(frames)} "
                         "crops).")
    distances = mouth_distance(lip_points(render_points[both]), lip_points(target_points[both]))
    return float(distances.mean()), int(both.sum()), None
