"""The swap itself, on the engine worker: between two requests, never during one.

Every tensor was validated beforehand (name, shape, dtype, finite), so copying cannot fail half-way
for a reason of the data's; the version is checked here, on the worker, where no other change can
interleave.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import VersionConflictError, WeightsRejectedError
from ..served_model import ServedModel
from .validate import Checked, TargetMap


def next_version(served: ServedModel, requested: int | None) -> int:
    """The version an update will carry; refuses one that is not above the served version."""
    if requested is None:
        return served.version + 1
    if requested <= served.version:
        raise VersionConflictError(
            f"version {requested} is not above the served version {served.version}; versions "
            "only increase",
            current_version=served.version,
        )
    return requested


def copy_weights(
    served: ServedModel,
    checked: Checked,
    version: int | None,
    notify: Callable[[], None],
) -> tuple[int, int]:
    """Write the checked tensors into the served parameters and bump the version (worker only).

    Returns (previous version, new version).
    """
    new = next_version(served, version)
    # Looked up again here: an adapter may have wrapped the modules since validation (the base
    # tensors and their names are the same either way).
    live = TargetMap.of_model(served.model).targets
    if gone := [n for n in checked.tensors if n not in live]:
        raise WeightsRejectedError([f"tensor {gone[0]!r} is no longer in the served model"])
    with torch.no_grad():
        for name, tensor in checked.tensors.items():
            live[name].tensor.copy_(tensor)
    previous, served.version = served.version, new
    notify()
    return previous, new
