"""Talking Portrait: the whole pipeline in one box, for people who do not want to wire the stages.

It expands, when run, into the same stage nodes a hand-wired graph uses (ComfyUI node expansion), so every
stage is cached on its own: changing the mouth amplitude re-runs Audio→3DMM and the render, not the model
loading or the portrait preparation. Progress and the video preview appear on this node.
"""

from __future__ import annotations

from r3dp_core import defaults
from r3dp_core.errors import InputError
from r3dp_core.pipeline.options import GENERATE

from . import _paths
from . import _types as t
from ._api import comfy_io
from .loaders import PRECISIONS


class _Expansion:
    """A node-expansion graph (``{id: {"class_type", "inputs"}}``) with ids unique to the expanding node."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: dict[str, dict] = {}

    def add(self, name: str, class_type: str, **inputs) -> str:
        node_id = f"{self.prefix}{name}"
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def _link(node_id: str, slot: int = 0) -> list:
    return [node_id, slot]


class TalkingPortrait(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_TalkingPortrait",
            display_name="Talking Portrait (all-in-one)",
            category=t.CATEGORY,
            description="Photo + voice clip (or a driving video) → talking video frames, audio and fps, ready for "
                        "Create Video / Save Video or Video Combine. Runs the same stages as the separate nodes.",
            inputs=[
                comfy_io.Image.Input("image", tooltip="The portrait (one image; for several portraits at once use "
                                                      "Image→Triplane and the stage nodes)."),
                comfy_io.Audio.Input("audio", optional=True, tooltip="The voice clip that drives the lips."),
                comfy_io.Video.Input("driving_video", optional=True,
                                     tooltip="Or a driving video (expression, head pose and its sound)."),
                comfy_io.Image.Input("background", optional=True,
                                     tooltip="Optional new background; default: the photo's own."),
                comfy_io.Mask.Input("head_mask", optional=True,
                                    tooltip="Optional head mask (in the photo's coordinates), used instead of the "
                                            "selfie segmenter model."),
                comfy_io.Mask.Input("body_mask", optional=True,
                                    tooltip="Optional mask of the rest of the person, with head_mask."),
                comfy_io.Combo.Input("head_pose", options=["auto", "static", "driving", "orbit", "natural"],
                                     default=defaults.POSE_MODE,
                                     tooltip="auto (default, as the CLI): the driving video's pose when one is given, "
                                             "else natural motion · static: the photo's pose (official) · driving: "
                                             "the driving video's pose · orbit: a novel-view sweep around the head · "
                                             "natural: a calm head motion that follows the speech (seeded by seed)."),
                comfy_io.Float.Input("mouth_amplitude", **GENERATE["mouth_amp"].widget_kwargs(), step=0.01,
                                     tooltip=f"How wide the mouth opens (official {defaults.MOUTH_AMP:g})."),
                comfy_io.Float.Input("temperature", **GENERATE["temperature"].widget_kwargs(), step=0.01,
                                     tooltip="Randomness of the audio-driven motion "
                                             f"(official {defaults.TEMPERATURE:g})."),
                comfy_io.Boolean.Input("blink", **GENERATE["blink"].widget_kwargs(),
                                       tooltip="Blink every 5 s (audio-driven)."),
                comfy_io.Int.Input("seed", **GENERATE["seed"].widget_kwargs(), control_after_generate=True,
                                   tooltip="Seed of the motion sampling, blinks and renderer jitter."),
                comfy_io.Int.Input("chunk_size", **GENERATE["chunk_size"].widget_kwargs(),
                                   tooltip="Frames computed together (halved automatically on out-of-memory)."),
                comfy_io.Combo.Input("precision", options=PRECISIONS, default="auto",
                                     tooltip="GPU compute precision of the networks (CPU always fp32)."),
                comfy_io.Combo.Input("video_model", options=_paths.weight_file_options("video_model"),
                                     tooltip="The secc2plane_torso checkpoint in models/real3dportrait."),
                comfy_io.Combo.Input("audio_model", options=_paths.weight_file_options("audio_model"),
                                     tooltip="The audio2secc_vae checkpoint (audio-driven only)."),
                comfy_io.Combo.Input("hubert", options=_paths.folder_options("hubert"),
                                     tooltip="The HuBERT-large folder (audio-driven only)."),
                comfy_io.Combo.Input("bfm", options=_paths.suffix_options("bfm", (".mat",)),
                                     tooltip="BFM_model_front.mat (with its index and eye-triangle files)."),
                comfy_io.Combo.Input("landmarker", options=_paths.suffix_options("face_landmarker", (".task",)),
                                     tooltip="face_landmarker.task."),
                comfy_io.Combo.Input("segmenter", options=_paths.suffix_options("segmenter", (".tflite",)),
                                     tooltip="selfie_multiclass_256x256.tflite (unused when head_mask is given)."),
            ],
            # Not lists: ComfyUI flattens list outputs of an expanded graph, so this box animates one portrait
            # (the stage nodes take a batch of several).
            outputs=[
                comfy_io.Image.Output(display_name="images"),
                comfy_io.Audio.Output(display_name="audio"),
                comfy_io.Float.Output(display_name="fps"),
                comfy_io.Mask.Output(display_name="person_mask"),
            ],
            hidden=[comfy_io.Hidden.unique_id, comfy_io.Hidden.dynprompt],
            enable_expand=True,
        )

    @classmethod
    def execute(cls, image, head_pose: str, mouth_amplitude: float, temperature: float, blink: bool, seed: int,
                chunk_size: int, precision: str, video_model: str, audio_model: str, hubert: str, bfm: str,
                landmarker: str, segmenter: str, audio=None, driving_video=None, background=None, head_mask=None,
                body_mask=None):
        if image.shape[0] != 1:
            raise InputError(f"Talking Portrait animates one portrait but got a batch of {image.shape[0]}; for several "
                             "portraits at once use Image→Triplane and the stage nodes (see the example workflows).")
        if audio is None and driving_video is None:
            raise InputError("Talking Portrait needs a voice clip (audio) or a driving video.")
        if head_pose == "driving" and driving_video is None:
            raise InputError("head_pose 'driving' needs a driving video; use static or orbit for audio only.")
        links = cls.hidden.dynprompt.get_node(cls.hidden.unique_id)["inputs"]
        graph = _Expansion(f"{cls.hidden.unique_id}.r3dp.")
        video = graph.add("video_model", "R3DP_LoadVideoModel", ckpt_name=video_model, precision=precision)
        face = graph.add("bfm", "R3DP_LoadBFM", bfm_file=bfm)
        marks = graph.add("landmarker", "R3DP_LoadFaceLandmarker", model_file=landmarker)
        if head_mask is not None:
            masks = {"head_mask": links["head_mask"]}
            if body_mask is not None:
                masks["body_mask"] = links["body_mask"]
            segment = graph.add("segmenter", "R3DP_SegmenterFromMasks", threshold=defaults.MASK_THRESHOLD, **masks)
        else:
            segment = graph.add("segmenter", "R3DP_LoadSegmenter", model_file=segmenter)
        avatar = graph.add("avatar", "R3DP_ImageToTriplane", image=links["image"], video_model=_link(video),
                           bfm=_link(face), landmarker=_link(marks), segmenter=_link(segment),
                           min_face_area=defaults.MIN_FACE_AREA,
                           face="largest")
        video_motion = None
        if driving_video is not None:
            video_motion = graph.add("video_motion", "R3DP_VideoToMotion", landmarker=_link(marks), bfm=_link(face),
                                     video=links["driving_video"], images_fps=defaults.MOTION_FPS, face="largest")
        if audio is not None:
            a2m = graph.add("audio_model", "R3DP_LoadAudioModel", ckpt_name=audio_model)
            features = graph.add("hubert", "R3DP_LoadHubert", model_folder=hubert, precision=precision)
            motion = graph.add("motion", "R3DP_AudioToMotion", audio=links["audio"], audio_model=_link(a2m),
                               hubert=_link(features), mouth_amplitude=mouth_amplitude, temperature=temperature,
                               blink=blink, seed=seed)
        else:
            motion = video_motion
        follows_video = head_pose == "driving" or (head_pose == "auto" and video_motion is not None)
        pose_motion = {"motion": _link(video_motion)} if follows_video else {}
        camera = graph.add("camera", "R3DP_HeadPose", mode=head_pose, yaw_degrees=20.0, pitch_degrees=0.0, loops=1.0,
                           keyframes="", easing="smooth", smooth_cameras=True, map_to_source=True, seed=seed,
                           **pose_motion)
        pncc = graph.add("pncc", "R3DP_PnccBuilder", motion=_link(motion), avatar=_link(avatar), bfm=_link(face),
                         blink=blink, preview_chunk=chunk_size)
        planes = graph.add("planes", "R3DP_MotionAdapter", avatar=_link(avatar), pncc=_link(pncc),
                           video_model=_link(video))
        render = graph.add("render", "R3DP_VolumeRender", planes=_link(planes), camera=_link(camera), seed=seed,
                           preview_chunk=chunk_size)
        extra = {"background": links["background"]} if background is not None else {}
        composite = graph.add("composite", "R3DP_HtbsrComposite", render=_link(render),
                              head_threshold=defaults.HEAD_THRESHOLD,
                              chunk_size=chunk_size, preview=True, **extra)
        return comfy_io.NodeOutput(_link(composite, 0), _link(composite, 4), _link(composite, 5),
                                   _link(composite, 3), expand=graph.nodes)


NODES = [TalkingPortrait]
