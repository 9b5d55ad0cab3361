"""The swap itself, on the engine worker: between two requests, never during one.

Every tensor was validated beforehand (name, shape, dtype, finite), so copying cannot fail half-way
for a reason of the data's; the version is checked here, on the worker, where no other change can
interleave.
"""

from __future__ import annotations

import torch

from ..errors import WeightsRejectedError
from ..serving import ServingSlot
from .validate import Checked, TargetMap


def copy_weights(slot: ServingSlot, checked: Checked, version: int | None) -> tuple[int, int]:
    """Write the checked tensors into the served parameters and bump the version (worker only).

    Returns (previous version, new version).
    """
    slot.next_version(version)  # refused before anything is written
    served = slot.require_served()
    # Looked up again here: an adapter may have wrapped the modules since validation (the base
    # tensors and their names are the same either way).
    live = TargetMap.of_model(served.model).targets
    if gone := [n for n in checked.tensors if n not in live]:
        raise WeightsRejectedError([f"tensor {gone[0]!r} is no longer in the served model"])
    with torch.no_grad():
        for name, tensor in checked.tensors.items():
            live[name].tensor.copy_(tensor)
    return slot.bump_version(version)
