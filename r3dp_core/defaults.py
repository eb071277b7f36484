"""Constants and defaults of a talking-portrait job, each decided here once.

The CLI (``r3dp generate``), ``GenerateRequest``, the pipeline stages and the ComfyUI nodes all read their
defaults from this module, so the official values are written in one place. Where a value comes from the
official Real3D-Portrait inference (``inference/real3d_infer.py`` and the Gradio app), the comment names it;
see ``spec/official_pipeline_spec.md`` of the shared reference.
"""

from __future__ import annotations

MOTION_FPS = 25.0
"""Frames per second of motion and video: official inference writes its mp4 at 25 fps and the A2M model
makes one motion frame per two 50 Hz HuBERT frames."""

SAMPLE_RATE = 16000
"""Audio sample rate of the speech front end (official: ``ffmpeg -ar 16000``)."""

MOUTH_AMP = 0.45
"""Mouth amplitude the audio-to-motion model is conditioned on (official CLI ``--mouth_amp 0.45``)."""

TEMPERATURE = 0.2
"""Scale of the audio-to-motion latent noise (official CLI ``--temperature 0.2``; 0 = deterministic)."""

SEED = 42
"""Random seed of a job (the official Gradio app fixes 42; the official CLI seeds from the clock)."""

BLINK = True
"""Periodic blinks (official ``--blink_mode period``)."""

HEAD_THRESHOLD = 0.9
"""Head alpha above which the head covers the torso in the composite (official config
``htbsr_head_threshold 0.9``)."""

MIN_FACE_AREA = 0.2
"""Fraction of the 512² crop the face must cover (official ``--min_face_area_percent 0.2``)."""

MOUTH_SCALE = 1.0
"""Scale of the mouth's motion in the rendered face (r3dp's own option; 1 keeps the motion as driven)."""

MOUTH_SCALE_MAX = 3.0
"""Largest mouth scale accepted (beyond it the lips tear through the SECC mesh)."""

CHUNK_SIZE = 4
"""Frames computed together (r3dp's own; a speed-for-memory trade, halved automatically on out-of-memory)."""

MASK_THRESHOLD = 0.5
"""Mask value above which a pixel of a user-given head or body mask counts as inside."""
