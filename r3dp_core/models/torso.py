"""Warping torso model of Real3D-Portrait's HTB-SR (official ``WarpBasedTorsoModelMediaPipe``, version v2).

The torso is not rendered in 3-D: a face-vid2vid style network turns the reference torso image into a
3-D feature volume, warps it with a motion field driven by four face keypoints (jaw ends, chin, nose
bridge) and decodes the warped volume into a 256² torso image, a 64-channel feature map for the
super-resolution fusion, and a torso alpha (``occlusion_2``).

Work is split the way a video needs it: :meth:`WarpBasedTorsoModel.prepare_reference` runs once per
source portrait (appearance volume, torso mask, compressed motion features); :meth:`WarpBasedTorsoModel.forward`
runs per frame and is batched over frames. A reference of batch 1 is shared by every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers.facev2v import ConvBlock, DownBlock, ResBlock, UpBlock


@dataclass
class TorsoConfig:
    """Architecture of the torso model; defaults are the official checkpoint's (48.4 M parameters)."""

    #: segmap classes that form the torso (2 body-skin, 4 clothes); appended to the RGB input as alphas.
    body_classes: tuple[int, ...] = (2, 4)
    #: indices into the 68 3DMM landmarks that drive the warp (jaw-left end, chin, jaw-right end, nose bridge).
    keypoint_ids: tuple[int, ...] = (0, 8, 16, 27)
    #: side of the square torso input/output images; the feature volume is a quarter of it.
    resolution: int = 256
    appearance_channels: tuple[int, int, int] = (64, 128, 256)
    num_appearance_res_blocks: int = 6
    #: the appearance volume is ``[feature_channels, feature_depth, res/4, res/4]``.
    feature_channels: int = 32
    feature_depth: int = 16
    compressed_channels: int = 4
    #: encoder widths of the motion hourglass (each level halves H and W); the decoder mirrors them.
    hourglass_channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    hourglass_out_channels: int = 32
    head_channels: int = 32
    num_head_res_blocks: int = 3
    fuser_channels: int = 32
    generator_channels: int = 256
    num_generator_res_blocks: int = 6
    #: generator upsampling widths; the last one is the width of ``deformed_torso_hid``.
    generator_up_channels: tuple[int, ...] = (128, 64)
    occlusion_hidden_channels: int = 32
    heatmap_variance: float = 0.01
    #: kernel of the max-pool dilation of the 64² body mask that gates the appearance volume.
    mask_dilation: int = 7

    @property
    def hidden_channels(self) -> int:
        return self.generator_up_channels[-1]


def coordinate_grid_3d(depth: int, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """``[D, H, W, 3]`` normalised coordinates in [-1, 1], last dim ordered (x along W, y along H, z along D)."""
    def axis(n: int) -> torch.Tensor:
        return 2 * torch.arange(n, device=device, dtype=dtype) / (n - 1) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(keypoints: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """``exp(-|g - kp|² / (2 variance))`` per keypoint: ``[B,K,3]``, grid ``[D,H,W,3]`` → ``[B,K,D,H,W]``."""
    diff = grid - keypoints[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / variance)


def dilate(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Grey-value dilation (max filter) with reflect padding: ``[B,1,H,W]`` → same shape."""
    pad = kernel_size // 2
    return F.max_pool2d(F.pad(mask, (pad, pad, pad, pad), mode="reflect"), kernel_size, stride=1)


class AppearanceFeatureExtractor(nn.Module):
    """Torso RGB + body alphas ``[B, 3+A, R, R]`` → 3-D appearance volume ``[B, C, D, R/4, R/4]``."""

    def __init__(self, cfg: TorsoConfig):
        super().__init__()
        c0, c1, c2 = cfg.appearance_channels
        self.feature_channels, self.feature_depth = cfg.feature_channels, cfg.feature_depth
        self.in_conv = ConvBlock("CNA", 3 + len(cfg.body_classes), c0, 7)
        self.down = nn.Sequential(DownBlock(c0, c1), DownBlock(c1, c2))
        self.mid_conv = nn.Conv2d(c2, cfg.feature_channels * cfg.feature_depth, 1)
        self.res = nn.Sequential(*(ResBlock(cfg.feature_channels, dim=3)
                                   for _ in range(cfg.num_appearance_res_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_conv(self.down(self.in_conv(x)))
        x = x.view(x.shape[0], self.feature_channels, self.feature_depth, *x.shape[2:])
        return self.res(x)


class MotionField(NamedTuple):
    """Output of :class:`MotionFieldEstimator`."""

    deformation: torch.Tensor  #: ``[B, D, H, W, 3]`` sampling grid (x, y, z) into the source volume, ~[-1, 1]
    occlusion: torch.Tensor  #: ``[B, 1, H, W]`` in (0, 1); computed by the official model but not used
    occlusion_2: torch.Tensor  #: ``[B, 1, H, W]`` in (0, 1); coarse torso alpha, refined afterwards


class MotionFieldEstimator(nn.Module):
    """Keypoint-driven dense 3-D motion (face-vid2vid), conditioned on the rendered head.

    The motion is a softmax-weighted mix of K+1 candidate flows (identity and one translation per
    keypoint, ``g - kp_d + kp_s``), weighted by an hourglass over heatmap differences and warped source
    features, fused with an encoding of the rendered head image and its alpha.
    """

    def __init__(self, cfg: TorsoConfig):
        super().__init__()
        self.variance = cfg.heatmap_variance
        num_motions = len(cfg.keypoint_ids) + 1
        hourglass_in = num_motions * (cfg.compressed_channels + 1)
        self.compress = nn.Conv3d(cfg.feature_channels + len(cfg.body_classes), cfg.compressed_channels, 1)
        widths = (hourglass_in, *cfg.hourglass_channels)
        self.down = nn.Sequential(*(DownBlock(a, b, dim=3) for a, b in zip(widths[:-1], widths[1:])))
        up_widths = (*cfg.hourglass_channels[::-1], cfg.hourglass_out_channels)
        self.up = nn.Sequential(*(UpBlock(a, b, dim=3) for a, b in zip(up_widths[:-1], up_widths[1:])))
        self.tgt_head_encoder = nn.Sequential(ConvBlock("CNA", 4, cfg.head_channels, 7),
                                              *(ResBlock(cfg.head_channels) for _ in range(cfg.num_head_res_blocks)))
        fuser_in = hourglass_in + cfg.hourglass_out_channels + cfg.head_channels
        self.tgt_head_fuser = nn.Conv3d(fuser_in, cfg.fuser_channels, 7, padding=3)
        self.mask_conv = nn.Conv3d(cfg.fuser_channels, num_motions, 7, padding=3)
        self.occlusion_conv = nn.Conv2d(cfg.fuser_channels * cfg.feature_depth, 1, 7, padding=3)
        self.occlusion_conv2 = nn.Conv2d(cfg.fuser_channels * cfg.feature_depth, 1, 7, padding=3)

    def forward(self, compressed: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                head_rgb: torch.Tensor, head_alpha: torch.Tensor) -> MotionField:
        """Motion for B frames.

        Args:
            compressed: ``[1 or B, c, D, H, W]`` compressed source volume (``TorsoReference.compressed``).
            kp_source, kp_driving: ``[1 or B, K, 3]`` and ``[B, K, 3]``, xy in [-1, 1], z 0.
            head_rgb: ``[B, 3, R, R]`` rendered head, upsampled, unclamped (~[-1, 1]).
            head_alpha: ``[B, 1, R, R]`` its accumulated ray weights in [0, 1].
        """
        batch = kp_driving.shape[0]
        _, channels, depth, height, width = compressed.shape
        grid = coordinate_grid_3d(depth, height, width, device=compressed.device, dtype=compressed.dtype)

        kp_source = kp_source.expand(batch, -1, -1)
        heatmap = (keypoint_gaussians(kp_driving, grid, self.variance)
                   - keypoint_gaussians(kp_source, grid, self.variance))
        heatmap = F.pad(heatmap, (0, 0, 0, 0, 0, 0, 1, 0)).unsqueeze(2)  # identity motion gets a zero map

        shifted = grid - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        sparse_motion = torch.cat([grid.expand(batch, 1, -1, -1, -1, -1), shifted], dim=1)
        num_motions = sparse_motion.shape[1]

        sources = compressed.expand(batch, -1, -1, -1, -1).unsqueeze(1).expand(-1, num_motions, -1, -1, -1, -1)
        warped = F.grid_sample(sources.reshape(batch * num_motions, channels, depth, height, width),
                               sparse_motion.reshape(batch * num_motions, depth, height, width, 3),
                               align_corners=True)
        warped = warped.view(batch, num_motions, channels, depth, height, width)
        motion_input = torch.cat([heatmap, warped], dim=2).flatten(1, 2)

        x = torch.cat([motion_input, self.up(self.down(motion_input))], dim=1)
        head = torch.cat([head_rgb, head_alpha], dim=1)
        half = (head.shape[-2] // 2, head.shape[-1] // 2)
        head = F.interpolate(head, size=half, mode="bilinear", align_corners=False)
        head = F.interpolate(self.tgt_head_encoder(head), size=(height, width), mode="bilinear",
                             align_corners=False)
        x = torch.cat([x, head.unsqueeze(2).expand(-1, -1, depth, -1, -1)], dim=1)
        x = self.tgt_head_fuser(x)

        mask = torch.softmax(self.mask_conv(x), dim=1)
        deformation = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)
        x = x.flatten(1, 2)
        return MotionField(deformation, torch.sigmoid(self.occlusion_conv(x)), torch.sigmoid(self.occlusion_conv2(x)))


class Generator(nn.Module):
    """Warps the appearance volume and decodes it: ``[B,C,D,H,W]`` → rgb ``[B,3,4H,4W]``, hidden ``[B,64,4H,4W]``.

    All ConvBlock convolutions are spectral-normalised (stored u, v); ``mid_conv`` and ``out_conv`` are plain.
    """

    def __init__(self, cfg: TorsoConfig):
        super().__init__()
        width = cfg.generator_channels
        self.in_conv = ConvBlock("CNA", cfg.feature_channels * cfg.feature_depth, width, 3, spectral_norm=True,
                                 leaky=True)
        self.mid_conv = nn.Conv2d(width, width, 1)
        self.res = nn.Sequential(*(ResBlock(width, spectral_norm=True) for _ in range(cfg.num_generator_res_blocks)))
        up_widths = (width, *cfg.generator_up_channels)
        self.up = nn.Sequential(*(UpBlock(a, b, spectral_norm=True) for a, b in zip(up_widths[:-1], up_widths[1:])))
        self.out_conv = nn.Conv2d(cfg.hidden_channels, 3, 7, padding=3)

    def forward(self, features: torch.Tensor, deformation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features ``[1 or B, C, D, H, W]``, deformation ``[B, D, H, W, 3]`` → (rgb, hidden)."""
        batch = deformation.shape[0]
        features = features.expand(batch, -1, -1, -1, -1)
        warped = F.grid_sample(features, deformation, align_corners=True, padding_mode="border")
        hidden = self.up(self.res(self.mid_conv(self.in_conv(warped.flatten(1, 2)))))
        return self.out_conv(hidden), hidden


@dataclass
class TorsoReference:
    """Everything the torso branch needs from the source portrait, computed once (batch 1 or B)."""

    features: torch.Tensor  #: ``[R, C, D, H, W]`` appearance volume gated by the dilated body mask
    compressed: torch.Tensor  #: ``[R, c, D, H, W]`` ``compress(cat[features, body alphas])``
    keypoints: torch.Tensor  #: ``[R, K, 3]`` the driving subset of the source landmarks


class TorsoOutput(NamedTuple):
    """Per-frame output of :class:`WarpBasedTorsoModel`."""

    rgb: torch.Tensor  #: ``[B, 3, R, R]`` warped torso image (~[-1, 1], unclamped)
    hidden: torch.Tensor  #: ``[B, 64, R, R]`` ``deformed_torso_hid``, input of the SR torso encoder
    occlusion: torch.Tensor  #: ``[B, 1, R/4, R/4]`` unused by the fusion (official output)
    occlusion_2: torch.Tensor  #: ``[B, 1, R, R]`` torso alpha in (0, 1)
    motion: MotionField  #: the raw motion-estimator outputs (``occlusion_2`` before refinement)


class WarpBasedTorsoModel(nn.Module):
    """Official ``WarpBasedTorsoModelMediaPipe`` (v2, ``torso_inp_mode='rgb_alpha'``).

    Keys: ``appearance_extractor.*``, ``motion_field_estimator.*``, ``deform_based_generator.*``,
    ``occlusion_2_predictor.{0,2,4}.*``.
    """

    def __init__(self, cfg: TorsoConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TorsoConfig()
        self.appearance_extractor = AppearanceFeatureExtractor(cfg)
        self.motion_field_estimator = MotionFieldEstimator(cfg)
        self.deform_based_generator = Generator(cfg)
        hid = cfg.occlusion_hidden_channels
        self.occlusion_2_predictor = nn.Sequential(
            nn.Conv2d(cfg.hidden_channels + 1, hid, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hid, hid, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hid, 1, 3, padding=1), nn.Sigmoid())

    def select_keypoints(self, landmarks: torch.Tensor) -> torch.Tensor:
        """``[B, 68, 3]`` 3DMM landmarks → ``[B, K, 3]`` driving keypoints."""
        return landmarks[:, list(self.cfg.keypoint_ids)]

    def prepare_reference(self, torso_rgb: torch.Tensor, segmap: torch.Tensor,
                          kp_source: torch.Tensor) -> TorsoReference:
        """Frame-invariant part of the torso branch.

        Args:
            torso_rgb: ``[R, 3, res, res]`` reference torso image in [-1, 1] (already resized to ``res``).
            segmap: ``[R, 6, Hs, Ws]`` one-hot MediaPipe classes (any size, usually 512).
            kp_source: ``[R, 68, 3]`` source landmarks, xy in [-1, 1], z 0.
        """
        cfg = self.cfg
        body = segmap[:, list(cfg.body_classes)].to(torso_rgb.dtype)
        body_full = F.interpolate(body, size=torso_rgb.shape[-2:], mode="bilinear", align_corners=False)
        features = self.appearance_extractor(torch.cat([torso_rgb, body_full], dim=1))
        body_small = F.interpolate(body, size=features.shape[-2:], mode="bilinear", align_corners=False)
        # Only the (dilated) body region may carry appearance into the warp.
        features = features * dilate(body_small.sum(1, keepdim=True), cfg.mask_dilation).unsqueeze(2)
        body_volume = body_small.unsqueeze(2).expand(-1, -1, features.shape[2], -1, -1)
        compressed = self.motion_field_estimator.compress(torch.cat([features, body_volume], dim=1))
        return TorsoReference(features, compressed, self.select_keypoints(kp_source))

    def forward(self, reference: TorsoReference, kp_driving: torch.Tensor, head_rgb: torch.Tensor,
                head_alpha: torch.Tensor) -> TorsoOutput:
        """Per-frame torso for B frames.

        Args:
            reference: from :meth:`prepare_reference` (batch 1 = shared by all frames, or B).
            kp_driving: ``[B, 68, 3]`` driving landmarks, xy in [-1, 1], z 0.
            head_rgb: ``[B, 3, res, res]`` upsampled raw head rendering (unclamped).
            head_alpha: ``[B, 1, res, res]`` upsampled accumulated ray weights in [0, 1].
        """
        motion = self.motion_field_estimator(reference.compressed, reference.keypoints,
                                             self.select_keypoints(kp_driving), head_rgb, head_alpha)
        rgb, hidden = self.deform_based_generator(reference.features, motion.deformation)
        coarse_alpha = F.interpolate(motion.occlusion_2, size=hidden.shape[-2:], mode="bilinear", align_corners=False)
        occlusion_2 = self.occlusion_2_predictor(torch.cat([hidden, coarse_alpha], dim=1))
        return TorsoOutput(rgb, hidden, motion.occlusion, occlusion_2, motion)
