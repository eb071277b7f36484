"""Phase B of ``r3dp personalise``: training the audio-guided U-Net (B1), then fine-tuning the EG3D
super-resolution (B2), with checkpoints a run can resume from.

B1 (``talk3d_spec.md`` §1.4, §3.1): the personalised generator is frozen; the five Talk3D modules and the null token
learn ΔP so that ``render(P_ID + ΔP)`` at each frame's camera matches the frame. Each step takes
``windows_per_step`` five-frame windows and trains on their frames ``idx+1`` and ``idx+3`` (4 frames at the official
batch); window starts are one seeded permutation of ``2 … N_train−9`` visited in the same order every epoch.

    L = 16·[L1(Î_raw, I_raw) + L1(Î, I)] + 1·[LPIPS(Î_raw, I_raw) + LPIPS(Î, I)] + 1·ID(M_f⊙Î, M_f⊙I)
      + 15·[mouth L2 + LPIPS inside the mouth mask at raw resolution] + λ_sync·L_sync (last third of the steps)

A term whose loss network is missing is left out (:class:`~r3dp_core.talk3d.loss_networks.LossNetworks`).

B2 (§3.2): everything above frozen; EG3D's own SR (``generator.superresolution``) is fine-tuned for ``sr_steps``
steps of 2 frames with 16·L1 + LPIPS at full resolution. It starts from the personalised generator's SR each time
B1 has advanced, so the SR always matches the U-Net it is written with. (Official: a GFPGAN is fine-tuned instead;
r3dp records that deviation.)

Every random draw (window order, eye noise, renderer noise, SR frame order) comes from one ``torch.Generator``
whose state is checkpointed with the weights and the Adam state, so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as checkpointed

from ...errors import InputError
from ...host import HERE, Host, StopRequested
from ...render import RenderNoise
from ..eg3d_generator import TriPlaneGenerator
from ..losses import BicubicDownSample, lpips_sum, mouth_l2_loss, mouth_mask_128
from ..model import Talk3DNetworks
from ..tokens import aud_eo_to_features, audio_windows
from .prepare import crop_images
from .presets import PersonalisePreset

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "r3dp-personalise-checkpoint"
LOSS_LOG = "losses.jsonl"
#: Mask channels of the prepared data (``prepare.MASKS``).
FACE, MOUTH = 0, 1
#: The six prepared landmarks → the three the landmark token reads (nose tip, lm45, lm36; official keypoints 0,2,3).
TOKEN_LANDMARKS = [0, 2, 3]
#: Wav2Lip's mel frames per second (16 kHz, hop 200) and per sync window.
MEL_FPS, MEL_WINDOW, SYNC_FACE = 80, 16, 96


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C or a node's Cancel) after saving a checkpoint at ``step``."""

    def __init__(self, step: int, total: int, cause: BaseException):
        super().__init__(f"stopped at U-Net step {step} of {total}; the checkpoint is saved, run again to resume")
        self.step, self.total, self.cause = step, total, cause


@dataclass
class TrainingState:
    """Everything besides tensors that a checkpoint holds."""

    step: int = 0                     #: U-Net steps done
    sr_tuned_at: int = -1             #: the U-Net step the stored SR was fine-tuned after (-1: never)
    seed: int = 0
    windows_per_step: int = 2
    checkpointing: bool = False
    last_losses: dict[str, float] = field(default_factory=dict)   #: the loss terms of the last step
    start_metrics: dict[str, Any] = field(default_factory=dict)    #: held-out scores before phase B
    deviations: list[str] = field(default_factory=list)            #: changes forced on this run (memory)


@dataclass
class TrainingSetup:
    """The fixed inputs of phase B: the personalised generator and the prepared frames."""

    generator: TriPlaneGenerator       #: the phase-A generator (frozen in B1)
    w_person: torch.Tensor             #: ``[1, w_dim]``
    yaw_pitch: torch.Tensor            #: ``[N, 2]`` radians
    prepared: Any                      #: :class:`~.prepare.PreparedVideo`
    preset: PersonalisePreset
    loss_networks: Any = None          #: :class:`~r3dp_core.talk3d.loss_networks.LossNetworks` or None
    dtype: torch.dtype = torch.float32 #: bfloat16: the forward passes run under autocast (the weights stay fp32)

    @property
    def device(self) -> torch.device:
        return self.generator.device


# --- data ---------------------------------------------------------------------------------------------------------

def window_starts(train_frames: int, seed: int) -> torch.Tensor:
    """The official sync loader's window start indices: a permutation of ``2 … train_frames − 9`` drawn once.

    Raises:
        InputError: fewer than 11 training frames.
    """
    if train_frames < 11:
        raise InputError(f"{train_frames} training frames are too few for five-frame windows (at least 11).")
    order = torch.randperm(train_frames - 10, generator=torch.Generator().manual_seed(seed))
    return order + 2


def step_windows(starts: torch.Tensor, step: int, windows_per_step: int) -> tuple[list[int], int]:
    """The window starts of U-Net step ``step`` and the epoch it belongs to (epochs of ``len(starts)`` windows)."""
    first = step * windows_per_step
    picked = [int(starts[(first + j) % len(starts)]) for j in range(windows_per_step)]
    return picked, first // len(starts)


def masks_of(prepared, frames: list[int], channel: int, device: torch.device) -> torch.Tensor:
    """One prepared mask channel of ``frames`` as ``[B,1,S,S]`` float 0/1 on ``device``."""
    masks = torch.from_numpy(np.ascontiguousarray(prepared.masks[frames, channel]))
    return masks.to(device).float().unsqueeze(1)


def frame_tokens(networks: Talk3DNetworks, prepared, frames: list[int], *, eye_noise: float = 0.0,
                 rng: torch.Generator | None = None) -> torch.Tensor:
    """The conditioning tokens ``[B, 5, token_dim]`` of prepared ``frames`` (official ``predict_delta_plane``).

    ``eye_noise`` adds uniform noise in ``[-eye_noise, eye_noise)`` to the blink value (training only), drawn from
    ``rng``.
    """
    device = networks.null_vector.device
    index = torch.tensor(frames)
    features = aud_eo_to_features(prepared.audio_features)
    audio = audio_windows(features, index, networks.config.audio_context).to(device)
    eye = prepared.tracks["blink"][index].float().reshape(-1, 1)
    if eye_noise:
        eye = eye + (torch.rand(eye.shape, generator=rng) * 2 - 1) * eye_noise
    angle = prepared.tracks["head_angles"][index].float()
    landmark = prepared.tracks["landmarks"][index][:, TOKEN_LANDMARKS].float()
    return networks.tokens(audio, eye.to(device), angle.to(device), landmark.to(device))


def identity_planes(generator: TriPlaneGenerator, w_person: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P_ID [1,96,256,256], ws [1,num_ws,w_dim])`` of the person's latent (backbone noise ``'const'``)."""
    ws = w_person.to(generator.device).reshape(1, 1, -1).expand(1, generator.num_ws, -1).contiguous()
    with torch.no_grad():
        return generator.synthesize_planes(ws), ws


# --- losses -------------------------------------------------------------------------------------------------------

def sync_clip(real: torch.Tensor, fake: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The SyncNet face input of one window: ``[1, 15, 48, 96]`` in [0, 1], BGR.

    Args:
        real: ``[5, 3, R, R]`` the window's frames at raw resolution, [-1, 1] RGB.
        fake: ``[2, 3, R, R]`` renders of the window's frames 1 and 3 (they replace the real ones).
        boxes: ``[5, 4]`` mouth boxes (x1, y1, x2, y2) at raw resolution.
    """
    frames = [fake[0] if k == 1 else fake[1] if k == 3 else real[k] for k in range(5)]
    crops = []
    for frame, box in zip(frames, boxes.round().int().tolist()):
        x1, y1, x2, y2 = box
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        crop = F.interpolate(frame[None, :, y1:y2, x1:x2], size=(SYNC_FACE, SYNC_FACE), mode="nearest")
        crops.append(((crop.flip(1) + 1) / 2)[:, :, SYNC_FACE // 2:])
    return torch.cat(crops, dim=1)


def sync_mel(mel: np.ndarray, start_frame: int) -> torch.Tensor:
    """The ``[1, 1, 80, 16]`` Wav2Lip mel window of the five frames starting at ``start_frame`` (zero-padded)."""
    start = int(MEL_FPS * start_frame / 25)
    window = np.zeros((mel.shape[0], MEL_WINDOW), np.float32)
    piece = mel[:, start:start + MEL_WINDOW]
    window[:, :piece.shape[1]] = piece
    return torch.from_numpy(window)[None, None]


def unet_step_loss(setup: TrainingSetup, networks: Talk3DNetworks, planes: torch.Tensor, ws: torch.Tensor,
                   windows: list[int], *, use_sync: bool, mel: np.ndarray | None, rng: torch.Generator,
                   checkpointing: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """The B1 loss of one step (§3.1) and its terms (floats, for the log)."""
    preset, prepared, generator, device = setup.preset, setup.prepared, setup.generator, setup.device
    frames = [idx + offset for idx in windows for offset in (1, 3)]
    losses = setup.loss_networks
    down = BicubicDownSample(preset.image_size // preset.raw_resolution).to(device)
    target = crop_images(prepared, frames, device)
    target_raw = down(target)
    tokens = frame_tokens(networks, prepared, frames, eye_noise=preset.eye_noise, rng=rng)
    batch_planes = planes.expand(len(frames), -1, -1, -1)
    if checkpointing:
        delta = checkpointed(networks.deltaplane_predictor, batch_planes, tokens, use_reentrant=False)
    else:
        delta = networks(batch_planes, tokens)
    yaw_pitch = setup.yaw_pitch[frames]
    out = generator.render(planes, ws, generator.cameras(yaw_pitch[:, 0], yaw_pitch[:, 1]), delta_planes=delta,
                           generator=rng)
    image, raw = out.image, out.image_raw
    terms: dict[str, torch.Tensor] = {"l1": F.l1_loss(raw, target_raw) + F.l1_loss(image, target)}
    total = preset.image_loss_weight * terms["l1"]
    mouth = mouth_mask_128(masks_of(prepared, frames, MOUTH, device), down)
    if mouth.sum() > 0:
        terms["mouth_l2"] = mouth_l2_loss(raw, target_raw, mouth)
        total = total + preset.mouth_loss_weight * terms["mouth_l2"]
    if losses is not None and losses.lpips is not None:
        terms["lpips"] = lpips_sum(losses.lpips, raw, target_raw) + lpips_sum(losses.lpips, image, target)
        total = total + preset.lpips_loss_weight * terms["lpips"]
        if mouth.sum() > 0:
            weight = mouth.to(raw.dtype)
            terms["mouth_lpips"] = lpips_sum(losses.lpips, raw * weight, target_raw * weight)
            total = total + preset.mouth_loss_weight * terms["mouth_lpips"]
    if losses is not None and losses.identity is not None:
        face = masks_of(prepared, frames, FACE, device)
        rendered_id = losses.identity(image * face)
        with torch.no_grad():
            target_id = losses.identity(target * face)
        terms["identity"] = (1 - (rendered_id * target_id).sum(-1)).mean()
        total = total + preset.id_loss_weight * terms["identity"]
    if use_sync and losses is not None and losses.sync is not None and mel is not None:
        terms["sync"] = sync_window_loss(setup, raw, windows, mel, down)
        total = total + preset.sync_loss_weight * terms["sync"]
    return total, {name: float(value.detach()) for name, value in terms.items()} | {"total": float(total.detach())}


def sync_window_loss(setup: TrainingSetup, raw: torch.Tensor, windows: list[int], mel: np.ndarray,
                     down: BicubicDownSample) -> torch.Tensor:
    """The lip-sync expert loss of the step's windows (renders at positions 1 and 3 of each five-frame window)."""
    from ..loss_networks import sync_loss

    prepared, device = setup.prepared, setup.device
    scale = setup.preset.raw_resolution / setup.preset.image_size
    faces, mels = [], []
    for j, idx in enumerate(windows):
        clip = list(range(idx, idx + 5))
        with torch.no_grad():
            real = down(crop_images(prepared, clip, device))
        boxes = prepared.tracks["mouth_box"][clip].float() * scale
        faces.append(sync_clip(real, raw[2 * j:2 * j + 2], boxes))
        mels.append(sync_mel(mel, idx))
    audio_embedding, face_embedding = setup.loss_networks.sync(torch.cat(mels).to(device), torch.cat(faces))
    return sync_loss(audio_embedding, face_embedding)


# --- checkpoints --------------------------------------------------------------------------------------------------

def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    tensors = {}
    for param_id, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{names[param_id]}.{key}"] = torch.as_tensor(value)
    return tensors


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       names: dict[int, str]) -> None:
    state = optimizer.state_dict()
    for param_id, name in names.items():
        entries = {key.rsplit(".", 1)[1]: value for key, value in tensors.items()
                   if key.startswith(f"optimizer.{name}.") and key.count(".") == name.count(".") + 2}
        if entries:
            state["state"][param_id] = entries
    optimizer.load_state_dict(state)


def _parameter_names(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    by_identity = {id(p): name for name, p in module.named_parameters()}
    return {index: by_identity[id(p)] for index, p in enumerate(optimizer.param_groups[0]["params"])}


def save_checkpoint(folder: Path, state: TrainingState, networks: Talk3DNetworks, optimizer: torch.optim.Optimizer,
                    rng: torch.Generator, superresolution: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``folder/checkpoint.safetensors`` atomically (temporary file + rename), then a readable
    ``checkpoint.json`` beside it. The JSON state is also the safetensors metadata, so the one file is complete."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"networks.{k}": v for k, v in networks.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer, _parameter_names(networks, optimizer)))
    tensors["rng_state"] = rng.get_state()
    for key, value in (superresolution or {}).items():
        tensors[f"superresolution.{key}"] = value
    info = json.dumps(state.__dict__, sort_keys=True)
    handle, temporary = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, temporary,
                  metadata={"format": CHECKPOINT_FORMAT, "state": info})
        os.replace(temporary, folder / CHECKPOINT_FILE)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _write_text_atomically(folder / "checkpoint.json", json.dumps(state.__dict__, indent=1, sort_keys=True) + "\n")
    return folder / CHECKPOINT_FILE


def load_checkpoint(folder: Path) -> tuple[TrainingState, dict[str, torch.Tensor]] | None:
    """The training state and tensors of ``folder/checkpoint.safetensors``; None when there is none."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not an r3dp personalise checkpoint; delete it or run with --restart.")
    return TrainingState(**json.loads(metadata["state"])), load_file(str(path))


def _write_text_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


# --- the loops ----------------------------------------------------------------------------------------------------

StepReport = Callable[[int, int, dict[str, float]], None]


def _learning_rate(preset: PersonalisePreset, epoch: int) -> float:
    return preset.unet_lr * preset.lr_decay ** (epoch // preset.lr_decay_epochs)


def train_unet(setup: TrainingSetup, networks: Talk3DNetworks, folder: Path, total_steps: int, *,
               state: TrainingState, tensors: dict[str, torch.Tensor] | None = None, host: Host = HERE,
               on_step: StepReport | None = None, on_save: Callable[[TrainingState], None] | None = None,
               save_every: int | None = None, say: Callable[[str], None] = print) -> TrainingState:
    """Phase B1 up to ``total_steps`` U-Net steps, from ``state`` (and the checkpoint ``tensors`` when resuming).

    Saves a checkpoint every ``save_every`` steps (the preset's when None), at the end, and when stopped
    (``host.check()`` raising, or ``KeyboardInterrupt``): then :class:`TrainingInterrupted` is raised. When a step
    runs out of memory it is retried with gradient checkpointing, then with fewer windows (said and recorded in
    ``state.deviations``).
    """
    preset = setup.preset
    save_every = save_every or preset.save_every
    generator = setup.generator.requires_grad_(False).eval()
    networks.train()
    optimizer = torch.optim.Adam(networks.parameters(), lr=preset.unet_lr, betas=(0.9, 0.999), eps=1e-8)
    rng = torch.Generator().manual_seed(state.seed)
    if tensors is not None:
        networks.load_state_dict({k[len("networks."):]: v for k, v in tensors.items() if k.startswith("networks.")})
        _restore_optimizer(optimizer, {k: v.to(setup.device) for k, v in tensors.items()
                                       if k.startswith("optimizer.")}, _parameter_names(networks, optimizer))
        rng.set_state(tensors["rng_state"])
    planes, ws = identity_planes(generator, setup.w_person)
    starts = window_starts(setup.prepared.train_frames, state.seed)
    sync_from = math.ceil(preset.sync_start_fraction * total_steps)
    mel = _mel_if_needed(setup)

    log = _loss_log(folder, state.step)

    def save():
        log.flush()
        save_checkpoint(folder, state, networks, optimizer, rng)
        if on_save is not None:
            on_save(state)

    try:
        while state.step < total_steps:
            host.check()
            windows, epoch = step_windows(starts, state.step, state.windows_per_step)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(preset, epoch)
            rng_at_step = rng.get_state()
            while True:
                optimizer.zero_grad(set_to_none=True)
                try:
                    with torch.autocast(setup.device.type, dtype=setup.dtype, enabled=setup.dtype != torch.float32):
                        loss, terms = unet_step_loss(setup, networks, planes, ws, windows,
                                                     use_sync=state.step >= sync_from, mel=mel, rng=rng,
                                                     checkpointing=state.checkpointing)
                    loss.backward()
                    break
                except torch.OutOfMemoryError:
                    loss = None
                    optimizer.zero_grad(set_to_none=True)
                    rng.set_state(rng_at_step)
                    if not _lighten(state, say):
                        raise
                    windows, epoch = step_windows(starts, state.step, state.windows_per_step)
            optimizer.step()
            state.step += 1
            state.last_losses = terms
            log.write(json.dumps({"step": state.step, **terms}) + "\n")
            if on_step is not None:
                on_step(state.step, total_steps, terms)
            if state.step % save_every == 0 or state.step == total_steps:
                save()
    except (KeyboardInterrupt, Exception) as stop:
        if isinstance(stop, KeyboardInterrupt) or _is_interrupt(stop):
            save()
            raise TrainingInterrupted(state.step, total_steps, stop) from stop
        raise
    finally:
        log.close()
    return state


def _loss_log(folder: Path, step: int):
    """``folder/losses.jsonl`` opened for appending, cut back to the lines of steps ≤ ``step`` (a resumed run
    drops the steps done after its checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOSS_LOG
    kept = []
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def read_loss_log(folder: Path) -> list[dict[str, float]]:
    """Every step's loss terms of ``folder/losses.jsonl``, in step order."""
    path = Path(folder) / LOSS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def render_noise(generator: TriPlaneGenerator, frames: list[int], seed: int) -> RenderNoise:
    """The renderer's draws for ``frames``: each frame's own ``torch.Generator().manual_seed(seed + frame)`` on the
    CPU (camera-major, as :class:`~r3dp_core.render.RenderNoise` lays them out), so how frames are batched never
    changes a frame."""
    config = generator.config.render
    rays = config.resolution ** 2
    draws = [RenderNoise.draw(1, rays, config, torch.Generator().manual_seed(int(seed) + int(f))) for f in frames]
    return RenderNoise(torch.cat([d.stratified for d in draws]), torch.cat([d.importance for d in draws]))


def render_chunk(generator: TriPlaneGenerator, networks: Talk3DNetworks | None, planes: torch.Tensor,
                 ws: torch.Tensor, source, frames: list[int], yaw_pitch: torch.Tensor, seed: int) -> torch.Tensor:
    """Render ``frames`` of ``source`` (a prepared video, or a persona's drive: anything :func:`frame_tokens`
    reads) at ``yaw_pitch[frames]``: ``P_ID + ΔP`` (ΔP = 0 when ``networks`` is None), the noise of
    :func:`render_noise`. Returns ``[B,3,S,S]`` float32, unclamped; call it under ``torch.no_grad``."""
    delta = None
    if networks is not None:
        delta = networks(planes.expand(len(frames), -1, -1, -1), frame_tokens(networks, source, frames))
    angles = torch.as_tensor(yaw_pitch).float().cpu()[frames]
    out = generator.render(planes, ws, generator.cameras(angles[:, 0], angles[:, 1]), delta_planes=delta,
                           noise=render_noise(generator, frames, seed))
    return out.image.float()


def render_frames(generator: TriPlaneGenerator, networks: Talk3DNetworks, w_person: torch.Tensor, prepared,
                  yaw_pitch: torch.Tensor, frames: list[int], *, seed: int = 0, use_delta: bool = True,
                  batch: int = 4) -> torch.Tensor:
    """``[len(frames), 3, S, S]`` renders in [-1, 1] (unclamped) of prepared ``frames`` at their cameras
    (:func:`render_chunk` per ``batch`` frames; ΔP = 0 when not ``use_delta``)."""
    planes, ws = identity_planes(generator, w_person)
    was_training = networks.training
    networks.eval()
    with torch.no_grad():
        images = [render_chunk(generator, networks if use_delta else None, planes, ws, prepared,
                               frames[first:first + batch], yaw_pitch, seed)
                  for first in range(0, len(frames), batch)]
    networks.train(was_training)
    return torch.cat(images)


def _lighten(state: TrainingState, say: Callable[[str], None]) -> bool:
    """After running out of memory: turn on gradient checkpointing, then halve the windows per step. Each change
    is said and recorded as a deviation; False when nothing is left to lighten."""
    from ...device import release_cached_memory

    release_cached_memory()
    if not state.checkpointing:
        state.checkpointing = True
        change = "gradient checkpointing of the U-Net (memory was short)"
    elif state.windows_per_step > 1:
        state.windows_per_step //= 2
        change = (f"{state.windows_per_step} window(s) = {2 * state.windows_per_step} frames per U-Net step instead "
                  "of the official 4 (memory was short)")
    else:
        return False
    state.deviations.append(f"from U-Net step {state.step}: {change}")
    say(f"Out of memory: continuing with {change}.")
    return True


def _is_interrupt(error: BaseException) -> bool:
    """A host's request to stop: :class:`~r3dp_core.host.StopRequested`, or ComfyUI's Cancel
    (``InterruptProcessingException``, matched by name: the core never imports ComfyUI)."""
    return isinstance(error, StopRequested) or type(error).__name__ == "InterruptProcessingException"


def _mel_if_needed(setup: TrainingSetup) -> np.ndarray | None:
    losses = setup.loss_networks
    if losses is None or losses.sync is None:
        return None
    from ..loss_networks import wav2lip_mel

    return wav2lip_mel(setup.prepared.audio)


def finetune_superresolution(setup: TrainingSetup, networks: Talk3DNetworks, *, seed: int, host: Host = HERE,
                             on_step: StepReport | None = None) -> dict[str, torch.Tensor]:
    """Phase B2: EG3D's SR fine-tuned for ``sr_steps`` steps (16·L1 + LPIPS at full resolution) on renders of the
    trained U-Net; returns the tuned SR state dict. The generator itself is left as it was."""
    preset, generator, prepared, device = setup.preset, setup.generator, setup.prepared, setup.device
    original = {k: v.clone() for k, v in generator.superresolution.state_dict().items()}
    networks.eval()
    sr = generator.superresolution
    sr.requires_grad_(True)
    optimizer = torch.optim.Adam(sr.parameters(), lr=preset.sr_lr, betas=(0.9, 0.999))
    rng = torch.Generator().manual_seed(seed + 1)
    planes, ws = identity_planes(generator, setup.w_person)
    try:
        for step in range(preset.sr_steps):
            host.check()
            frames = torch.randint(0, prepared.train_frames, (preset.sr_frames_per_step,), generator=rng).tolist()
            with torch.no_grad():
                delta = networks(planes.expand(len(frames), -1, -1, -1), frame_tokens(networks, prepared, frames))
                yaw_pitch = setup.yaw_pitch[frames]
                rendered = generator.render_features(planes, generator.cameras(yaw_pitch[:, 0], yaw_pitch[:, 1]),
                                                     delta_planes=delta, generator=rng)
            image = generator.super_resolve(rendered, ws)
            target = crop_images(prepared, frames, device)
            loss = preset.image_loss_weight * F.l1_loss(image, target)
            terms = {"sr_l1": float(loss.detach()) / preset.image_loss_weight}
            if setup.loss_networks is not None and setup.loss_networks.lpips is not None:
                lp = lpips_sum(setup.loss_networks.lpips, image, target)
                loss = loss + preset.lpips_loss_weight * lp
                terms["sr_lpips"] = float(lp.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step + 1, preset.sr_steps, terms)
        tuned = {k: v.detach().clone() for k, v in sr.state_dict().items()}
    finally:
        sr.load_state_dict(original)
        sr.requires_grad_(False)
    return tuned

