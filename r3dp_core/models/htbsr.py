"""HTB-SR: head-torso-background super-resolution of Real3D-Portrait (official ``SuperresolutionHybrid8XDC_Warp``).

Turns the 128² volume-rendered head features into the final 512² frame:

1. ``block0`` upsamples the head features/rgb to 256² (StyleGAN2 block).
2. The warping torso model (:mod:`.torso`) animates the reference torso with four face keypoints.
3. Head and torso are blended with the head alpha ``α`` = rendered ray weights, then a
   ``head_torso_block`` refines the mix.
4. The person (torso alpha + head alpha, head alpha forced to 1 above ``head_threshold``) is blended
   over the background, and ``block1`` upsamples to 512².

Everything that depends only on the source portrait and the background (torso appearance volume,
background features) is computed once by :meth:`HTBSR.prepare_reference`; :meth:`HTBSR.render_frames`
runs per frame and is batched over frames. The official super-resolution feeds constant all-ones style
vectors, so every modulated convolution has a fixed effective weight: :meth:`HTBSR.fold_constant_styles`
precomputes them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import HEAD_THRESHOLD
from ..errors import ModelFileError
from .layers.stylegan2 import SynthesisBlock, SynthesisBlockNoUp
from .torso import TorsoConfig, TorsoReference, WarpBasedTorsoModel


@dataclass
class HTBSRConfig:
    """Architecture and fusion settings; defaults are the official checkpoint's (54,976,359 parameters)."""

    #: channels of the rendered feature image (``triplane_hid_dim``); its first 3 are the raw RGB.
    feature_channels: int = 32
    #: side of the rendered feature image (``neural_rendering_resolution``).
    input_resolution: int = 128
    #: side of the output frame (``final_resolution``); fusion runs at half of it.
    output_resolution: int = 512
    w_dim: int = 512
    #: width of the 256² fusion stage (block0, encoders, head_torso_block).
    channels: int = 256
    #: width of the final 512² block.
    final_channels: int = 128
    #: hidden width of the background encoder and of the first fg/bg fusion conv.
    encoder_channels: int = 64
    #: head alpha above this is set to 1 in the person mask (``htbsr_head_threshold``).
    head_threshold: float = HEAD_THRESHOLD
    torso: TorsoConfig = field(default_factory=TorsoConfig)

    @classmethod
    def from_hparams(cls, hparams: Mapping) -> HTBSRConfig:
        """Config for an official checkpoint's ``config.yaml`` dict.

        Raises ``ModelFileError`` for super-resolution variants this port does not implement.
        """
        expected = {"sr_type": "vanilla", "large_sr": False, "weight_fuse": True, "htbsr_head_weight_fuse_mode": "v2",
                    "torso_model_version": "v2", "torso_inp_mode": "rgb_alpha", "torso_kp_num": 4}
        for key, value in expected.items():
            if hparams.get(key, value) != value:
                raise ModelFileError(f"unsupported checkpoint config: {key}={hparams[key]!r} (only {value!r} is "
                                     "implemented, as in the released Real3D-Portrait secc2plane_torso model)")
        output_resolution = int(hparams.get("final_resolution", cls.output_resolution))
        return cls(feature_channels=int(hparams.get("triplane_hid_dim", cls.feature_channels)),
                   input_resolution=int(hparams.get("neural_rendering_resolution", cls.input_resolution)),
                   output_resolution=output_resolution, w_dim=int(hparams.get("w_dim", cls.w_dim)),
                   head_threshold=float(hparams.get("htbsr_head_threshold", cls.head_threshold)),
                   torso=TorsoConfig(resolution=output_resolution // 2))

    def __post_init__(self):
        if self.torso.resolution != self.output_resolution // 2:
            raise ValueError(f"the torso model runs at half the output resolution ({self.output_resolution // 2}), "
                             f"not {self.torso.resolution}")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size²`` (align_corners False, antialiased like the official SR); no-op if equal."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@dataclass
class HTBSRReference:
    """Frame-invariant inputs of the SR, from one source portrait + background (batch 1 or B)."""

    torso: TorsoReference
    bg_rgb: torch.Tensor  #: ``[R, 3, 256, 256]`` background in [-1, 1]
    bg_features: torch.Tensor  #: ``[R, channels, 256, 256]`` ``bg_encoder(bg_rgb)``


@dataclass
class HTBSROutput:
    """Per-frame SR results. Masks are the fusion alphas (computed at 256²) upsampled bilinearly to 512²."""

    image: torch.Tensor  #: ``[B, 3, 512, 512]`` final frame, clamped to [-1, 1]
    head_mask: torch.Tensor  #: ``[B, 1, 512, 512]`` head alpha (ray weights, > threshold → 1), in [0, 1]
    torso_mask: torch.Tensor  #: ``[B, 1, 512, 512]`` ``person - head`` = min(torso alpha, 1 - head), in [0, 1]
    person_mask: torch.Tensor  #: ``[B, 1, 512, 512]`` ``clamp(torso alpha + head alpha)`` (fg over bg), in [0, 1]
    occlusion: torch.Tensor  #: ``[B, 1, 64, 64]`` torso-model ``occlusion`` (official output, unused)
    occlusion_2: torch.Tensor  #: ``[B, 1, 256, 256]`` torso alpha from the torso model


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.01)


class HTBSR(nn.Module):
    """Official ``SuperresolutionHybrid8XDC_Warp`` with ``htbsr_head_weight_fuse_mode='v2'`` (inference).

    State-dict keys (relative to ``superresolution.``): ``block0.*``, ``block1.*``, ``torso_model.*``,
    ``torso_encoder.0.*``, ``bg_encoder.{0,2,4}.*``, ``head_torso_alpha_predictor.{0,2,4}.*`` (unused by v2,
    present for strict loading), ``fuse_head_torso_convs.{0,2}.*``, ``head_torso_block.*``,
    ``fuse_fg_bg_convs.{0,2,4}.*``.
    """

    def __init__(self, cfg: HTBSRConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or HTBSRConfig()
        width, mid = cfg.channels, cfg.output_resolution // 2
        self.block0 = SynthesisBlock(cfg.feature_channels, width, cfg.w_dim, resolution=mid)
        self.block1 = SynthesisBlock(width, cfg.final_channels, cfg.w_dim, resolution=cfg.output_resolution)
        self.torso_model = WarpBasedTorsoModel(cfg.torso)
        self.torso_encoder = nn.Sequential(nn.Conv2d(cfg.torso.hidden_channels, width, 1))
        hid = cfg.encoder_channels
        self.bg_encoder = nn.Sequential(nn.Conv2d(3, hid, 3, padding=1), _lrelu(),
                                        nn.Conv2d(hid, width, 3, padding=1), _lrelu(),
                                        nn.Conv2d(width, width, 3, padding=1))
        # Only the official v3 fusion mode runs this predictor; v2 checkpoints still carry its weights.
        self.head_torso_alpha_predictor = nn.ModuleDict({"0": nn.Conv2d(7, 32, 3, padding=1),
                                                         "2": nn.Conv2d(32, 32, 3, padding=1),
                                                         "4": nn.Conv2d(32, 1, 3, padding=1)})
        self.fuse_head_torso_convs = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), _lrelu(),
                                                   nn.Conv2d(width, width, 3, padding=1))
        self.head_torso_block = SynthesisBlockNoUp(width, width, cfg.w_dim, resolution=mid)
        self.fuse_fg_bg_convs = nn.Sequential(nn.Conv2d(2 * width, hid, 1), _lrelu(),
                                              nn.Conv2d(hid, width, 3, padding=1), _lrelu(),
                                              nn.Conv2d(width, width, 3, padding=1))

    def fold_constant_styles(self) -> None:
        """Precompute the all-ones-style weights of every modulated conv (call after loading weights).

        The folded weights are non-persistent buffers: the state dict is unchanged, they follow ``.to()``,
        and loading new weights drops them (the next call recomputes them on the fly until folded again).
        """
        for block in (self.block0, self.head_torso_block, self.block1):
            block.fold_constant_styles()

    def prepare_reference(self, ref_torso_img: torch.Tensor, bg_img: torch.Tensor, segmap: torch.Tensor,
                          kp_source: torch.Tensor) -> HTBSRReference:
        """Per-portrait work, done once.

        Args:
            ref_torso_img: ``[R, 3, 512, 512]`` torso reference (head removed, neck in-painted) in [-1, 1].
            bg_img: ``[R, 3, 512, 512]`` background in [-1, 1].
            segmap: ``[R, 6, 512, 512]`` one-hot classes (0 bg, 1 hair, 2 body-skin, 3 face, 4 clothes, 5 other).
            kp_source: ``[R, 68, 3]`` source-image 3DMM landmarks, xy in [-1, 1], z 0.
        """
        mid = self.cfg.output_resolution // 2
        torso = self.torso_model.prepare_reference(resize(ref_torso_img, mid), segmap, kp_source)
        bg_rgb = resize(bg_img, mid)
        return HTBSRReference(torso, bg_rgb, self.bg_encoder(bg_rgb))

    def render_frames(self, feature_image: torch.Tensor, weights_img: torch.Tensor, kp_driving: torch.Tensor,
                      reference: HTBSRReference, ws: torch.Tensor | None = None,
                      head_threshold: float | None = None) -> HTBSROutput:
        """Per-frame super-resolution and compositing for B frames.

        Args:
            feature_image: ``[B, 32, 128, 128]`` unclamped volume-rendered features (channels 0-2 = raw RGB).
            weights_img: ``[B, 1, 128, 128]`` accumulated ray weights in [0, 1] (the head alpha).
            kp_driving: ``[B, 68, 3]`` driving landmarks, xy in [-1, 1], z 0.
            reference: from :meth:`prepare_reference` (batch 1 shared by all frames, or B).
            ws: optional ``[B, n, w_dim]`` style vectors (the last one drives every block, as officially).
                ``None`` = the official constant all-ones styles (folded weights if folded).
            head_threshold: overrides ``cfg.head_threshold``.
        """
        cfg = self.cfg
        if feature_image.shape[1:] != (cfg.feature_channels, cfg.input_resolution, cfg.input_resolution):
            raise ValueError(f"feature_image must be [B,{cfg.feature_channels},{cfg.input_resolution},"
                             f"{cfg.input_resolution}], got {list(feature_image.shape)}")
        threshold = cfg.head_threshold if head_threshold is None else head_threshold
        mid = cfg.output_resolution // 2
        w = None if ws is None else ws[:, -1:].expand(-1, 3, -1)

        raw_rgb = feature_image[:, :3]
        alpha = resize(weights_img, mid)
        x, rgb = self.block0(feature_image, raw_rgb, w)
        torso = self.torso_model(reference.torso, kp_driving, resize(raw_rgb, mid), alpha)

        rgb = rgb * alpha + torso.rgb * (1 - alpha)
        x_torso = self.torso_encoder(torso.hidden)
        x = self.fuse_head_torso_convs(torch.cat([x * alpha, x_torso * (1 - alpha)], dim=1))
        x, rgb = self.head_torso_block(x, rgb, w)

        head = torch.where(alpha > threshold, torch.ones_like(alpha), alpha)
        person = (resize(torso.occlusion_2, mid) + head).clamp(0, 1)
        rgb = rgb * person + reference.bg_rgb * (1 - person)
        background = reference.bg_features * (1 - person)
        x = self.fuse_fg_bg_convs(torch.cat([x * person, background], dim=1))
        _, rgb = self.block1(x, rgb, w)

        def upsample(mask: torch.Tensor) -> torch.Tensor:
            return F.interpolate(mask, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

        return HTBSROutput(image=rgb.clamp(-1, 1), head_mask=upsample(head), torso_mask=upsample(person - head),
                           person_mask=upsample(person), occlusion=torso.occlusion, occlusion_2=torso.occlusion_2)

    def forward(self, feature_image: torch.Tensor, weights_img: torch.Tensor, ref_torso_img: torch.Tensor,
                bg_img: torch.Tensor, segmap: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                ws: torch.Tensor | None = None) -> HTBSROutput:
        """The official single call (reference and frame together); shapes as in the two-stage methods."""
        reference = self.prepare_reference(ref_torso_img, bg_img, segmap, kp_source)
        return self.render_frames(feature_image, weights_img, kp_driving, reference, ws=ws)
