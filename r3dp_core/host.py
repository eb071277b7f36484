"""What the program running a stage lends it: where the models compute, progress, and a way to stop.

The CLI loads its models on their device once and runs a stage as it is (:data:`HERE`: the models stay where
they are, nothing is reported, nothing stops a stage). ComfyUI keeps the models on its offload device between
nodes: a node's host (``nodes/_runtime.node_host``) moves them to ComfyUI's compute device for the call (after
asking ComfyUI to free that much memory), shows progress with the latest frame in the node, and raises on Cancel.
The stages themselves are the same code in both.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch


@contextlib.contextmanager
def in_place(*modules: torch.nn.Module | None) -> Iterator[torch.device]:
    """Leave ``modules`` where they are; yields the device of the first one that holds a tensor (else the CPU)."""
    device = torch.device("cpu")
    for module in modules:
        first = None if module is None else next(itertools.chain(module.parameters(), module.buffers()), None)
        if first is not None:
            device = first.device
            break
    yield device


class StopRequested(Exception):
    """What a host's ``should_stop`` raises to stop a stage at its next step boundary (a stage that can save its
    work, such as persona training, saves it first). ComfyUI's Cancel raises its own exception, which stages treat
    the same way."""


@dataclass(frozen=True)
class Host:
    """The services a stage asks of the program that runs it.

    Attributes:
        place: ``place(*modules)`` is a context manager that has ``modules`` (None entries skipped) on the compute
            device inside the block and yields that device.
        progress: ``progress(done, total, preview)`` after each step; ``preview`` is the latest frame (``[3,H,W]``
            in [-1,1] or ``[H,W,3]`` in [0,1]) or None.
        should_stop: called before each step; it raises to stop the stage.
    """

    place: Callable[..., AbstractContextManager[torch.device]] = in_place
    progress: Callable[[int, int, torch.Tensor | None], None] | None = None
    should_stop: Callable[[], None] | None = None

    def report(self, done: int, total: int, preview: torch.Tensor | None = None) -> None:
        if self.progress is not None:
            self.progress(done, total, preview)

    def check(self) -> None:
        if self.should_stop is not None:
            self.should_stop()


#: The host of a program that loaded its models where they compute (the CLI): nothing moves, nothing is
#: reported, nothing stops a stage.
HERE = Host()


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """A text progress bar for terminal hosts: ``[#####.....]`` with ``done / total`` of ``width`` filled."""
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}]"
