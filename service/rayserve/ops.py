"""The weight updates the replicas agree on, and what a replica that starts later replays.

An update is the weight core's own plain data (weights/updates.py) with the version and id the
ledger orders it by. It is staged on every replica (read and validated, nothing served), then
committed (applied on each replica's engine worker). Tensor bodies live in Ray's object store,
owned by the ledger actor so they outlive the ingress that received them; reloads name a path
every node reads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ..weights.updates import (
    AdapterDetach,
    AdapterUpdate,
    ReloadUpdate,
    TensorsUpdate,
    WeightOp,
    operation_of,
)


@dataclass(frozen=True)
class Update:
    version: int
    op: WeightOp
    id: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def operation(self) -> str:
        return operation_of(self.op)


def replaces_base(op: WeightOp) -> bool:
    return isinstance(op, TensorsUpdate | ReloadUpdate) and op.full


def is_adapter(op: WeightOp) -> bool:
    return isinstance(op, AdapterUpdate | AdapterDetach)


def compact(history: list[Update], update: Update) -> list[Update]:
    """The shortest list of updates that, replayed in order on the base model, gives the weights
    of `history + [update]`.

    A full update makes earlier tensor updates moot; an adapter change makes earlier adapter
    changes moot (the latest one decides what is attached), and a detach leaves none. Versions
    dropped this way are reached by the replica settling at the committed version afterwards.
    """
    op = update.op
    if replaces_base(op):
        kept = [u for u in history if is_adapter(u.op)]
    elif is_adapter(op):
        kept = [u for u in history if not is_adapter(u.op)]
    else:
        kept = list(history)
    if not isinstance(op, AdapterDetach):
        kept.append(update)
    return kept
