"""r3dp's ComfyUI nodes (V3 API): thin adapters over ``r3dp_core``.

One module per stage: ``loaders`` (model files), ``image_to_triplane``, ``audio_to_motion``, ``video_to_motion``,
``head_pose``, ``pncc``, ``motion_adapter``, ``volume_render``, ``htbsr_composite``, ``paste_back``, ``background``,
``io`` (audio loader, Save/Load Motion and Avatar), ``all_in_one`` (Talking Portrait) and ``persona`` (Talk3D
personas: loader, speech drive, super-resolution, paste-back into the training video, Personalise). Every class
subclasses ``comfy_io.ComfyNode`` directly with a literal ``R3DP_`` node id, which is what ComfyUI-Manager's scanner
needs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# Inside ComfyUI the pack folder is not on sys.path; its bundled r3dp_core must still import by name.
if importlib.util.find_spec("r3dp_core") is None:
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from . import _paths  # noqa: E402
from ._api import ComfyExtension  # noqa: E402

_paths.register_folders()

from . import (  # noqa: E402
    all_in_one,
    audio_to_motion,
    background,
    head_pose,
    htbsr_composite,
    image_to_triplane,
    io,
    loaders,
    motion_adapter,
    paste_back,
    persona,
    pncc,
    video_to_motion,
    volume_render,
)

NODE_CLASSES = [*loaders.NODES, *image_to_triplane.NODES, *audio_to_motion.NODES, *video_to_motion.NODES,
                *head_pose.NODES, *pncc.NODES, *motion_adapter.NODES, *volume_render.NODES, *htbsr_composite.NODES,
                *paste_back.NODES, *background.NODES, *io.NODES, *all_in_one.NODES, *persona.NODES]


class R3DPExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODE_CLASSES)
