"""r3dp_core: Real3D-Portrait in plain PyTorch (no ComfyUI imports), usable as a library.

Stages: ``models`` (Image→Triplane, Motion Adapter, HTB-SR, audio-to-motion), ``render`` (triplane
volume rendering), ``geometry`` (3DMM, fitting, SECC/PNCC, cameras, segmentation), ``audio`` (features),
``checkpoint`` (safe loading), ``parity`` (numerical parity with the official modules).
"""

__version__ = "0.1.0"
