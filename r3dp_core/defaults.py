"""Constants and defaults of a talking-portrait job, each decided here once.

The pipeline stages and the ComfyUI nodes read their constants from this module, and ``r3dp generate``'s option
table (``pipeline/options.py``, which the CLI, ``GenerateRequest``, validation, the widgets that mirror an option
and the README read) takes its defaults from here, so the official values are written in one place. Where a
value comes from the official Real3D-Portrait inference (``inference/real3d_infer.py`` and the Gradio app),
the comment names it; see ``spec/official_pipeline_spec.md`` of the shared reference.
"""

from __future__ import annotations

FRAME_SIZE = 512
"""Side in pixels of the square the model animates: the source crop, the SECC maps, the torso and background
plates and every rendered frame (official: the 512² crop of ``crop_img_on_face_area_percent``). Paste-back puts
it back into the photo at the photo's own resolution."""

MOTION_FPS = 25.0
"""Frames per second of motion and video: official inference writes its mp4 at 25 fps and the A2M model
makes one motion frame per two 50 Hz HuBERT frames."""

SAMPLE_RATE = 16000
"""Audio sample rate of the speech front end (official: ``ffmpeg -ar 16000``)."""

POSE_MODE = "auto"
"""Head-pose mode of a new job, Head Pose node or recipe: ``driving`` when there is a pose to follow, else
``natural`` (r3dp's own; the official default is ``static``, one option away: a frozen head looks dead)."""

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
