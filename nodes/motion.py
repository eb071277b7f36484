"""Audio→3DMM and Video→3DMM: the driving motion (expression per frame at 25 fps, optional head pose)."""

from __future__ import annotations

import dataclasses

import torch

from r3dp_core.errors import InputError

from . import _types as t
from ._api import comfy_io
from .loaders import AudioModel, FaceModel, Hubert

FPS = 25.0


def materialise_audio(audio) -> dict:
    """Any ComfyUI AUDIO mapping (core dict or VideoHelperSuite's lazy map) → a plain dict on the CPU."""
    return {"waveform": audio["waveform"].detach().float().cpu(), "sample_rate": int(audio["sample_rate"])}


class AudioToMotion(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_AudioToMotion",
            display_name="Audio → 3DMM",
            category=f"{t.CATEGORY}/motion",
            description="Speech → expression coefficients at 25 fps (HuBERT features + pitch → the audio-to-motion "
                        "VAE), plus the official blink schedule. The clip travels with the motion for muxing.",
            inputs=[
                comfy_io.Audio.Input("audio", tooltip="The voice clip (any sample rate; channel 0 drives the lips)."),
                t.AudioModel.Input("audio_model", tooltip="From Load Audio Model."),
                t.Hubert.Input("hubert", tooltip="From Load HuBERT."),
                comfy_io.Float.Input("mouth_amplitude", default=0.45, min=0.0, max=2.0, step=0.01,
                                     tooltip="How wide the mouth opens (official 0.45; 0.3 subtle, 0.7 strong)."),
                comfy_io.Float.Input("temperature", default=0.2, min=0.0, max=1.0, step=0.01,
                                     tooltip="Randomness of the sampled motion (official 0.2; 0 = deterministic)."),
                comfy_io.Boolean.Input("blink", default=True,
                                       tooltip="Blink every 5 s, as official (8-12 frame blinks)."),
                comfy_io.Int.Input("seed", default=42, min=0, max=2**31 - 1, control_after_generate=True,
                                   tooltip="Seed of the motion sampling and the blink lengths."),
            ],
            outputs=[t.Motion.Output(display_name="motion"),
                     comfy_io.Int.Output(display_name="frames"),
                     comfy_io.Float.Output(display_name="fps")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, audio, audio_model: AudioModel, hubert: Hubert, mouth_amplitude: float, temperature: float,
                blink: bool, seed: int):
        from r3dp_core.audio.io import load_audio
        from r3dp_core.pipeline.stages import speech_motion

        from ._runtime import Progress, on_compute_device

        if audio is None:
            raise InputError("Audio→3DMM needs an audio clip: connect Load Audio (r3dp) or any AUDIO output.")
        clip = materialise_audio(audio)
        if clip["waveform"].ndim != 3 or clip["waveform"].shape[0] != 1:
            raise InputError(f"Audio→3DMM takes one clip (AUDIO batch of 1), got waveform "
                             f"{tuple(clip['waveform'].shape)}; split the batch first.")
        audio16k = load_audio(clip)
        progress = Progress(100, cls.hidden.unique_id)
        with on_compute_device(audio_model.module, hubert.module) as device, \
                torch.autocast(device.type, dtype=hubert.dtype, enabled=hubert.dtype != torch.float32):
            motion = speech_motion(audio16k, audio_model.module, hubert.module, mouth_amp=mouth_amplitude,
                                   temperature=temperature, seed=seed, blink=blink, sound=clip,
                                   progress=lambda done, total: progress.update(100 * done // max(total, 1)))
        return comfy_io.NodeOutput(motion, motion.num_frames, FPS)


class VideoToMotion(comfy_io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return comfy_io.Schema(
            node_id="R3DP_VideoToMotion",
            display_name="Video → 3DMM",
            category=f"{t.CATEGORY}/motion",
            description="A driving video → expression and head pose per frame (MediaPipe landmarks + 3DMM video fit "
                        "with one shared identity), resampled to 25 fps. Give a VIDEO (core Load Video) or an IMAGE "
                        "batch of frames with their fps; the video's sound travels with the motion.",
            inputs=[
                t.Landmarker.Input("landmarker", tooltip="From Load Face Landmarker."),
                t.Bfm.Input("bfm", tooltip="From Load BFM 3DMM."),
                comfy_io.Video.Input("video", optional=True, tooltip="A driving video (core Load Video)."),
                comfy_io.Image.Input("images", optional=True,
                                     tooltip="Or the driving frames as an IMAGE batch (e.g. from VideoHelperSuite)."),
                comfy_io.Float.Input("images_fps", default=25.0, min=1.0, max=240.0, step=0.01,
                                     tooltip="Frame rate of the IMAGE batch (ignored for a VIDEO input)."),
                comfy_io.Audio.Input("audio", optional=True,
                                     tooltip="Optional sound for the result (default: the VIDEO's own track)."),
                comfy_io.Combo.Input("face", options=["largest", "0", "1", "2", "3"], default="largest",
                                     tooltip="Which face drives the motion when the video shows several."),
            ],
            outputs=[t.Motion.Output(display_name="motion"),
                     comfy_io.Audio.Output(display_name="audio"),
                     comfy_io.Int.Output(display_name="frames"),
                     comfy_io.Float.Output(display_name="fps")],
            hidden=[comfy_io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, landmarker, bfm: FaceModel, images_fps: float, face: str, video=None,
                images: torch.Tensor | None = None, audio=None):
        from r3dp_core.pipeline.driving import motion_from_frames

        from ._runtime import Progress

        if video is not None:
            components = video.get_components()
            frames, fps = components.images, float(components.frame_rate)
            audio = audio if audio is not None else components.audio
        elif images is not None:
            frames, fps = images, float(images_fps)
        else:
            raise InputError("Video→3DMM needs a driving video: connect a VIDEO (Load Video) or an IMAGE batch.")
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise InputError(f"The driving video has no frames (got {tuple(frames.shape)}).")
        progress = Progress(1, cls.hidden.unique_id)
        motion = motion_from_frames(frames[..., :3], fps, landmarker, bfm.bfm,
                                    face=face if face == "largest" else int(face))
        clip = materialise_audio(audio) if audio is not None else None
        motion = dataclasses.replace(motion, audio=clip)
        progress.update(1)
        return comfy_io.NodeOutput(motion, clip, motion.num_frames, FPS)


NODES = [AudioToMotion, VideoToMotion]
