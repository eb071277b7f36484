"""Audio→3DMM: speech → expression per frame at 25 fps, with the official blink schedule."""

from __future__ import annotations

from r3dp_core import defaults
from r3dp_core.errors import InputError
from r3dp_core.pipeline.options import GENERATE

from . import _types as t
from ._api import comfy_io
from ._audio import materialise_audio
from .loaders import AudioModel, Hubert


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
                comfy_io.Float.Input("mouth_amplitude", **GENERATE["mouth_amp"].widget_kwargs(), step=0.01,
                                     tooltip=f"How wide the mouth opens (official {defaults.MOUTH_AMP:g}; 0.3 subtle, "
                                             "0.7 strong)."),
                comfy_io.Float.Input("temperature", **GENERATE["temperature"].widget_kwargs(), step=0.01,
                                     tooltip="Randomness of the sampled motion "
                                             f"(official {defaults.TEMPERATURE:g}; 0 = deterministic)."),
                comfy_io.Boolean.Input("blink", **GENERATE["blink"].widget_kwargs(),
                                       tooltip="Blink every 5 s, as official (8-12 frame blinks)."),
                comfy_io.Int.Input("seed", **GENERATE["seed"].widget_kwargs(), control_after_generate=True,
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
        from r3dp_core.pipeline.motion import MotionRecipe, resolve_motion

        from ._runtime import node_host

        if audio is None:
            raise InputError("Audio→3DMM needs an audio clip: connect Load Audio (r3dp) or any AUDIO output.")
        recipe = MotionRecipe(sound=materialise_audio(audio), mouth_amp=mouth_amplitude, temperature=temperature,
                              seed=seed, blink=blink)
        motion = resolve_motion(recipe, a2m=audio_model.module, hubert=hubert.module,
                                host=node_host(cls.hidden.unique_id), compute_dtype=hubert.dtype)
        return comfy_io.NodeOutput(motion, motion.num_frames, float(motion.fps))


NODES = [AudioToMotion]
