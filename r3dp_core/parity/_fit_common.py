"""What the landmark-fit parity stages read from a case's call description."""

from __future__ import annotations

import re

from ..errors import InputError
from .case import ParityCase

# "y <- 512 - y" (image fit) or "H = 512" (video fit): the image height the landmarks were detected at
_HEIGHT = re.compile(r"y\s*<-\s*(\d+)\s*-\s*y|\bH\s*=\s*(\d+)")


def image_height(case: ParityCase) -> int:
    """The image height H of the case's landmarks (both fit axes are scaled by H/224)."""
    m = _HEIGHT.search(case.call.get("schedule", ""))
    if m is None:
        raise InputError(f"{case.path.name}: call.schedule does not state the image height ('y <- H - y' or 'H = …')")
    return int(m.group(1) or m.group(2))
