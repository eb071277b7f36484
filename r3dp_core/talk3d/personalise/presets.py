"""The schedules of ``r3dp personalise``: every number of the training recipe in one documented signature.

``full`` is the official recipe (``../shared/spec/talk3d_spec.md`` §1.3, §1.4, §3): VIVE3D inversion 600 steps and
tuning 400 steps on 3 anchor frames, per-frame camera inversion 200/50 steps, 80 000 U-Net steps of 4 frames, then
1 000 super-resolution steps of 2 frames. ``fast`` keeps the networks and losses and cuts every schedule to a
tenth (a first persona on one GPU). ``tiny`` is a miniature generator and U-Net for running the whole pipeline on
a CPU in minutes: every step is real, the pictures are meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config import Talk3DConfig
from ..eg3d_generator import EG3DGeneratorConfig, tiny_config


def tiny_networks_config() -> Talk3DConfig:
    """The Talk3D networks at the tiny generator's tri-plane (3×4 channels at 16²; 2² bottleneck)."""
    return Talk3DConfig(token_dim=16, triplane_channels=4, plane_resolution=16, down_channels=(8, 8, 16),
                        up_channels=(8, 8, 4), transformer_layers=1, attention_heads=2, attention_head_dim=8,
                        norm_groups=4, feed_forward_mult=2)


@dataclass(frozen=True)
class PersonalisePreset:
    """One training schedule. Defaults = the official recipe (the ``full`` preset).

    Phase A (VIVE3D, §1.3) personalises the EG3D prior; phase B1 (§1.4, §3.1) trains the audio-guided U-Net;
    phase B2 (§3.2) fine-tunes the EG3D super-resolution (the official GFPGAN stage is a recorded deviation).
    """

    name: str = "full"
    generator: EG3DGeneratorConfig = field(default_factory=EG3DGeneratorConfig)
    """Architecture of the EG3D prior (the official ``ffhq-fixed-triplane512-128`` at the default)."""
    networks: Talk3DConfig = field(default_factory=Talk3DConfig)
    """Architecture of the token encoders and the Deltaplane U-Net."""
    image_size: int = 512
    """Side of the aligned crops = the generator's output (``superresolution.img_resolution``)."""

    # --- phase A: VIVE3D --------------------------------------------------------------------------------------
    anchor_frames: int = 3
    """Frames jointly inverted and tuned on (official K = 3, "5 recommended" when memory allows)."""
    anchor_seconds: float = 10.0
    """Anchors are picked from the first this-many seconds (official ``--start_sec 0 --end_sec 10``)."""
    inversion_steps: int = 600
    """Joint inversion steps (``Pipeline.inversion``)."""
    inversion_lr: float = 0.01
    tune_steps: int = 400
    """PTI generator tuning steps (``Pipeline.tune``); early stop at LPIPS ≤ ``tune_stop_lpips``."""
    tune_lr: float = 1e-3
    tune_stop_lpips: float = 0.006
    locality_weight: float = 1e-4
    """Weight of the PTI locality regulariser (every tuning step)."""
    camera_first_steps: int = 200
    """Per-frame camera inversion steps of frame 0 (``invert_video.py``)."""
    camera_steps: int = 50
    """... of every later frame, warm-started from the previous one; stops early below ``camera_loss_threshold``."""
    camera_lr: float = 0.01
    camera_loss_threshold: float = 0.2

    # --- phase B1: audio-guided U-Net ---------------------------------------------------------------------------
    unet_steps: int = 80_000
    """U-Net steps (``--tuning_start_iter``); ``--steps`` overrides it."""
    windows_per_step: int = 2
    """Sync windows per step (``--batchsize 2``); each gives frames idx+1 and idx+3, so 4 frames per step."""
    unet_lr: float = 5e-4
    lr_decay: float = 0.98
    """``StepLR(step_size=2 epochs, gamma=0.98)``: lr × 0.98 every ``lr_decay_epochs`` epochs of windows."""
    lr_decay_epochs: int = 2
    image_loss_weight: float = 16.0
    lpips_loss_weight: float = 1.0
    id_loss_weight: float = 1.0
    mouth_loss_weight: float = 15.0
    sync_loss_weight: float = 0.01
    sync_start_fraction: float = 2 / 3
    """The lip-sync expert loss is on for the steps after this fraction of ``unet_steps`` (official: epoch > 20,
    about the last third of 80 k steps for a 4-minute video)."""
    eye_noise: float = 0.05
    """Uniform noise ±this added to the blink value of training frames (``Blinkencoder``)."""

    # --- phase B2: super-resolution fine-tune ---------------------------------------------------------------------
    sr_steps: int = 1_000
    sr_lr: float = 2e-4
    sr_frames_per_step: int = 2

    # --- bookkeeping ----------------------------------------------------------------------------------------------
    save_every: int = 5_000
    """Checkpoint + preview strip every this-many U-Net steps (official: 5 000)."""
    preview_frames: int = 4
    """Held-out frames in each preview strip."""
    eval_frames: int = 32
    """Held-out frames scored by the evaluation (spread over the held-out part; all when fewer)."""

    @property
    def raw_resolution(self) -> int:
        """Side of the raw volume render (128 officially); the image losses compare it with the crop / 4."""
        return self.generator.render.resolution

    @property
    def frames_per_step(self) -> int:
        return 2 * self.windows_per_step


PRESETS: dict[str, PersonalisePreset] = {
    "full": PersonalisePreset(),
    # A tenth of every official schedule: phase A 60 + 40 steps on 3 anchors, cameras 20/5 steps a frame, 8 000
    # U-Net steps, 100 SR steps (benchmarks/bench_personalise.py projects its time on a given device).
    "fast": PersonalisePreset(name="fast", inversion_steps=60, tune_steps=40, camera_first_steps=20, camera_steps=5,
                              unet_steps=8_000, sr_steps=100, save_every=1_000),
    # Miniature networks (64² frames): the whole pipeline on a CPU in minutes.
    "tiny": PersonalisePreset(name="tiny", generator=tiny_config(), networks=tiny_networks_config(), image_size=64,
                              anchor_frames=2, anchor_seconds=4.0, inversion_steps=12, tune_steps=8,
                              camera_first_steps=4, camera_steps=2, unet_steps=40, windows_per_step=1,
                              unet_lr=2e-3, sync_start_fraction=0.75, sr_steps=4, save_every=20,
                              preview_frames=2, eval_frames=8),
}


def get_preset(name: str, **overrides) -> PersonalisePreset:
    """The named preset with ``overrides`` (field=value) applied.

    Raises:
        ValueError: an unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (choose one of: {', '.join(PRESETS)})")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
