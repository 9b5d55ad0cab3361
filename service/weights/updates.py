"""A weight update as plain data: what to change, not how. Every source of updates makes one.

The plain server's admin routes, the vLLM transfer, the Ray ingress (which ships them to its
replicas, hence picklable) and a checkpoint watcher all describe their change as one of these;
`core.WeightCore` stages it (reads and validates, off the engine worker) and applies it (the swap,
on the worker). Tensor bodies are bytes, or an awaitable of bytes (a Ray ObjectRef).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TensorsUpdate:
    """A push (one body) or a bucketed upload's commit (its buckets), as safetensors bodies."""

    bodies: tuple[Any, ...]
    full: bool
    operation: Literal["push", "commit"] = "push"


@dataclass(frozen=True)
class ReloadUpdate:
    """A checkpoint on disk (on Ray: a path every replica's node reads)."""

    path: str
    full: bool
    allow_cast: bool


@dataclass(frozen=True)
class AdapterUpdate:
    """A LoRA adapter from a directory on disk, or pushed (safetensors with its config)."""

    name: str
    allow_cast: bool
    path: str | None = None
    body: Any = None  # bytes, or an awaitable of them, when pushed


@dataclass(frozen=True)
class AdapterDetach:
    pass


WeightOp = TensorsUpdate | ReloadUpdate | AdapterUpdate | AdapterDetach


def operation_of(op: WeightOp) -> str:
    """The operation's name in answers and in /metrics."""
    if isinstance(op, TensorsUpdate):
        return op.operation
    if isinstance(op, ReloadUpdate):
        return "reload"
    return "adapter_load" if isinstance(op, AdapterUpdate) else "adapter_unload"
