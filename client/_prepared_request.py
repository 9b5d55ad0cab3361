"""A request as plain data: what to send, and the facts the retry loop needs to repeat it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._retry import Idempotency

UNVERSIONED = "without a version the server applies served + 1, so a repeat would apply twice"


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    path: str
    json: Any = None
    content: Any = None  # bytes, or a body of parts (`.parts`, `.length`) sent without copying
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    idempotency: Idempotency = Idempotency.SAFE
    why_not_idempotent: str = ""
    version: int | None = None  # the weight version a BY_VERSION call sets
    operation: str | None = None  # its WeightUpdate.operation


def weight_change(version: int | None, operation: str) -> dict[str, Any]:
    """The retry facts of a weight change: idempotent by version when it names one."""
    if version is None:
        return {"idempotency": Idempotency.NONE, "why_not_idempotent": UNVERSIONED}
    return {"idempotency": Idempotency.BY_VERSION, "version": version, "operation": operation}
