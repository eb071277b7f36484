"""Image→Triplane: from a photo (or a batch of photos, one avatar each) to an animatable tri-plane avatar."""

from __future__ import annotations

import torch

from r3dp_core import defaults
from r3dp_core.errors import InputError
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.types import Avatar

from . import _types as t
from ._api import comfy_io
from .loaders import Segmenter, VideoModel


class ImageToTriplane(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_ImageToTriplane",
            display_name="Image → Triplane",
            category=f"{t.CATEGORY}/avatar",
            description="Prepares each portrait once: finds the faces on the photo as it is, cuts a square around the "
                        "chosen one so the face is large enough, 3DMM fit from MediaPipe "
                        "landmarks, head/torso/background segmentation, torso in-painting, background plate, and the "
                        "canonical tri-plane of the head. An IMAGE batch gives one avatar per photo.",
            inputs=[
                comfy_io.Image.Input("image", tooltip="The portrait(s): a photo with one clearly visible face; a "
                                                      "batch animates several portraits with the same motion."),
                t.VideoModel.Input("video_model", tooltip="From Load Video Model."),
                t.Bfm.Input("bfm", tooltip="From Load BFM 3DMM (for the 3DMM fit)."),
                t.Landmarker.Input("landmarker", tooltip="From Load Face Landmarker."),
                t.Segmenter.Input("segmenter", tooltip="From Load Selfie Segmenter, or Segmentation from Masks."),
                comfy_io.Float.Input("min_face_area", default=defaults.MIN_FACE_AREA, min=0.05, max=0.8, step=0.01,
                                     tooltip="The square cut around the face is sized so the face covers at least "
                                             f"this fraction of it (official {defaults.MIN_FACE_AREA:g}; 0.15-0.5 are "
                                             "sensible)."),
                comfy_io.Combo.Input("face", options=["largest", *(str(i) for i in range(8))], default="largest",
                                     tooltip="Which face to animate when the photo shows several: the largest "
                                             "(faces under 1 % of the photo are never picked as largest), or the "
                                             "n-th counting from the left (0 = leftmost). Two Image → Triplane "
                                             "nodes on one photo (face 0, face 1) and chained Paste Back nodes "
                                             "make both people talk."),
            ],
            outputs=[t.Avatar.Output(display_name="avatar"),
                     comfy_io.Image.Output(display_name="source_crop"),
                     comfy_io.Image.Output(display_name="head_image"),
                     comfy_io.Mask.Output(display_name="head_mask")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, video_model: VideoModel, bfm: FaceGeometry, landmarker, segmenter: Segmenter,
                min_face_area: float, face: str):
        from r3dp_core.geometry.segmentation import HEAD_CLASSES
        from r3dp_core.images import comfy_to_uint8, to_comfy_image
        from r3dp_core.pipeline.face import FaceKit
        from r3dp_core.pipeline.stages import make_avatar, prepare_source

        from ._runtime import Progress, check_interrupt, on_compute_device

        if image.ndim != 4 or image.shape[0] == 0:
            raise InputError(f"Image→Triplane needs an IMAGE batch [N,H,W,C], got {tuple(image.shape)}.")
        face_choice = face if face == "largest" else int(face)
        kit = FaceKit(bfm, landmarker_path=landmarker, segmenter_path=segmenter.path)
        progress = Progress(image.shape[0] * 2, cls.hidden.unique_id)
        avatars = []
        for index in range(image.shape[0]):
            check_interrupt()
            u8 = comfy_to_uint8(image[index])
            try:
                prepared = prepare_source(u8, kit, min_face_area=min_face_area, face=face_choice,
                                          masks=segmenter.masks_for(index))
            except InputError as exc:
                raise InputError(f"Image→Triplane, portrait {index + 1} of {image.shape[0]}: {exc}") from None
            progress.update(2 * index + 1)
            with on_compute_device(video_model.module), torch.inference_mode():
                avatar = make_avatar(video_model.module, prepared)
            avatar = Avatar(**{**avatar.to("cpu").__dict__, "planes": avatar.planes.detach().float().cpu()})
            avatars.append(avatar)
            progress.update(2 * index + 2, preview=avatar.image[0])
        crops = torch.cat([to_comfy_image(a.image) for a in avatars])
        heads = torch.cat([to_comfy_image(a.head_image) for a in avatars])
        masks = torch.cat([a.segmap[:, list(HEAD_CLASSES)].sum(1) for a in avatars]).clamp(0, 1).float()
        return comfy_io.NodeOutput(avatars, crops, heads, masks)


NODES = [ImageToTriplane]
