"""The pack's socket types. Values travel between nodes in the same process, never serialised.

| socket | Python value |
|---|---|
| R3DP_VIDEO_MODEL, R3DP_AUDIO_MODEL, R3DP_HUBERT, R3DP_BFM, ... | loaded models (see ``loaders``) |
| R3DP_BFM | ``FaceGeometry`` (the 3DMM and the SECC mesh), shown as ``face_geometry`` (the type string stays) |
| R3DP_AVATAR | ``list[Avatar]``, one per portrait (canonical tri-plane + source fit, crops, segmentation) |
| R3DP_MOTION | ``Motion`` (expression ``[T,64]``, fps, optional pose, blink schedule and audio) |
| R3DP_CAMERA | ``PoseRecipe`` (resolved against each portrait and the motion by the render stage) |
| R3DP_PNCC, R3DP_PLANES, R3DP_RENDER | ``PortraitStreams``: lazy per-portrait frame sources, pulled in chunks |
| R3DP_FRAMES | ``ClipPasteSource``: one clip's frames pasted into its photo on demand (Paste Back (stream)), or a
  persona's pasted into its training video (``persona.PersonaPasteSource``, Persona Paste Back (stream)) |
| R3DP_PERSONA | ``r3dp_core.talk3d.animate.PersonaModel``: a personalised Talk3D persona with its training tracks |
| R3DP_WAV2VEC2 | ``persona.Wav2Vec2``: Talk3D's speech model (wav2vec2 CTC) and its folder |
| R3DP_PERSONA_PLANES | ``persona.PersonaPlanes``: a persona and its drive (per-frame tokens of a speech); the ΔP
  tri-planes are made chunk by chunk by whatever pulls the render |

Volume Render's ``planes`` input takes R3DP_PLANES or R3DP_PERSONA_PLANES (one render node for both families); for a
persona its R3DP_RENDER carries a ``persona.PersonaRender``.

R3DP_PNCC keeps the name the node was asked for; the core calls the same images SECC.
"""

from __future__ import annotations

from ._api import comfy_io

VideoModel = comfy_io.Custom("R3DP_VIDEO_MODEL")
AudioModel = comfy_io.Custom("R3DP_AUDIO_MODEL")
Hubert = comfy_io.Custom("R3DP_HUBERT")
Bfm = comfy_io.Custom("R3DP_BFM")
Landmarker = comfy_io.Custom("R3DP_LANDMARKER")
Segmenter = comfy_io.Custom("R3DP_SEGMENTER")
Avatar = comfy_io.Custom("R3DP_AVATAR")
Motion = comfy_io.Custom("R3DP_MOTION")
Camera = comfy_io.Custom("R3DP_CAMERA")
Pncc = comfy_io.Custom("R3DP_PNCC")
Planes = comfy_io.Custom("R3DP_PLANES")
Render = comfy_io.Custom("R3DP_RENDER")
Frames = comfy_io.Custom("R3DP_FRAMES")
Persona = comfy_io.Custom("R3DP_PERSONA")
Wav2Vec2 = comfy_io.Custom("R3DP_WAV2VEC2")
PersonaPlanes = comfy_io.Custom("R3DP_PERSONA_PLANES")

CATEGORY = "Real3DPortrait"
