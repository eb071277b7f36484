"""Talk3D's EG3D "fixed tri-plane" generator (official ``training.triplane.TriPlaneGenerator`` as VIVE3D's
``EG3D_Generator(construct_G=True)`` builds it), inference only.

Parts (state-dict prefixes in brackets; 30,662,136 parameters):

* ``backbone.mapping`` — StyleGAN2 mapping network, 2 layers: ``(z [B,512], c [B,25]) → ws [B,14,512]``, with
  truncation towards ``w_avg``. The condition ``c`` is the frontal camera (:meth:`TriPlaneGenerator.
  conditioning_camera`), multiplied by ``c_scale``.
* ``backbone.synthesis`` — StyleGAN2 synthesis at 256² with 96 output channels (constant input, noise
  ``'const'``): ``ws → P [B,96,256,256]``, the tri-plane in EG3D's raw layout (plane k = channels 32k…32k+31,
  no flips). Talk3D computes the identity plane ``P_ID`` once from the identity's ``w``.
* ``decoder`` — the OSG decoder MLP (:class:`~r3dp_core.models.decoder.OSGDecoder`, same keys as
  Real3D-Portrait's).
* ``superresolution`` — :class:`~.eg3d_superresolution.SuperresolutionHybrid8XDC`, driven by the real ``ws``.
* ``dataset_label_std`` ``[25]`` — a buffer VIVE3D registers after construction; no forward pass reads it.

Rendering goes through r3dp's own renderer (:mod:`r3dp_core.render`) configured for Talk3D: the fixed EG3D plane
axes (x,y), (x,z), (z,y), fixed near/far 2.25/3.3 instead of the box slab test, 48 + 48 samples at 128², no clamp
of ``image_raw`` or ``image``. The frame is ``render(P_ID + ΔP)`` at a LookAt camera (:mod:`.eg3d_camera`);
``ΔP`` is the Deltaplane U-Net's output (the ``delta_planes`` argument of :meth:`TriPlaneGenerator.render`).

The renderer's two random draws (stratified jitter, importance uniforms) are the ``noise`` argument, as for
Real3D-Portrait (:class:`~r3dp_core.render.RenderNoise`). The official renderer takes its depth-clamp range over a
call of up to four frames; r3dp takes it per frame (the same whenever every ray has some weight).

Precision: see :mod:`.eg3d_superresolution` (official fp16 SR on CUDA only; r3dp follows its device policy
through :func:`prepare_for_inference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..device import Precision
from ..errors import InputError, R3DPError
from ..models.decoder import OSGDecoder, OSGDecoderConfig
from ..models.layers.stylegan2 import StyleGAN2Generator
from ..models.layers.triplane_layout import NO_FLIPS, channels_to_triplanes
from ..render import RenderConfig, RenderNoise, RenderOutput, render_triplanes
from .eg3d_camera import LookAtCameraConfig, lookat_cameras
from .eg3d_superresolution import EG3DSuperresolutionConfig, SuperresolutionHybrid8XDC

#: The 25 constants VIVE3D registers as ``dataset_label_std`` (the constructor's value; checkpoints overwrite it).
VIVE3D_DATASET_LABEL_STD = (0.0664, 0.0295, 0.2720, 0.7343, 0.0279, 0.0178, 0.1280, 0.3457, 0.2721, 0.1274, 0.0679,
                            0.1832, 0.0, 0.0, 0.0, 0.0, 0.0079, 0.0, 0.0, 0.0, 0.0079, 0.0, 0.0, 0.0, 0.0)
#: Sub-modules run under autocast when :func:`prepare_for_inference` gets a low-precision dtype (officially the
#: fp16 part on CUDA); the backbone (fp32 officially: ``num_fp16_res=0``), decoder and renderer stay float32.
LOW_PRECISION_STAGES = ("superresolution",)


def talk3d_render_config() -> RenderConfig:
    """Talk3D's rendering settings (VIVE3D's ``rendering_kwargs`` with ``neural_rendering_resolution`` 128)."""
    return RenderConfig(resolution=128, num_coarse_samples=48, num_fine_samples=48, box_warp=1.0,
                        plane_axes="eg3d_fixed", ray_range=(2.25, 3.3), clamp_raw_rgb=False)


@dataclass
class EG3DGeneratorConfig:
    """Every setting of the generator; the defaults are the hard-coded ones of VIVE3D's ``EG3D_Generator``
    (``G_kwargs``) plus Talk3D's camera (``main.py``), so ``EG3DGeneratorConfig()`` builds a model whose
    state-dict keys and shapes are those of the official ``ffhq-fixed-triplane512-128`` generator."""

    z_dim: int = 512
    """Latent z width."""
    w_dim: int = 512
    """Style w width."""
    c_dim: int = 25
    """Width of the mapping network's condition (an EG3D camera: cam2world 16 + intrinsics 9)."""
    mapping_layers: int = 2
    """FC layers of the mapping network (``mapping_kwargs.num_layers``)."""
    mapping_lr_multiplier: float = 0.01
    """Learning-rate multiplier of the mapping FCs: runtime weight gain ``0.01/sqrt(in)``, bias gain 0.01."""
    plane_resolution: int = 256
    """Side of the tri-plane (the backbone's output resolution)."""
    plane_channels: int = 32
    """Channels per plane; the backbone emits ``3 * plane_channels`` (96)."""
    channel_base: int = 32768
    """Backbone block width ``min(channel_base // res, channel_max)``: 512 up to 64², 256 at 128², 128 at 256²."""
    channel_max: int = 512
    """Cap of the backbone block widths."""
    conv_clamp: float | None = None
    """Backbone activation clamp (official ``conv_clamp``: None, since ``num_fp16_res=0``)."""
    c_scale: float = 1.0
    """Factor applied to the mapping condition (``rendering_kwargs.c_scale``)."""
    c_gen_conditioning_zero: bool = False
    """Replace the mapping condition by zeros (``rendering_kwargs.c_gen_conditioning_zero``)."""
    backbone_noise_mode: str = "const"
    """Noise of the backbone's layers: ``'const'`` as Talk3D calls ``backbone.synthesis`` (trainer.py:88)."""
    superresolution_noise_mode: str = "none"
    """Noise of the SR layers (``rendering_kwargs.superresolution_noise_mode``)."""
    decoder: OSGDecoderConfig = field(default_factory=OSGDecoderConfig)
    """OSG decoder sizes: 32 → 64 (softplus) → 1 density + 32 features (``decoder_lr_mul`` 1)."""
    render: RenderConfig = field(default_factory=talk3d_render_config)
    """Renderer settings (:func:`talk3d_render_config`: fixed plane axes, near/far 2.25/3.3, 48+48 samples,
    128², no clamp of ``image_raw``)."""
    superresolution: EG3DSuperresolutionConfig = field(default_factory=EG3DSuperresolutionConfig)
    """SR sizes (32 → 256 ch at 256² → 128 ch at 512²; ``sr_num_fp16_res`` 4, i.e. clamp ±256). Renders of
    another resolution are resized to its ``input_resolution`` (128), as officially."""
    camera: LookAtCameraConfig = field(default_factory=LookAtCameraConfig)
    """Camera rig: radius 2.7, pivot (0, 0.05, 0.2), focal length 3.6."""

    def __post_init__(self):
        if self.decoder.in_features != self.plane_channels:
            raise ValueError(f"the decoder reads {self.decoder.in_features} channels, planes have "
                             f"{self.plane_channels}")
        if self.superresolution.channels != self.decoder.out_features:
            raise ValueError(f"the SR expects {self.superresolution.channels} feature channels, the decoder makes "
                             f"{self.decoder.out_features}")


def tiny_config() -> EG3DGeneratorConfig:
    """A reduced configuration of the same architecture (16² planes of 4 channels, 16² render with 6+6 samples,
    64² output, about 10 k parameters) for tests: every code path of the full generator, little of its cost."""
    return EG3DGeneratorConfig(
        z_dim=16, w_dim=16, plane_resolution=16, plane_channels=4, channel_base=64, channel_max=16,
        decoder=OSGDecoderConfig(in_features=4, hidden_features=8, out_features=8),
        render=RenderConfig(resolution=16, num_coarse_samples=6, num_fine_samples=6, plane_axes="eg3d_fixed",
                            ray_range=(2.25, 3.3), clamp_raw_rgb=False),
        superresolution=EG3DSuperresolutionConfig(channels=8, input_resolution=16, img_resolution=64,
                                                  block0_channels=8, block1_channels=4, w_dim=16))


@dataclass
class EG3DRenderOutput:
    """One rendered batch of N frames (R = the neural rendering resolution, 128 officially)."""

    image: torch.Tensor  #: ``[N, 3, 512, 512]`` super-resolved frame, about [-1, 1], unclamped (official ``image``)
    image_raw: torch.Tensor  #: ``[N, 3, R, R]`` raw rendered RGB (unclamped for Talk3D, see ``clamp_raw_rgb``)
    feature_image: torch.Tensor  #: ``[N, 32, R, R]`` rendered features, unclamped (the SR's input)
    image_depth: torch.Tensor  #: ``[N, 1, R, R]`` expected depth
    weights_image: torch.Tensor  #: ``[N, 1, R, R]`` accumulated opacity (sum of the ray weights)


class TriPlaneGenerator(nn.Module):
    """The EG3D fixed-tri-plane generator (module docstring). Keys: ``backbone.{mapping,synthesis}.*``,
    ``decoder.net.{0,2}.*``, ``superresolution.block{0,1}.*``, ``dataset_label_std``."""

    def __init__(self, config: EG3DGeneratorConfig | None = None):
        super().__init__()
        self.config = cfg = config or EG3DGeneratorConfig()
        self.backbone = StyleGAN2Generator(cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.plane_resolution,
                                           3 * cfg.plane_channels, mapping_layers=cfg.mapping_layers,
                                           mapping_lr_multiplier=cfg.mapping_lr_multiplier,
                                           channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                           conv_clamp=cfg.conv_clamp)
        self.decoder = OSGDecoder(cfg.decoder)
        self.superresolution = SuperresolutionHybrid8XDC(cfg.superresolution)
        label_std = VIVE3D_DATASET_LABEL_STD if cfg.c_dim == len(VIVE3D_DATASET_LABEL_STD) else (0.0,) * cfg.c_dim
        self.register_buffer("dataset_label_std", torch.tensor(label_std))

    @property
    def num_ws(self) -> int:
        """Style rows of the backbone (14 at 256²)."""
        return self.backbone.num_ws

    @property
    def device(self) -> torch.device:
        return self.dataset_label_std.device

    def cameras(self, yaw: float | Sequence[float] | torch.Tensor = 0.0,
                pitch: float | Sequence[float] | torch.Tensor = 0.0) -> torch.Tensor:
        """EG3D cameras ``[N, 25]`` (float32, on the model's device) at (yaw, pitch) radians (VIVE3D
        ``get_camera_parameters``); see :func:`~.eg3d_camera.lookat_cameras`."""
        return lookat_cameras(yaw, pitch, self.config.camera, device=self.device)

    def conditioning_camera(self) -> torch.Tensor:
        """The frontal camera ``[1, 25]`` that conditions the mapping network (VIVE3D ``conditioning_params``)."""
        return self.cameras(0.0, 0.0)

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """``z [B, z_dim]`` → ``ws [B, num_ws, w_dim]`` (VIVE3D ``get_ws``).

        Args:
            z: latents (any float dtype; computed in the model's dtype).
            c: conditions ``[B or 1, c_dim]``; the frontal :meth:`conditioning_camera` when None.
            truncation_psi: 1 = no truncation; else the rows are pulled towards ``w_avg``.
            truncation_cutoff: rows truncated (all when None; VIVE3D passes 14 = all).
        """
        z = z.to(self.device)
        c = self.conditioning_camera() if c is None else c.to(self.device)
        c = c.expand(z.shape[0], -1)
        if self.config.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.config.c_scale, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff)

    def synthesize_planes(self, ws: torch.Tensor, noise_mode: str | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """``ws [B, num_ws, w_dim]`` → tri-plane ``[B, 96, 256, 256]`` in EG3D's raw layout (``P_ID`` for the
        identity's ws). ``noise_mode``: the config's ``backbone_noise_mode`` (``'const'``) when None."""
        noise_mode = noise_mode or self.config.backbone_noise_mode
        return self.backbone.synthesis(ws.to(self.device), noise_mode=noise_mode, generator=generator)

    def render_features(self, planes: torch.Tensor, camera: torch.Tensor, *, delta_planes: torch.Tensor | None = None,
                        noise: RenderNoise | None = None, generator: torch.Generator | None = None,
                        max_rays_per_chunk: int | None = None) -> RenderOutput:
        """The volume-rendering half of :meth:`render`: ``planes + delta_planes`` → 128² :class:`RenderOutput`
        (float32 or wider; arguments as in :meth:`render`)."""
        expected = 3 * self.config.plane_channels
        if planes.ndim != 4 or planes.shape[1] != expected:
            raise InputError(f"planes must be [N, {expected}, H, W] (EG3D raw layout), got {list(planes.shape)}")
        if delta_planes is not None:
            if delta_planes.shape[1:] != planes.shape[1:]:
                raise InputError(f"delta_planes {list(delta_planes.shape)} do not match planes {list(planes.shape)}")
            dtype = torch.promote_types(torch.promote_types(planes.dtype, delta_planes.dtype), torch.float32)
            planes = planes.to(dtype) + delta_planes.to(planes.device, dtype)
        triplanes = channels_to_triplanes(planes, flips=NO_FLIPS)
        return render_triplanes(triplanes, self.decoder, camera.to(planes.device), self.config.render, noise=noise,
                                generator=generator, max_rays_per_chunk=max_rays_per_chunk)

    def super_resolve(self, rendered: RenderOutput, ws: torch.Tensor) -> torch.Tensor:
        """The SR half of :meth:`render`: ``[N, 3, 512, 512]`` from a render and the styles ``ws``."""
        return self.superresolution(rendered.rgb, rendered.feature_image, ws,
                                    noise_mode=self.config.superresolution_noise_mode)

    def render(self, planes: torch.Tensor, ws: torch.Tensor, camera: torch.Tensor, *,
               delta_planes: torch.Tensor | None = None, noise: RenderNoise | None = None,
               generator: torch.Generator | None = None, max_rays_per_chunk: int | None = None) -> EG3DRenderOutput:
        """Render N frames of ``planes + delta_planes`` and super-resolve them (official ``synthesis`` with
        ``cache_backbone=True``: the stored identity plane plus the Deltaplane U-Net's ``ΔP``).

        Args:
            planes: ``[1 or N, 96, H, W]`` identity tri-plane ``P_ID`` (raw layout); a batch of 1 serves every frame.
            ws: ``[1 or N, num_ws, w_dim]`` (or ``[., 3, w_dim]``, ``[., w_dim]``) styles of the SR; only the last row
                is used.
            camera: ``[N, 25]`` EG3D cameras (:meth:`cameras`).
            delta_planes: ``[N or 1, 96, H, W]`` ``ΔP`` added to the planes (all channels, no mask), or None.
            noise: the renderer's two random draws (:class:`~r3dp_core.render.RenderNoise`), drawn with
                ``generator`` when None.
            max_rays_per_chunk: the renderer's memory bound (its device default when None).

        Returns:
            :class:`EG3DRenderOutput`; ``image`` and ``image_raw`` are not clamped.
        """
        out = self.render_features(planes, camera, delta_planes=delta_planes, noise=noise, generator=generator,
                                   max_rays_per_chunk=max_rays_per_chunk)
        return EG3DRenderOutput(image=self.super_resolve(out, ws), image_raw=out.raw_rgb(self.config.render),
                                feature_image=out.feature_image, image_depth=out.depth, weights_image=out.weights)

    def forward(self, planes: torch.Tensor, ws: torch.Tensor, camera: torch.Tensor, **kwargs) -> EG3DRenderOutput:
        """:meth:`render`."""
        return self.render(planes, ws, camera, **kwargs)


def prepare_for_inference(model: TriPlaneGenerator,
                          precision: Precision | torch.dtype | None = None) -> TriPlaneGenerator:
    """Eval mode, no gradients and, for a low-precision dtype, autocast of :data:`LOW_PRECISION_STAGES` (in place).

    ``precision``: float32 (or None) keeps full precision; bfloat16/float16 run the SR under autocast on the
    model's device type and hand back float32. The renderer and backbone stay float32 (r3dp's device policy,
    :mod:`r3dp_core.device`). Call once per model.
    """
    from ..performance import wrap_forward

    dtype = precision.dtype if isinstance(precision, Precision) else (precision or torch.float32)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise R3DPError(f"the EG3D generator runs float32, bfloat16 or float16, not {dtype}.")
    if getattr(model, "_r3dp_optimized", False):
        raise R3DPError("This generator was already prepared for inference; build a fresh one to change settings.")
    model.eval().requires_grad_(False)
    device_type = model.device.type
    if dtype != torch.float32:
        if not torch.amp.is_autocast_available(device_type):
            raise R3DPError(f"{dtype} autocast is not available on {device_type}; use float32 there.")
        for name in LOW_PRECISION_STAGES:
            wrap_forward(model.get_submodule(name), device_type, dtype)
    model._r3dp_optimized = True
    return model
