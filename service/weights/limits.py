"""Every bound the weight plane keeps, in one place; runtime.py builds it from the settings.

The weight plane and the Ray wing read these five numbers and nothing else of the settings, as
scoring reads its `Limits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Beside twice the model (a full update staged while the served copy stays): room for the
# bodies of small pushes and adapters on a model of any size.
STAGING_HEADROOM = 64 << 20


@dataclass(frozen=True)
class WeightLimits:
    """No defaults here: the settings hold them (one place), and `weight_limits_of` copies."""

    admin_timeout_s: float
    upload_ttl_s: float
    transfer_timeout_s: float
    max_staged_bytes: int | None  # None: worked out from the model (`staged_bound`)
    allowed_weights_dir: Sequence[Path]

    def staged_bound(self, model_nbytes: int) -> int:
        """The bound on weight bytes held before they are applied (--max-staged-bytes)."""
        if self.max_staged_bytes is not None:
            return self.max_staged_bytes
        return 2 * model_nbytes + STAGING_HEADROOM
