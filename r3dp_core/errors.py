"""User-facing errors.

Every error a user can cause (a bad input file, a missing or wrong model file) is an ``R3DPError``
whose message says what was wrong and what to do about it. The CLI prints the message without a
traceback and the ComfyUI nodes re-raise it so the UI shows it verbatim.
"""

from __future__ import annotations


class R3DPError(Exception):
    """An actionable problem the user can fix; the message is meant to be shown as-is."""


class InputError(R3DPError, ValueError):
    """An input image, audio clip or video that cannot be used."""


class ModelFileError(R3DPError):
    """A model file that is missing, truncated, of the wrong kind or unsafe to load."""
