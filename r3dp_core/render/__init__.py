"""Tri-plane volume rendering (EG3D-style): camera -> rays -> box limits -> tri-plane samples -> decoder ->
coarse/importance compositing. The decoder is a network with weights; it lives in ``models.decoder`` and is
passed in."""

from .camera import split_camera
from .importance import sample_importance, sample_pdf
from .ray_box import ray_box_intersection, ray_limits
from .ray_marcher import march_rays
from .ray_sampler import sample_rays
from .renderer import RenderConfig, RenderNoise, RenderOutput, render_ray_batch, render_triplanes
from .triplane import FIXED_PLANE_AXES, PLANE_AXES, PLANE_LAYOUTS, sample_triplanes

__all__ = [
    "FIXED_PLANE_AXES", "PLANE_AXES", "PLANE_LAYOUTS", "RenderConfig", "RenderNoise", "RenderOutput",
    "march_rays", "ray_box_intersection", "ray_limits", "render_ray_batch", "render_triplanes",
    "sample_importance", "sample_pdf", "sample_rays", "sample_triplanes", "split_camera",
]
