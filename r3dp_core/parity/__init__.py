"""Numerical parity with the official Real3D-Portrait modules (see ``shared/parity/README.md``).

``python -m r3dp_core.parity CASE.safetensors [...]`` runs the r3dp stage named by each case on the
case's inputs with synthetic weights and prints, per checked tensor, max-abs and rms error against the
stored reference and a PASS/FAIL verdict against the case's suggested tolerance.
"""

from .case import ParityCase
from .compare import Report
from .runner import STAGES, run_case

__all__ = ["ParityCase", "Report", "STAGES", "run_case"]
