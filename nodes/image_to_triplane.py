"""Image→Triplane: from a photo (or a batch of photos, one avatar each) to an animatable tri-plane avatar."""

from __future__ import annotations

import torch

from r3dp_core import defaults
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.options import GENERATE

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
                t.Bfm.Input("bfm", display_name="face_geometry",
                            tooltip="The face geometry (BFM 3DMM) from Load BFM 3DMM, for the 3DMM fit."),
                t.Landmarker.Input("landmarker", tooltip="From Load Face Landmarker."),
                t.Segmenter.Input("segmenter", tooltip="From Load Selfie Segmenter, or Segmentation from Masks."),
                comfy_io.Float.Input("min_face_area", **GENERATE["min_face_area"].widget_kwargs(), step=0.01,
                                     tooltip="The square cut around the face is sized so the face covers at least "
                                             f"this fraction of it (official {defaults.MIN_FACE_AREA:g}; 0.15-0.5 are "
                                             "sensible)."),
                comfy_io.Combo.Input("face", options=["largest", *(str(i) for i in range(8))],
                                     **GENERATE["face"].widget_kwargs(),
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
        from r3dp_core.geometry.framing import parse_face_choice
        from r3dp_core.pipeline.avatars import prepare_portraits
        from r3dp_core.pipeline.face import FaceKit

        from ._runtime import node_host

        kit = FaceKit(bfm, landmarker_path=landmarker, segmenter_path=segmenter.path)
        out = prepare_portraits(image, video_model.module, kit, min_face_area=min_face_area,
                                face=parse_face_choice(face), masks=segmenter.masks,
                                host=node_host(cls.hidden.unique_id))
        return comfy_io.NodeOutput(out.avatars, out.crops, out.heads, out.head_masks)


NODES = [ImageToTriplane]
