"""Per-sample gradient-norm rules, one file per layer family, and the hooks that feed them.

Importing this package registers every rule; `capture.py` only captures and looks rules up.
"""

from . import conv1d, embedding, linear, normalization, tied  # noqa: F401  (registers rules)
from .capture import NormCapture, capturing
from .registry import Plan, check_supported, plan_norms

__all__ = ["NormCapture", "Plan", "capturing", "check_supported", "plan_norms"]
