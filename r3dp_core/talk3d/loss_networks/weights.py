"""Reading the loss networks' official files safely and checking them strictly against the official key layouts.

Each model-file slot (``r3dp_core.model_files``) maps to the network it fills and to the way its file is laid out:

=================== ============================== ===========================================================
slot                file                           layout
=================== ============================== ===========================================================
``lpips_alexnet``   ``alexnet-owt-7be5be79.pth``   torchvision AlexNet: ``features.*`` used, ``classifier.*`` ignored
``lpips_alex``      LPIPS v0.1 ``alex.pth``        ``lin0.model.1.weight`` … ``lin4.model.1.weight``
``arcface_ir_se50`` ``model_ir_se50.pth``          ``input_layer.*``, ``body.N.*``, ``output_layer.*``
``wav2lip_syncnet`` ``lipsync_expert.pth``         ``{"state_dict": {"[module.]face_encoder.*", ...}, ...}``
=================== ============================== ===========================================================

Pickled files are read with ``torch.load(weights_only=True)`` (nothing in them runs); ``.safetensors`` files are
read as such. Every key and shape must match (BatchNorm's ``num_batches_tracked`` counters, absent from files saved
by old PyTorch versions and unused in inference, are added when missing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import model_files
from ...errors import ModelFileError
from .arcface import IdentityEncoder
from .lpips import LPIPS
from .syncnet import SyncNet

LPIPS_ALEXNET = "lpips_alexnet"
LPIPS_HEADS = "lpips_alex"
ARCFACE = "arcface_ir_se50"
SYNCNET = "wav2lip_syncnet"
LOSS_NETWORK_SLOTS = (LPIPS_ALEXNET, LPIPS_HEADS, ARCFACE, SYNCNET)

#: torchvision AlexNet's classifier: in the official file, never used by LPIPS.
ALEXNET_CLASSIFIER_KEYS = frozenset(f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias"))


def read_weights(path: Path) -> Mapping[str, Any]:
    """The top-level mapping of a ``.pth``/``.pt`` (``weights_only``) or ``.safetensors`` file.

    Raises:
        ModelFileError: unreadable, damaged, carrying code, or not a mapping.
    """
    from ...checkpoint import _load_safetensors, _torch_load_safely

    if path.suffix == ".safetensors":
        return _load_safetensors(path)[0]
    raw = _torch_load_safely(path)
    if not isinstance(raw, Mapping):
        raise ModelFileError(f"{path} holds a {type(raw).__name__}, not a state dict; it is not a loss-network "
                             "weight file.")
    return raw


def _tensors(mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in mapping.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def _alexnet_layout(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in _tensors(raw).items() if key not in ALEXNET_CLASSIFIER_KEYS}


def _syncnet_layout(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    inner = raw.get("state_dict") if isinstance(raw.get("state_dict"), Mapping) else raw
    # the official loader strips DataParallel's "module." prefix
    return {key.removeprefix("module."): value for key, value in _tensors(inner).items()}


def _view(**modules: nn.Module) -> nn.Module:
    """A module holding ``modules`` under the given names (shared, not copied): loading into it loads into them."""
    view = nn.Module()
    for name, module in modules.items():
        view.add_module(name, module)
    return view


@dataclass(frozen=True)
class SlotLayout:
    """How a slot's file maps onto its network: the tensors of the file that are used (``extract``), the network
    (``build``) and the part of it the file fills, under the file's own key names (``part``)."""

    key: str
    what: str                                             # the official file, in words
    extract: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]]
    build: Callable[[], nn.Module]
    part: Callable[[nn.Module], nn.Module]

    @property
    def spec(self) -> model_files.ModelFile:
        return model_files.BY_KEY[self.key]


LAYOUTS = {
    LPIPS_ALEXNET: SlotLayout(LPIPS_ALEXNET, "torchvision's ImageNet AlexNet (alexnet-owt-7be5be79.pth)",
                              _alexnet_layout, LPIPS, lambda lpips: _view(features=lpips.features)),
    LPIPS_HEADS: SlotLayout(LPIPS_HEADS, "the LPIPS v0.1 AlexNet heads (alex.pth, keys lin0.model.1.weight …)",
                            _tensors, LPIPS,
                            lambda lpips: _view(**{f"lin{i}": head for i, head in enumerate(lpips.heads)})),
    ARCFACE: SlotLayout(ARCFACE, "the ArcFace IR-SE50 backbone of pSp/e4e (model_ir_se50.pth)",
                        _tensors, IdentityEncoder, lambda network: network),
    SYNCNET: SlotLayout(SYNCNET, "Wav2Lip's lip-sync expert (lipsync_expert.pth, SyncNet_color)",
                        _syncnet_layout, SyncNet, lambda network: network),
}


@cache
def expected_shapes(slot: str) -> dict[str, tuple[int, ...]]:
    """Key → shape the file of ``slot`` must hold, from the network built on the meta device (no memory)."""
    layout = LAYOUTS[slot]
    with torch.device("meta"):
        part = layout.part(layout.build())
    return {key: tuple(value.shape) for key, value in part.state_dict().items()}


def _with_batchnorm_counters(state: dict[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> None:
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            stem = key.removesuffix("num_batches_tracked")
            if stem + "running_mean" in state:
                state[key] = torch.tensor(0, dtype=torch.long)


def mismatch(slot: str, state: Mapping[str, torch.Tensor]) -> str:
    """A sentence naming how ``state`` differs from the official layout of ``slot`` (empty when it matches)."""
    from ...checkpoint import compare_keys

    class _Shape:   # compare_keys reads ``.shape`` of the expected entries
        def __init__(self, shape):
            self.shape = shape

    expected = {key: _Shape(shape) for key, shape in expected_shapes(slot).items()}
    found = compare_keys(expected, state)
    return found.describe() if found else ""


def slot_state(slot: str, raw: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The file's tensors in the network's key layout, and how they differ from it (empty when they match)."""
    state = LAYOUTS[slot].extract(raw)
    _with_batchnorm_counters(state, expected_shapes(slot))
    return state, mismatch(slot, state)


def load_slot(slot: str, path: Path, network: nn.Module) -> None:
    """Load the file of ``slot`` at ``path`` into ``network`` (its part of it), strictly.

    Raises:
        ModelFileError: naming the file, what it should be and where the right one comes from.
    """
    layout = LAYOUTS[slot]
    state, problem = slot_state(slot, read_weights(path))
    if problem:
        raise ModelFileError(
            f"{path} is not {layout.what}: {problem}. It is another model or version; put the official file "
            f"there ({layout.spec.how_to_get()}), or remove it and personalisation runs without that loss term.")
    layout.part(network).load_state_dict(state, strict=True)


def identify_file(path: Path) -> tuple[str | None, str]:
    """The loss-network slot a file fills, judged by its keys and shapes: ``(slot, "")``; ``(None, reason)`` when its
    name is an official loss-network file name but its weights differ; ``(None, "")`` when it is none of them (or
    unreadable: the caller's own checks report that)."""
    try:
        raw = read_weights(path)
    except ModelFileError:
        return None, ""
    for slot in LOSS_NETWORK_SLOTS:
        state, problem = slot_state(slot, raw)
        if state and not problem:
            return slot, ""
    named = next((slot for slot in LOSS_NETWORK_SLOTS
                  if Path(model_files.BY_KEY[slot].relpath).name.lower() == path.name.lower()), None)
    if named is not None:
        return None, f"it is named like {LAYOUTS[named].what} but its weights differ ({slot_state(named, raw)[1]})"
    return None, ""
