"""File nodes: an audio loader that needs nothing from core, and Save/Load for motions and avatars.

Motions and avatars are ``.safetensors`` files with JSON metadata (see ``r3dp_core.pipeline.types``), small and
safe to share: a motion extracted once (from a voice clip or a driving video) drives any portrait later, on
any machine; an avatar skips the source preparation (crop, segmentation, 3DMM fit, Image→Triplane).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

from r3dp_core.audio.io import decode_audio_file
from r3dp_core.errors import InputError
from r3dp_core.pipeline.types import Avatar, Motion

from . import _paths
from . import _types as t
from ._api import comfy_io, comfy_ui


def _input_media_files() -> list[str]:
    import folder_paths

    directory = folder_paths.get_input_directory()
    files = [f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["audio", "video"]))


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class LoadAudio(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadAudio",
            display_name="Load Audio (r3dp)",
            category=f"{t.CATEGORY}/io",
            description="Loads a voice clip (wav, mp3, flac, ogg, m4a, or the audio track of a video) from ComfyUI's "
                        "input folder as AUDIO, decoded with PyAV (no ffmpeg binary, no core audio nodes needed).",
            inputs=[
                # No core upload widget: the frontend's audio upload only works on core's own audio nodes. The
                # pack's web extension adds the upload button and player (web/js/r3dp_audio_loader.js).
                comfy_io.Combo.Input("audio", options=_input_media_files(),
                                     tooltip="A file in ComfyUI's input folder; the upload button adds one."),
                comfy_io.Float.Input("start_seconds", default=0.0, min=0.0, max=36000.0, step=0.1,
                                     tooltip="Skip this many seconds at the start of the clip."),
                comfy_io.Float.Input("duration_seconds", default=0.0, min=0.0, max=36000.0, step=0.1,
                                     tooltip="Keep at most this many seconds after the start (0 = to the end)."),
            ],
            outputs=[comfy_io.Audio.Output(display_name="audio"),
                     comfy_io.Float.Output(display_name="seconds")],
        )

    @classmethod
    def execute(cls, audio: str, start_seconds: float = 0.0, duration_seconds: float = 0.0):
        import folder_paths

        loaded = decode_audio_file(folder_paths.get_annotated_filepath(audio))
        rate = loaded["sample_rate"]
        first = int(round(start_seconds * rate))
        last = loaded["waveform"].shape[-1] if duration_seconds <= 0 else first + int(round(duration_seconds * rate))
        waveform = loaded["waveform"][..., first:last]
        if waveform.shape[-1] == 0:
            raise InputError(f"{audio} is shorter than start_seconds={start_seconds}; lower it.")
        clip = {"waveform": waveform, "sample_rate": rate}
        return comfy_io.NodeOutput(clip, waveform.shape[-1] / rate)

    @classmethod
    def fingerprint_inputs(cls, audio: str, **_):
        import folder_paths

        return _file_hash(folder_paths.get_annotated_filepath(audio))

    @classmethod
    def validate_inputs(cls, audio: str):  # no **kwargs: that would switch off the min/max checks
        import folder_paths

        if not folder_paths.exists_annotated_filepath(audio):
            return f"Audio file '{audio}' is not in ComfyUI's input folder; upload it with the node's button."
        return True


class SaveMotion(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_SaveMotion",
            display_name="Save Motion",
            category=f"{t.CATEGORY}/io",
            description="Saves a motion (expression coefficients, fps, blink schedule, head pose) as a small "
                        ".safetensors file in output/r3dp/motions, to drive other portraits or workflows later.",
            inputs=[
                t.Motion.Input("motion", tooltip="The motion from Audio→3DMM, Video→3DMM or Load Motion."),
                comfy_io.String.Input("filename_prefix", default="r3dp_motion",
                                      tooltip="File name prefix; a number is appended. May contain sub-folders."),
                comfy_io.Boolean.Input("include_audio", default=False,
                                       tooltip="Also store the audio clip (makes the file larger) so Load Motion "
                                               "can hand it on for muxing."),
            ],
            outputs=[t.Motion.Output(display_name="motion")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion: Motion, filename_prefix: str, include_audio: bool = False):
        stored = motion if include_audio else replace(motion, audio=None)
        path = stored.save(_paths.save_target(_paths.MOTION_FOLDER, filename_prefix))
        summary = f"saved {path.name} ({motion.num_frames} frames @ {motion.fps:g} fps)"
        return comfy_io.NodeOutput(motion, ui=comfy_ui.PreviewText(summary))


class LoadMotion(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadMotion",
            display_name="Load Motion",
            category=f"{t.CATEGORY}/io",
            description="Loads a motion saved by Save Motion, or an official Real3D-Portrait coefficient file (.npy "
                        "dict with 'exp' [T,64] and optionally 'euler'/'trans' [T,3]; read without running pickled "
                        "code), from output/r3dp/motions or any folder registered as 'r3dp_motions' in "
                        "extra_model_paths.yaml.",
            inputs=[
                comfy_io.Combo.Input("motion_file", options=_paths.saved_file_options(_paths.MOTION_FOLDER),
                                     tooltip="A saved motion (.safetensors) or official coefficient file (.npy); "
                                             "press R after adding a new one."),
            ],
            outputs=[t.Motion.Output(display_name="motion"),
                     comfy_io.Float.Output(display_name="fps"),
                     comfy_io.Int.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, motion_file: str):
        from r3dp_core.pipeline.motion_files import load_motion_file

        motion = load_motion_file(_paths.resolve_saved_file(_paths.MOTION_FOLDER, motion_file, "Motion"))
        return comfy_io.NodeOutput(motion, float(motion.fps), motion.num_frames)

    @classmethod
    def fingerprint_inputs(cls, motion_file: str):
        path = _paths.resolve_saved_file(_paths.MOTION_FOLDER, motion_file, "Motion")
        return f"{path}:{path.stat().st_mtime_ns}"


class SaveAvatar(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_SaveAvatar",
            display_name="Save Avatar",
            category=f"{t.CATEGORY}/io",
            description="Saves prepared portraits (canonical tri-plane, 3DMM fit, crops, segmentation, background) "
                        "to output/r3dp/avatars, one file per portrait, so Image→Triplane need not run again.",
            inputs=[
                t.Avatar.Input("avatar", tooltip="The output of Image→Triplane or Load Avatar."),
                comfy_io.String.Input("filename_prefix", default="r3dp_avatar",
                                      tooltip="File name prefix; a number is appended per portrait."),
            ],
            outputs=[t.Avatar.Output(display_name="avatar")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, avatar: list[Avatar], filename_prefix: str):
        names = [a.save(_paths.save_target(_paths.AVATAR_FOLDER, filename_prefix)).name for a in avatar]
        return comfy_io.NodeOutput(avatar, ui=comfy_ui.PreviewText("saved " + ", ".join(names)))


class LoadAvatar(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_LoadAvatar",
            display_name="Load Avatar",
            category=f"{t.CATEGORY}/io",
            description="Loads a portrait saved by Save Avatar: a ready R3DP_AVATAR, plus its 512² source image.",
            inputs=[
                comfy_io.Combo.Input("avatar_file", options=_paths.saved_file_options(_paths.AVATAR_FOLDER),
                                     tooltip="A saved avatar file; press R after saving a new one."),
            ],
            outputs=[t.Avatar.Output(display_name="avatar"),
                     comfy_io.Image.Output(display_name="source_image")],
        )

    @classmethod
    def execute(cls, avatar_file: str):
        from r3dp_core.images import to_comfy_image

        avatar = Avatar.load(_paths.resolve_saved_file(_paths.AVATAR_FOLDER, avatar_file, "Avatar"))
        if avatar.planes is None:
            raise InputError(f"{avatar_file} has no tri-plane; save the output of Image→Triplane, not an earlier "
                             "stage.")
        return comfy_io.NodeOutput([avatar], to_comfy_image(avatar.image))

    @classmethod
    def fingerprint_inputs(cls, avatar_file: str):
        path = _paths.resolve_saved_file(_paths.AVATAR_FOLDER, avatar_file, "Avatar")
        return f"{path}:{path.stat().st_mtime_ns}"


NODES = [LoadAudio, SaveMotion, LoadMotion, SaveAvatar, LoadAvatar]
