"""Portrait work reused across jobs: one prepared avatar per photo, computed once.

Preparing a portrait (crop, landmarks, 3DMM fit, segmentation, torso and background plates, canonical
tri-plane) costs about as much as rendering a short clip; a batch that animates one presenter with many voice
clips pays it once. The key is the content of everything ``prepare_source`` reads — the decoded photo, the
background, the masks, every option passed to it — plus the video model (its device and precision), so a
cached avatar is exactly the one the job would have computed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from .stages import make_avatar, prepare_source
from .types import Avatar, PortraitMasks


def _digest(value, hasher) -> None:
    """Feed one ``prepare_source`` argument into ``hasher`` (arrays and tensors by content)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous().numpy()
    if isinstance(value, np.ndarray):
        hasher.update(f"array{value.dtype}{value.shape}".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, PortraitMasks):
        for part in (value.head, value.body, value.threshold):
            _digest(part, hasher)
    else:
        hasher.update(repr(value).encode())


def portrait_key(model: torch.nn.Module, image, **options) -> str:
    """Content hash of a portrait as ``prepare_avatar`` would prepare it with ``model``."""
    param = next(model.parameters())
    hasher = hashlib.sha256(f"{id(model)}|{param.device}|{param.dtype}".encode())
    _digest(image, hasher)
    for name in sorted(options):
        hasher.update(name.encode())
        _digest(options[name], hasher)
    return hasher.hexdigest()


def prepare_avatar(model: torch.nn.Module, kit, image, **options) -> Avatar:
    """``prepare_source(image, kit, **options)`` then ``make_avatar``: the whole per-photo work of a job."""
    return make_avatar(model, prepare_source(image, kit, **options))


class PortraitCache:
    """The last ``capacity`` prepared avatars by content (least recently used dropped first).

    ``prepared`` counts the portraits actually computed and ``reused`` the jobs served from the cache. A cached
    avatar is shared by the jobs that use it: the stages only read it.
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.prepared = 0
        self.reused = 0
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()

    def avatar(self, model: torch.nn.Module, kit, image, log=None, **options) -> Avatar:
        """The avatar of ``image`` prepared with ``options`` (``prepare_source``'s keywords), from the cache
        when this exact portrait was prepared before."""
        key = portrait_key(model, image, **options)
        if key in self._avatars:
            self._avatars.move_to_end(key)
            self.reused += 1
            if log is not None:
                log("reusing the prepared portrait (same photo and options as an earlier job)")
            return self._avatars[key]
        avatar = prepare_avatar(model, kit, image, **options)
        self.prepared += 1
        if self.capacity > 0:
            self._avatars[key] = avatar
            while len(self._avatars) > self.capacity:
                self._avatars.popitem(last=False)
        return avatar
