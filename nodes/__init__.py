"""r3dp's ComfyUI nodes (V3 API): thin adapters over ``r3dp_core``.

One module per group: ``loaders`` (model files), ``avatar`` (Image→Triplane), ``motion`` (Audio/Video→3DMM),
``camera`` (Head Pose), ``render`` (PNCC Builder, Motion Adapter, Volume Render), ``composite`` (HTB-SR
Composite, Background Loader), ``io`` (audio loader, Save/Load Motion and Avatar), ``all_in_one``
(Talking Portrait). Every class subclasses ``comfy_io.ComfyNode`` directly with a literal ``R3DP_`` node id,
which is what ComfyUI-Manager's scanner needs to find them.
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

from . import all_in_one, avatar, camera, composite, io, loaders, motion, render  # noqa: E402

NODE_CLASSES = [*loaders.NODES, *avatar.NODES, *motion.NODES, *camera.NODES, *render.NODES, *composite.NODES,
                *io.NODES, *all_in_one.NODES]


class R3DPExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODE_CLASSES)
