"""Image→Triplane over a batch of photos: one avatar per photo (the Image → Triplane node).

Each photo goes through ``stages.prepare_source`` (faces found on the photo as it is, the square around the
chosen face, landmarks, 3DMM fit, segmentation, torso and background plates) and ``stages.make_avatar`` (the
canonical tri-plane, on the model's compute device). The avatars come back on the CPU with a float32 tri-plane,
with the crops, head images and head masks as IMAGE/MASK batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import defaults
from ..errors import InputError
from ..geometry.segmentation import HEAD_CLASSES, segmap_mask
from ..host import HERE, Host
from ..images import comfy_to_uint8, to_comfy_image
from . import stages
from .face import FaceKit
from .types import Avatar, PortraitMasks


@dataclass
class PreparedPortraits:
    """The avatars of a batch of photos and what to look at.

    Attributes:
        avatars: one ``Avatar`` per photo, on the CPU, its tri-plane float32.
        crops: ``[N,512,512,3]`` float in [0,1], the square each avatar animates.
        heads: ``[N,512,512,3]`` float in [0,1], the head-only image Image→Triplane saw.
        head_masks: ``[N,512,512]`` float in {0,1}, the head classes of each avatar's segmentation.
    """

    avatars: list[Avatar]
    crops: torch.Tensor
    heads: torch.Tensor
    head_masks: torch.Tensor


def prepare_portraits(images: torch.Tensor, model: torch.nn.Module, kit: FaceKit, *,
                      min_face_area: float = defaults.MIN_FACE_AREA, face: str | int = "largest",
                      masks: PortraitMasks | None = None, host: Host = HERE) -> PreparedPortraits:
    """One avatar per photo of an IMAGE batch.

    Args:
        images: ``[N,H,W,C]`` float in [0,1] (C ≥ 3; RGB is read), any size.
        model: the video model (its Image→Triplane), placed by ``host`` for the call.
        kit: the face models (landmarker, segmenter unless ``masks`` are given, the 3DMM).
        min_face_area: the face covers at least this fraction of the square cut around it.
        face: ``'largest'`` or an index, left to right (``framing.parse_face_choice`` reads one from text).
        masks: head/body masks in the photos' coordinates instead of the segmenter (``PortraitMasks.portrait``:
            one per photo, or the last for the rest).
        host: where the model computes; progress (two steps per photo, the crop as preview) and cancel.

    Raises:
        InputError: not an IMAGE batch; a photo without a usable face or head (naming the photo).
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise InputError(f"Image→Triplane needs an IMAGE batch [N,H,W,C], got {tuple(images.shape)}.")
    count = images.shape[0]
    avatars = []
    with host.place(model):
        for index in range(count):
            host.check()
            photo = comfy_to_uint8(images[index])
            try:
                prepared = stages.prepare_source(photo, kit, min_face_area=min_face_area, face=face,
                                                 masks=None if masks is None else masks.portrait(index))
            except InputError as exc:
                raise InputError(f"Image→Triplane, portrait {index + 1} of {count}: {exc}") from None
            host.report(2 * index + 1, 2 * count)
            with torch.inference_mode():
                avatar = stages.make_avatar(model, prepared)
            avatar = Avatar(**{**avatar.to("cpu").__dict__, "planes": avatar.planes.detach().float().cpu()})
            avatars.append(avatar)
            host.report(2 * index + 2, 2 * count, avatar.image[0])
    return PreparedPortraits(avatars=avatars, crops=torch.cat([to_comfy_image(a.image) for a in avatars]),
                             heads=torch.cat([to_comfy_image(a.head_image) for a in avatars]),
                             head_masks=torch.cat([segmap_mask(a.segmap, HEAD_CLASSES) for a in avatars]))
