"""Model loader nodes: dropdowns of the files found in every ``real3dportrait`` model folder.

The files are read by ``r3dp_core.pipeline.loaders`` (the CLI's loaders); these nodes choose the file, park the
model on ComfyUI's offload device and decide its precision once (``_runtime.node_dtype``: the core's
``device.resolve_dtype`` with ComfyUI's verdict on fp16).

The expected official file name is always offered (first) even when absent, so a shared workflow validates
and the node can say exactly which file is missing, where it was looked for and where to get it. Loaded
models wait on ComfyUI's offload device; the nodes that compute move them to the GPU while they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from r3dp_core import defaults
from r3dp_core.pipeline.face import FaceGeometry
from r3dp_core.pipeline.types import PortraitMasks

from . import _paths
from . import _types as t
from ._api import comfy_io

PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
_PRECISION_TOOLTIP = ("Compute precision on the GPU: auto = fp16 where ComfyUI deems it safe, else fp32. Weights "
                      "stay fp32 and only the convolution networks run in fp16/bf16 (autocast); the volume "
                      "renderer and compositing stay fp32. On the CPU, auto is fp32 and bf16 is used only when "
                      "chosen (about 2x faster there); fp16 falls back to fp32.")


@dataclass
class VideoModel:
    """The secc2plane_torso network (Image→Triplane, Motion Adapter, decoder, HTB-SR), prepared by
    ``r3dp_core.performance.optimize_for_inference`` for the compute device and ``dtype``."""

    module: torch.nn.Module
    dtype: torch.dtype
    name: str


@dataclass
class AudioModel:
    """The audio-to-motion VAE (audio2secc_vae)."""

    module: torch.nn.Module
    name: str


@dataclass
class Hubert:
    """HuBERT-large (transformers ``HubertModel``) and the dtype it computes in."""

    module: torch.nn.Module
    dtype: torch.dtype
    name: str


@dataclass
class Segmenter:
    """MediaPipe's 6-class selfie segmenter (a file path) or masks from elsewhere."""

    path: Path | None = None
    masks: PortraitMasks | None = field(default=None, repr=False)

    def masks_for(self, index: int) -> PortraitMasks | None:
        """The masks of portrait ``index`` (see ``PortraitMasks.portrait``), or None."""
        return None if self.masks is None else self.masks.portrait(index)


class LoadVideoModel(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadVideoModel",
            display_name="Load Video Model (secc2plane_torso)",
            category=f"{t.CATEGORY}/loaders",
            description="Loads Real3D-Portrait's video model (Image→Triplane, Motion Adapter, renderer, HTB-SR) from "
                        "models/real3dportrait: the official .ckpt with its config.yaml, or a converted .safetensors.",
            inputs=[
                comfy_io.Combo.Input("ckpt_name", options=_paths.weight_file_options("video_model"),
                                     tooltip="secc2plane_torso/model_ckpt_steps_100000.ckpt (official) or a "
                                             "converted .safetensors, inside models/real3dportrait."),
                comfy_io.Combo.Input("precision", options=PRECISIONS, default="auto", tooltip=_PRECISION_TOOLTIP),
            ],
            outputs=[t.VideoModel.Output(display_name="video_model")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, precision: str):
        from r3dp_core.performance import optimize_for_inference
        from r3dp_core.pipeline.loaders import load_video_model

        from ._runtime import node_dtype, on_compute_device

        module = load_video_model(_paths.resolve_model_file("video_model", ckpt_name), fold=False)
        # Optimised where it will run: the low-precision stages record the compute device's autocast type.
        with on_compute_device(module) as device:
            dtype = node_dtype(precision, device)
            optimize_for_inference(module, dtype)
        return comfy_io.NodeOutput(VideoModel(module, dtype, ckpt_name))


class LoadAudioModel(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadAudioModel",
            display_name="Load Audio Model (audio2secc)",
            category=f"{t.CATEGORY}/loaders",
            description="Loads Real3D-Portrait's audio-to-motion VAE (audio2secc_vae) from models/real3dportrait.",
            inputs=[
                comfy_io.Combo.Input("ckpt_name", options=_paths.weight_file_options("audio_model"),
                                     tooltip="audio2secc_vae/model_ckpt_steps_400000.ckpt (official) or a converted "
                                             ".safetensors, inside models/real3dportrait."),
            ],
            outputs=[t.AudioModel.Output(display_name="audio_model")],
        )

    @classmethod
    def execute(cls, ckpt_name: str):
        from r3dp_core.pipeline.loaders import load_audio_model

        from ._runtime import offload_device

        model = load_audio_model(_paths.resolve_model_file("audio_model", ckpt_name), offload_device())
        return comfy_io.NodeOutput(AudioModel(model, ckpt_name))


class LoadHubert(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadHubert",
            display_name="Load HuBERT",
            category=f"{t.CATEGORY}/loaders",
            description="Loads HuBERT-large (facebook/hubert-large-ls960-ft, a transformers folder) for the speech "
                        "features of Audio→3DMM. Nothing is downloaded.",
            inputs=[
                comfy_io.Combo.Input("model_folder", options=_paths.folder_options("hubert"),
                                     tooltip="A folder with config.json and the weights, e.g. "
                                             "hubert/hubert-large-ls960-ft inside models/real3dportrait."),
                comfy_io.Combo.Input("precision", options=PRECISIONS, default="auto", tooltip=_PRECISION_TOOLTIP),
            ],
            outputs=[t.Hubert.Output(display_name="hubert")],
        )

    @classmethod
    def execute(cls, model_folder: str, precision: str):
        from r3dp_core.audio.hubert import load_hubert_folder

        from ._runtime import compute_device, node_dtype, offload_device

        folder = _paths.resolve_model_folder("hubert", model_folder)
        model = load_hubert_folder(folder).requires_grad_(False).to(offload_device())
        return comfy_io.NodeOutput(Hubert(model, node_dtype(precision, compute_device()), model_folder))


class LoadBFM(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadBFM",
            display_name="Load BFM 3DMM",
            category=f"{t.CATEGORY}/loaders",
            description="Loads the face geometry: the Basel Face Model 3DMM (BFM_model_front.mat) with the MediaPipe "
                        "index and the eye-hole triangle files beside it, and the SECC mesh built from them; used for "
                        "3DMM fitting, PNCC/SECC rendering and torso keypoints.",
            inputs=[
                comfy_io.Combo.Input("bfm_file", options=_paths.suffix_options("bfm", (".mat",)),
                                     tooltip="BFM/BFM_model_front.mat; index_mp468_from_mesh35709.npy and "
                                             "bfm_{left,right}_eye_faces.npy must sit in the same folder."),
            ],
            # a FaceGeometry; the socket type stays R3DP_BFM, so saved links keep working
            outputs=[t.Bfm.Output(display_name="face_geometry",
                                  tooltip="The BFM 3DMM and its SECC mesh, for Image → Triplane, PNCC Builder and "
                                          "Video → 3DMM.")],
        )

    @classmethod
    def execute(cls, bfm_file: str):
        from r3dp_core import model_files
        from r3dp_core.errors import ModelFileError
        from r3dp_core.geometry.bfm import FaceModel3DMM
        from r3dp_core.pipeline.loaders import load_secc_mesh_for

        path = _paths.resolve_model_file("bfm", bfm_file)
        index = path.parent / Path(model_files.BY_KEY["bfm_mediapipe_index"].relpath).name
        if not index.is_file():
            raise ModelFileError(model_files.BY_KEY["bfm_mediapipe_index"].missing_message(path.parent.parent))
        # ComfyUI runs nodes in inference mode; the 3DMM fits need autograd through these buffers.
        with torch.inference_mode(False):
            bfm = FaceModel3DMM.from_file(path, index)
            mesh = load_secc_mesh_for(bfm, path.parent)
        return comfy_io.NodeOutput(FaceGeometry(bfm, mesh))


class LoadFaceLandmarker(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadFaceLandmarker",
            display_name="Load Face Landmarker",
            category=f"{t.CATEGORY}/loaders",
            description="MediaPipe's 478-point face landmarker (face_landmarker.task), used to crop the portrait and "
                        "fit the 3DMM to photos and driving videos.",
            inputs=[
                comfy_io.Combo.Input("model_file", options=_paths.suffix_options("face_landmarker", (".task",)),
                                     tooltip="face_landmarker.task (3.8 MB, Apache-2.0) in models/real3dportrait."),
            ],
            outputs=[t.Landmarker.Output(display_name="landmarker")],
        )

    @classmethod
    def execute(cls, model_file: str):
        return comfy_io.NodeOutput(_paths.resolve_model_file("face_landmarker", model_file))


class LoadSegmenter(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadSegmenter",
            display_name="Load Selfie Segmenter",
            category=f"{t.CATEGORY}/loaders",
            description="MediaPipe's 6-class selfie segmenter (selfie_multiclass_256x256.tflite): splits the portrait "
                        "into head, torso and background. 'Segmentation from Masks' can replace it.",
            inputs=[
                comfy_io.Combo.Input("model_file", options=_paths.suffix_options("segmenter", (".tflite",)),
                                     tooltip="selfie_multiclass_256x256.tflite (16 MB, Apache-2.0) in "
                                             "models/real3dportrait."),
            ],
            outputs=[t.Segmenter.Output(display_name="segmenter")],
        )

    @classmethod
    def execute(cls, model_file: str):
        return comfy_io.NodeOutput(Segmenter(path=_paths.resolve_model_file("segmenter", model_file)))


class SegmenterFromMasks(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_SegmenterFromMasks",
            display_name="Segmentation from Masks",
            category=f"{t.CATEGORY}/loaders",
            description="Uses masks from any other node (SAM, rembg, a painted mask, ...) instead of the selfie "
                        "segmenter. Masks are in the coordinates of the portraits given to Image→Triplane.",
            inputs=[
                comfy_io.Mask.Input("head_mask", tooltip="The head including hair (1 = head), one per portrait or "
                                                         "one for all."),
                comfy_io.Mask.Input("body_mask", optional=True,
                                    tooltip="Optional: the rest of the person (neck, shoulders, clothes). Without it "
                                            "the torso is not animated separately from the background."),
                comfy_io.Float.Input("threshold", default=defaults.MASK_THRESHOLD, min=0.0, max=1.0, step=0.01,
                                     tooltip="A pixel belongs to a mask where the mask is above this value."),
            ],
            outputs=[t.Segmenter.Output(display_name="segmenter")],
        )

    @classmethod
    def execute(cls, head_mask: torch.Tensor, threshold: float, body_mask: torch.Tensor | None = None):
        body = None if body_mask is None else body_mask.float().cpu()
        return comfy_io.NodeOutput(Segmenter(masks=PortraitMasks(head_mask.float().cpu(), body, threshold)))


NODES = [LoadVideoModel, LoadAudioModel, LoadHubert, LoadBFM, LoadFaceLandmarker, LoadSegmenter, SegmenterFromMasks]
