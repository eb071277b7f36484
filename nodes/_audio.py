"""ComfyUI AUDIO values as the core reads them."""

from __future__ import annotations


def materialise_audio(audio) -> dict:
    """Any ComfyUI AUDIO mapping (core dict or VideoHelperSuite's lazy map) → a plain dict on the CPU."""
    return {"waveform": audio["waveform"].detach().float().cpu(), "sample_rate": int(audio["sample_rate"])}
