"""ComfyUI runtime services for the nodes: device placement, progress with previews, interrupts, temp files.

Everything that touches ``comfy.*`` lives here so the node modules stay declarative adapters. Models are
kept on ComfyUI's offload device between runs and moved to the compute device only while a node (or the
terminal node pulling a lazy chain) uses them, after asking ComfyUI to free that much memory.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterable, Iterator

import torch

from r3dp_core.defaults import FRAME_SIZE


def compute_device() -> torch.device:
    import comfy.model_management as mm

    return mm.get_torch_device()


def offload_device() -> torch.device:
    import comfy.model_management as mm

    return mm.unet_offload_device()


def node_dtype(precision: str, device: torch.device) -> torch.dtype:
    """A precision widget's dtype on ComfyUI's ``device``: the core's rule (``r3dp_core.device.resolve_dtype``)
    with ComfyUI's verdict on fp16 for ``auto``; fp16 on a CPU falls back to fp32 (with a warning)."""
    import comfy.model_management as mm

    from r3dp_core.device import resolve_dtype

    fp16_safe = None if device.type == "cpu" else bool(mm.should_use_fp16(device))
    return resolve_dtype(precision, device, fp16_safe=fp16_safe, refuse_cpu_fp16=False)


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (called between chunks)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    total = 0
    for module in modules:
        total += sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return total


@contextlib.contextmanager
def on_compute_device(*modules: torch.nn.Module | None) -> Iterator[torch.device]:
    """Move ``modules`` to the compute device for the duration of the block, then back to the offload device.

    ComfyUI is first asked to evict other packs' models until these weights fit; an out-of-memory error during
    a pull then halves the chunk (``iterate_chunks``).
    """
    import comfy.model_management as mm

    device = compute_device()
    present = [m for m in modules if m is not None]
    if device.type != "cpu":
        mm.free_memory(module_bytes(present), device)
    for module in present:
        _move(module, device)
    try:
        yield device
    finally:
        parking = offload_device()
        for module in present:
            _move(module, parking)
        if device.type != "cpu":
            mm.soft_empty_cache()


def _move(module: torch.nn.Module, device: torch.device) -> None:
    """``module.to(device)`` in the inference mode its tensors were made in: ComfyUI runs nodes in inference mode,
    and a module moved in the other mode ends up with unusable parameters, or (the BFM, built outside inference
    mode for the 3DMM fits) with buffers that can no longer take part in autograd."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    with torch.inference_mode(first is not None and first.is_inference()):
        module.to(device)


def frame_to_pil(frame: torch.Tensor):
    """``[3,H,W]`` in [-1,1] or ``[H,W,3]`` in [0,1] → a PIL RGB image (for previews)."""
    from PIL import Image

    from r3dp_core.images import to_comfy_image, unit_to_uint8

    frame = frame.detach().float().cpu()
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = to_comfy_image(frame[None])[0]
    return Image.fromarray(unit_to_uint8(frame).numpy())


class Progress:
    """A ComfyUI progress bar over ``total`` frames that can show the latest frame in the node."""

    def __init__(self, total: int, node_id: str | None = None):
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.total = total

    def update(self, done: int, preview: torch.Tensor | None = None) -> None:
        image = ("JPEG", frame_to_pil(preview), FRAME_SIZE) if preview is not None else None
        self._bar.update_absolute(done, self.total, image)


def node_host(node_id: str | None):
    """The ``Host`` of a node's core call (``r3dp_core.host``): the models on ComfyUI's compute device
    for the call (:func:`on_compute_device`), ComfyUI's progress bar of the node with the latest frame as preview,
    and Cancel honoured between steps."""
    from r3dp_core.host import Host

    bar: list[Progress] = []

    def progress(done: int, total: int, preview: torch.Tensor | None = None) -> None:
        if not bar or bar[0].total != total:
            bar[:] = [Progress(total, node_id)]
        bar[0].update(done, preview)

    return Host(place=on_compute_device, progress=progress, should_stop=check_interrupt)


def temp_file(suffix: str) -> tuple[str, str, str]:
    """A fresh path in ComfyUI's temp folder → ``(full_path, filename, subfolder)``."""
    import folder_paths

    subfolder = "r3dp"
    directory = os.path.join(folder_paths.get_temp_directory(), subfolder)
    os.makedirs(directory, exist_ok=True)
    filename = f"r3dp_{uuid.uuid4().hex[:12]}{suffix}"
    return os.path.join(directory, filename), filename, subfolder


def write_preview_video(frames: torch.Tensor, fps: float, audio: dict | None) -> dict:
    """Encode IMAGE frames ``[T,H,W,3]`` (+ audio) to an H.264/AAC mp4 in the temp folder for the in-node player.

    Returns the ``{"filename", "subfolder", "type"}`` entry the web extension fetches through ``/view``.
    """
    from r3dp_core.images import unit_to_uint8
    from r3dp_core.video_io import VideoWriter

    path, filename, subfolder = temp_file(".mp4")
    height, width = frames.shape[1:3]
    even = frames[:, : height - height % 2, : width - width % 2]
    with VideoWriter(path, fps=fps, audio=audio, crf=23) as writer:
        for start in range(0, even.shape[0], 32):
            chunk = unit_to_uint8(even[start:start + 32]).numpy()
            writer.write(chunk)
    return {"filename": filename, "subfolder": subfolder, "type": "temp", "format": "video/mp4",
            "frame_rate": float(fps)}
