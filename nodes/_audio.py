"""ComfyUI AUDIO values as the core reads them."""

from __future__ import annotations


def materialise_audio(audio):
    """Any ComfyUI AUDIO mapping (core dict, VideoHelperSuite's lazy map, r3dp's own ``Sound``) → one ``Sound``: the
    clip on the CPU at its own rate, which is what gets muxed, with its 16 kHz view made on demand (once)."""
    from r3dp_core.audio.io import Sound, load_sound

    if isinstance(audio, Sound):
        return audio
    return load_sound({"waveform": audio["waveform"], "sample_rate": int(audio["sample_rate"])})
