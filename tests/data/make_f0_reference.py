"""Regenerate ``f0_reference.json``: the official f0 (Praat via parselmouth) of the shared test clips.

Needs ``praat-parselmouth`` (not an r3dp dependency): ``python tests/data/make_f0_reference.py``. The clips go
through r3dp's 16 kHz conversion, which is bit-identical to the official ``ffmpeg -ar 16000`` step.
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from r3dp_core.audio.io import load_audio  # noqa: E402
from r3dp_core.audio.pitch import official_f0  # noqa: E402

SHARED = ROOT.parent / "shared" / "testdata"
CLIPS = ("speech_en_16k.wav", "speech_en_44k_stereo.wav")


def hard_signal() -> np.ndarray:
    """3 s at 16 kHz that exercises Praat's rarer paths, built without a random generator: a 2 kHz tone (more
    autocorrelation peaks than candidate slots), a 1 kHz tone (peaks above the ceiling), a vibrato voice with
    deterministic pseudo-noise, silence and a click."""
    t = np.arange(16000) / 16000
    noise = np.sin(np.arange(16000) * 12.9898 + 78.233) * 43758.5453
    noise = 2 * (noise - np.floor(noise)) - 1
    vibrato = 140 * t + 3 * np.sin(2 * np.pi * 5 * t) / (2 * np.pi * 5) * 20
    voice = sum(np.sin(2 * np.pi * k * vibrato + k) / k for k in range(1, 8)) * 0.2 + 0.02 * noise
    silence_click = np.zeros(16000)
    silence_click[12000] = 0.9
    parts = [0.5 * np.sin(2 * np.pi * 2000 * t[:8000]), 0.5 * np.sin(2 * np.pi * 1000 * t[:8000]), voice,
             silence_click]
    return np.concatenate(parts).astype(np.float32)


def main() -> None:
    import parselmouth

    out = {"praat_version": parselmouth.PRAAT_VERSION, "parselmouth_version": parselmouth.__version__,
           "decimals": 4, "clips": {}}
    for name in CLIPS:
        f0 = official_f0(load_audio(SHARED / name).pitch_mono(), method="parselmouth")
        out["clips"][name] = [round(float(v), 4) for v in np.asarray(f0, dtype=np.float64)]
    f0 = official_f0(hard_signal(), method="parselmouth")
    out["clips"]["hard_signal"] = [round(float(v), 4) for v in np.asarray(f0, dtype=np.float64)]
    path = Path(__file__).with_name("f0_reference.json")
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
