"""The complete Real3D-Portrait video model (official ``OSAvatarSECC_Img2plane_Torso``, inference).

Stages, and how often each runs for a video of one portrait:

* :meth:`Secc2PlaneTorso.canonical_planes` — I2P, source head image → canonical tri-plane (once).
* :meth:`Secc2PlaneTorso.prepare_reference` — torso appearance and background features of the HTB-SR (once).
* :meth:`Secc2PlaneTorso.animated_planes` — motion adapter on the SECC maps, added to the canonical planes
  (per frame).
* :meth:`Secc2PlaneTorso.render` — volume rendering of the planes under the frame's camera (per frame).
* :meth:`Secc2PlaneTorso.super_resolve` — HTB-SR: head, warped torso and background → 512² frame (per frame).

Every per-frame stage is batched over frames. :meth:`Secc2PlaneTorso.forward` chains them like the official
``model.forward`` (which real3d_infer calls once per frame). The state dict is exactly the official one
(1030 keys), so the released checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ModelFileError
from ..render import RenderConfig, RenderNoise, RenderOutput, render_triplanes
from .decoder import OSGDecoder, OSGDecoderConfig
from .htbsr import HTBSR, HTBSRConfig, HTBSROutput, HTBSRReference
from .i2p import I2PConfig, Img2PlaneModel
from .motion_adapter import MotionAdapter, MotionAdapterConfig, fuse_planes


@dataclass
class Secc2PlaneTorsoConfig:
    """The stage configs of the video model; defaults are the released checkpoint's (148,019,272 parameters)."""

    i2p: I2PConfig = field(default_factory=I2PConfig)
    motion_adapter: MotionAdapterConfig = field(default_factory=MotionAdapterConfig)
    decoder: OSGDecoderConfig = field(default_factory=OSGDecoderConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    superresolution: HTBSRConfig = field(default_factory=HTBSRConfig)

    def __post_init__(self):
        if self.superresolution.input_resolution != self.render.resolution:
            raise ValueError(f"the super-resolution expects {self.superresolution.input_resolution}² renders, "
                             f"the renderer makes {self.render.resolution}²")
        if self.superresolution.feature_channels != self.decoder.out_features:
            raise ValueError(f"the super-resolution expects {self.superresolution.feature_channels} feature "
                             f"channels, the decoder makes {self.decoder.out_features}")

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> Secc2PlaneTorsoConfig:
        """Config for an official checkpoint's ``config.yaml`` dict.

        Raises ``ModelFileError`` for variants this port does not implement.
        """
        if hparams.get("phase1_plane_fusion_mode", "add") != "add":
            raise ModelFileError(f"unsupported checkpoint config: phase1_plane_fusion_mode="
                                 f"{hparams['phase1_plane_fusion_mode']!r} (only 'add' is implemented, as in the "
                                 "released Real3D-Portrait secc2plane_torso model)")
        channels = int(hparams.get("triplane_hid_dim", OSGDecoderConfig.in_features))
        default_render = RenderConfig()
        render = RenderConfig(
            resolution=int(hparams.get("neural_rendering_resolution", default_render.resolution)),
            num_coarse_samples=int(hparams.get("num_samples_coarse", default_render.num_coarse_samples)),
            num_fine_samples=int(hparams.get("num_samples_fine", default_render.num_fine_samples)),
            box_warp=float(hparams.get("box_warp", default_render.box_warp)))
        return cls(i2p=I2PConfig.from_hparams(hparams), motion_adapter=MotionAdapterConfig.from_hparams(hparams),
                   decoder=OSGDecoderConfig(in_features=channels), render=render,
                   superresolution=HTBSRConfig.from_hparams(hparams))


def tiny_config() -> Secc2PlaneTorsoConfig:
    """A reduced configuration of the same architecture (16² render, 64² output, 0.2 M parameters) for tests
    and benchmarks on slow machines: every stage and every code path of the full model, none of its cost."""
    from .torso import TorsoConfig

    return Secc2PlaneTorsoConfig(
        i2p=I2PConfig(triplane_channels=4, encoder_blocks=(1, 1, 1, 1), encoder_widths=(8, 8, 16, 16),
                      aspp_channels=16, aspp_rates=(2, 3, 4), vit_dim=32, vit_heads=2, low_reso_vit_depth=1,
                      low_reso_vit_conv_channels=8, branch_channels=6, high_reso_channels=(8, 6),
                      high_reso_num_convs=1, predictor_conv_channels=(8, 8), predictor_after_cat_channels=(8, 8, 8)),
        motion_adapter=MotionAdapterConfig(triplane_channels=4, embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                                           depths=(1, 1, 1, 1), head_channels=16, plane_cnn_channels=8),
        decoder=OSGDecoderConfig(in_features=4, hidden_features=8, out_features=8),
        render=RenderConfig(resolution=16, num_coarse_samples=6, num_fine_samples=6),
        superresolution=HTBSRConfig(
            feature_channels=8, input_resolution=16, output_resolution=64, w_dim=16, channels=12, final_channels=8,
            encoder_channels=6,
            torso=TorsoConfig(resolution=32, appearance_channels=(8, 8, 16), num_appearance_res_blocks=1,
                              feature_channels=4, feature_depth=4, compressed_channels=2, hourglass_channels=(8, 8, 8),
                              hourglass_out_channels=4, head_channels=4, num_head_res_blocks=1, fuser_channels=4,
                              generator_channels=8, num_generator_res_blocks=1, generator_up_channels=(8, 6),
                              occlusion_hidden_channels=4)))


@dataclass
class Secc2PlaneTorsoOutput:
    """Per-frame results of :meth:`Secc2PlaneTorso.forward` (official ``ret`` names), for B frames."""

    image: torch.Tensor  #: ``[B, 3, 512, 512]`` final frame in [-1, 1]
    feature_image: torch.Tensor  #: ``[B, 32, 128, 128]`` unclamped rendered features (0-2 = raw RGB)
    image_depth: torch.Tensor  #: ``[B, 1, 128, 128]`` rendered depth
    weights_img: torch.Tensor  #: ``[B, 1, 128, 128]`` accumulated ray weights in [0, 1]
    plane: torch.Tensor  #: ``[B, 3, 32, 256, 256]`` animated tri-plane (canonical + motion residual)
    occlusion: torch.Tensor  #: ``[B, 1, 64, 64]`` torso-model occlusion (unused by the fusion)
    occlusion_2: torch.Tensor  #: ``[B, 1, 256, 256]`` torso alpha
    head_mask: torch.Tensor  #: ``[B, 1, 512, 512]`` see :class:`~r3dp_core.models.htbsr.HTBSROutput`
    torso_mask: torch.Tensor  #: ``[B, 1, 512, 512]``
    person_mask: torch.Tensor  #: ``[B, 1, 512, 512]``

    @property
    def image_raw(self) -> torch.Tensor:
        """``[B, 3, 128, 128]`` rendered RGB clamped to [-1, 1]."""
        return self.feature_image[:, :3].clamp(-1, 1)

    @property
    def image_feature(self) -> torch.Tensor:
        """``[B, 29, 128, 128]`` the non-RGB rendered feature channels."""
        return self.feature_image[:, 3:]


class Secc2PlaneTorso(nn.Module):
    """Official ``OSAvatarSECC_Img2plane_Torso``: keys ``cano_img2plane_backbone.*``, ``secc_img2plane_backbone.*``,
    ``decoder.*``, ``superresolution.*``, ``lambda_pertube_blink_secc``, ``lambda_pertube_secc``."""

    def __init__(self, config: Secc2PlaneTorsoConfig | None = None):
        super().__init__()
        self.config = config = config or Secc2PlaneTorsoConfig()
        self.cano_img2plane_backbone = Img2PlaneModel(config.i2p)
        self.secc_img2plane_backbone = MotionAdapter(config.motion_adapter)
        self.decoder = OSGDecoder(config.decoder)
        self.superresolution = HTBSR(config.superresolution)
        # Strengths of the training-time SECC perturbation; unused at inference, present in every checkpoint.
        self.lambda_pertube_blink_secc = nn.Parameter(torch.zeros(1))
        self.lambda_pertube_secc = nn.Parameter(torch.zeros(1))

    # The per-frame stages under their own names (Image→Triplane runs through canonical_planes); the attributes
    # above keep the official names, which are the checkpoint's key prefixes.
    @property
    def motion_adapter(self) -> MotionAdapter:
        """The motion adapter (official ``secc_img2plane_backbone``)."""
        return self.secc_img2plane_backbone

    @property
    def volume_decoder(self) -> OSGDecoder:
        """The volume renderer's tri-plane feature decoder (official ``decoder``)."""
        return self.decoder

    @property
    def htbsr(self) -> HTBSR:
        """HTB-SR: super-resolution, torso and background compositing (official ``superresolution``)."""
        return self.superresolution

    def fold_constant_styles(self) -> None:
        """Precompute the super-resolution's constant-style conv weights (call after loading weights)."""
        self.superresolution.fold_constant_styles()

    def canonical_planes(self, ref_head_img: torch.Tensor) -> torch.Tensor:
        """``[R, 3, 512, 512]`` head-only source image in [-1, 1] (non-head -1) → ``[R, 3, 32, 256, 256]``."""
        return self.cano_img2plane_backbone(ref_head_img)

    def animated_planes(self, cano_planes: torch.Tensor, cond_cano: torch.Tensor, cond_src: torch.Tensor,
                        cond_tgt: torch.Tensor) -> torch.Tensor:
        """Canonical planes ``[1 or B, 3, 32, 256, 256]`` + motion-adapter residual of the SECC maps.

        ``cond_cano``, ``cond_src`` ``[1 or B, 3, 512, 512]`` and ``cond_tgt`` ``[B, 3, 512, 512]`` in [-1, 1].
        Returns ``[B, 3, 32, 256, 256]``.
        """
        return fuse_planes(cano_planes, self.secc_img2plane_backbone(cond_cano, cond_src, cond_tgt))

    def render(self, planes: torch.Tensor, camera: torch.Tensor, noise: RenderNoise | None = None,
               generator: torch.Generator | None = None) -> RenderOutput:
        """Volume-render ``planes [1 or B, 3, 32, 256, 256]`` under ``camera [B, 25]`` (128² rays).

        The official renderer jitters its samples even at inference: pass the two draws as ``noise`` or a
        ``generator`` to draw them from (see :class:`~r3dp_core.render.RenderNoise`).
        """
        return render_triplanes(planes, self.decoder, camera, self.config.render, noise=noise, generator=generator)

    def prepare_reference(self, ref_torso_img: torch.Tensor, bg_img: torch.Tensor, segmap: torch.Tensor,
                          kp_source: torch.Tensor) -> HTBSRReference:
        """Frame-invariant HTB-SR inputs (see :meth:`~r3dp_core.models.htbsr.HTBSR.prepare_reference`)."""
        return self.superresolution.prepare_reference(ref_torso_img, bg_img, segmap, kp_source)

    def super_resolve(self, render: RenderOutput, kp_driving: torch.Tensor, reference: HTBSRReference,
                      head_threshold: float | None = None) -> HTBSROutput:
        """HTB-SR of B rendered frames with driving landmarks ``kp_driving [B, 68, 3]``."""
        return self.superresolution.render_frames(render.feature_image, render.weights, kp_driving, reference,
                                                  head_threshold=head_threshold)

    def forward(self, img: torch.Tensor, camera: torch.Tensor, cond_cano: torch.Tensor, cond_src: torch.Tensor,
                cond_tgt: torch.Tensor, ref_torso_img: torch.Tensor, bg_img: torch.Tensor, segmap: torch.Tensor,
                kp_s: torch.Tensor, kp_d: torch.Tensor, *, cano_planes: torch.Tensor | None = None,
                noise: RenderNoise | None = None, generator: torch.Generator | None = None) -> Secc2PlaneTorsoOutput:
        """The official ``model.forward(img, camera, cond, ...)`` for B frames of one portrait.

        Args:
            img: ``[1, 3, 512, 512]`` head-only source image in [-1, 1] (ignored when ``cano_planes`` is given,
                like the official ``use_cached_backbone``).
            camera: ``[B, 25]`` EG3D cameras (cam2world 16 + normalised intrinsics 9).
            cond_cano, cond_src, cond_tgt: SECC maps, see :meth:`animated_planes`.
            ref_torso_img, bg_img, segmap, kp_s: the portrait's torso, background, one-hot segmap and landmarks,
                see :meth:`prepare_reference`.
            kp_d: ``[B, 68, 3]`` driving landmarks.
            cano_planes: precomputed :meth:`canonical_planes`.
            noise, generator: the renderer's random draws, see :meth:`render`.
        """
        if cano_planes is None:
            cano_planes = self.canonical_planes(img)
        planes = self.animated_planes(cano_planes, cond_cano, cond_src, cond_tgt)
        render = self.render(planes, camera, noise=noise, generator=generator)
        sr = self.super_resolve(render, kp_d, self.prepare_reference(ref_torso_img, bg_img, segmap, kp_s))
        return Secc2PlaneTorsoOutput(
            image=sr.image, feature_image=render.feature_image, image_depth=render.depth,
            weights_img=render.weights, plane=planes, occlusion=sr.occlusion, occlusion_2=sr.occlusion_2,
            head_mask=sr.head_mask, torso_mask=sr.torso_mask, person_mask=sr.person_mask)
