"""The weight updates the replicas agree on, and what a replica that starts later replays.

An update is staged on every replica (read and validated, nothing served), then committed (copied
in on each replica's engine worker). Tensor bodies live in Ray's object store, owned by the
ledger actor so they outlive the ingress that received them; reloads name a path every node reads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class TensorsOp:
    """A push (one body) or a bucketed upload's commit (its buckets), as safetensors bodies."""

    blobs: tuple[Any, ...]  # ObjectRefs to bytes
    full: bool
    operation: Literal["push", "commit"] = "push"


@dataclass(frozen=True)
class ReloadOp:
    """A checkpoint on disk: the path must be readable on every replica's node."""

    path: str
    full: bool
    allow_cast: bool


@dataclass(frozen=True)
class AdapterOp:
    """A LoRA adapter from a directory on disk, or pushed (safetensors with its config)."""

    name: str
    allow_cast: bool
    path: str | None = None
    blob: Any = None  # ObjectRef to bytes, when pushed


@dataclass(frozen=True)
class AdapterUnloadOp:
    pass


Op = TensorsOp | ReloadOp | AdapterOp | AdapterUnloadOp


@dataclass(frozen=True)
class Update:
    version: int
    op: Op
    id: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def operation(self) -> str:
        op = self.op
        if isinstance(op, TensorsOp):
            return op.operation
        if isinstance(op, ReloadOp):
            return "reload"
        return "adapter_load" if isinstance(op, AdapterOp) else "adapter_unload"


def replaces_base(op: Op) -> bool:
    return isinstance(op, TensorsOp | ReloadOp) and op.full


def is_adapter(op: Op) -> bool:
    return isinstance(op, AdapterOp | AdapterUnloadOp)


def compact(history: list[Update], update: Update) -> list[Update]:
    """The shortest list of updates that, replayed in order on the base model, gives the weights
    of `history + [update]`.

    A full update makes earlier tensor updates moot; an adapter change makes earlier adapter
    changes moot (the latest one decides what is attached), and an unload leaves none. Versions
    dropped this way are reached by the replica settling at the committed version afterwards.
    """
    op = update.op
    if replaces_base(op):
        kept = [u for u in history if is_adapter(u.op)]
    elif is_adapter(op):
        kept = [u for u in history if not is_adapter(u.op)]
    else:
        kept = list(history)
    if not isinstance(op, AdapterUnloadOp):
        kept.append(update)
    return kept
