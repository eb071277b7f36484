"""What the stage nodes add to the per-portrait streams of the core: previews computed only when connected.

The R3DP_PNCC / R3DP_PLANES / R3DP_RENDER sockets carry ``r3dp_core.pipeline.portrait_streams.PortraitStreams``:
lazy frame sources, one per portrait. A stage node only wires a new stream on top of the previous one (cheap,
nothing rendered), so a long clip never holds every frame's SECC images, tri-planes or renders. The terminal
node (HTB-SR Composite, or a stage whose preview IMAGE output is connected) pulls chunks through the node's host
(``_runtime.node_host``): the models go to the compute device for the pull, ComfyUI's progress bar advances with
the latest frame as preview, and Cancel is honoured between chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

PREVIEW_CHUNK_TOOLTIP = "Frames per chunk when the preview is computed (lower it if the GPU runs out of memory)."


def output_is_linked(node_cls, slot: int) -> bool:
    """Whether any node of the running prompt reads output ``slot`` of this node (previews are computed only then)."""
    dynprompt = node_cls.hidden.dynprompt
    me = node_cls.hidden.unique_id
    if dynprompt is None or me is None:
        return True
    for node_id in dynprompt.all_node_ids():
        for value in dynprompt.get_node(node_id).get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(me) and value[1] == slot:
                return True
    return False


def linked_preview(node_cls, slot: int, streams, chunk_size: int,
                   select: Callable[[Any], torch.Tensor] = lambda x: x) -> torch.Tensor | None:
    """All frames of every portrait as one IMAGE batch (``portrait_streams.stream_images``) when output ``slot``
    of the node is connected, else None (nothing is computed)."""
    from r3dp_core.pipeline.portrait_streams import stream_images

    from ._runtime import node_host

    if not output_is_linked(node_cls, slot):
        return None
    return stream_images(streams, chunk_size, select, node_host(node_cls.hidden.unique_id))
