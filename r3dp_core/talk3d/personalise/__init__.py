"""``r3dp personalise``: a person's own Talk3D persona, trained from a few minutes of their video.

:func:`personalise` runs the whole recipe (:mod:`.run`): preparation (:mod:`.prepare`), phase A — personalising
the EG3D prior (:mod:`.phase_a`), phase B — the audio-guided U-Net and the super-resolution fine-tune
(:mod:`.training`), the held-out evaluation (:mod:`.evaluation`). The schedules are :mod:`.presets`.
"""

from .presets import PRESETS, PersonalisePreset, get_preset
from .run import PersonaliseOptions, PersonaliseResult, personalise
from .training import TrainingInterrupted

__all__ = ["PRESETS", "PersonalisePreset", "PersonaliseOptions", "PersonaliseResult", "TrainingInterrupted",
           "get_preset", "personalise"]
