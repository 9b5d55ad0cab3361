"""The server's answer to a reward call: the rewards in TRL's order, and what is logged."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import VigorError
from ...schema import RewardsResponse
from ...wire import ErrorCode
from ..grouping import scatter
from .request import ScoringRequest

log = logging.getLogger(__name__)

# The server's reason for a held sample whose group never completed.
INCOMPLETE = ErrorCode.GROUP_INCOMPLETE


@dataclass
class RewardCall:
    """What one reward call saw, kept for inspection (tests, dashboards)."""

    step: int | None
    required_version: int | None
    weight_version: int | None
    num_samples: int
    num_groups: int
    seconds: float
    rewards: list[float | None] = field(repr=False, default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    number: int = 0  # this reward function's call count, the same on every process
    rank: int = 0
    held: bool = False  # groups spanned processes and were assembled by the server


class GroupIncompleteError(VigorError):
    """A group spanning processes never became whole on the server."""


def check_complete(
    request: ScoringRequest, response: RewardsResponse, hold_s: float | None
) -> None:
    """Refuse an answer in which a held group never completed (another process's piece never
    reached the server within the hold time): its ranks would be a guess."""
    held_for = f"{hold_s:g} s" if hold_s is not None else "its --group-hold-s"
    for group, result in zip(request.groups, response.groups, strict=True):
        if INCOMPLETE in result.reasons:
            raise GroupIncompleteError(
                f"group {group.id!r}: the server held this process's {len(result.reasons)} of "
                f"its {group.group_size} samples for {held_for} and the rest never came; "
                "another process's reward call failed or never ran (every "
                "process must call the reward function for every batch, with the same "
                "num_generations)"
            )


def report(
    response: RewardsResponse,
    request: ScoringRequest,
    n: int,
    call: RewardCall,
    signals: Sequence[str],
    log_metric: Any,
    log_extra: Any,
) -> list[float | None]:
    runs = request.runs
    rewards = scatter(runs, [g.rewards for g in response.groups], n)
    scores = scatter(runs, [g.scores for g in response.groups], n)
    reasons = scatter(runs, [g.reasons for g in response.groups], n)
    for i, r in enumerate(rewards):
        if r is None:
            log.warning("no VIGOR reward for sample %d: %s", i, reasons[i] or "no score")
    call.weight_version = response.weight_version
    call.rewards = rewards
    metrics = {
        "vigor/weight_version": float(response.weight_version),
        "vigor/unscored_frac": sum(s is None for s in scores) / max(n, 1),
    }
    valid = [s for s in scores if s is not None]
    if valid:
        metrics["vigor/score_mean"] = sum(valid) / len(valid)
    norms = [x for g in response.groups for x in g.grad_norms if x is not None]
    if norms:
        metrics["vigor/grad_norm_mean"] = sum(norms) / len(norms)
    for name in signals:
        values = [
            v for g in response.groups for v in (g.signals or {}).get(name, []) if v is not None
        ]
        if values:
            metrics[f"vigor/{name}"] = sum(values) / len(values)
    if call.required_version is not None:
        metrics["vigor/version_lag"] = float(response.weight_version - call.required_version)
        if response.weight_version != call.required_version:
            log.warning(
                "scored at weight version %d, the completions came from version %d",
                response.weight_version,
                call.required_version,
            )
    call.signals = {k: v for k, v in metrics.items() if not k.startswith("vigor/weight")}
    if log_metric is not None:
        for k, v in metrics.items():
            if math.isfinite(v):
                log_metric(k, v)
    if log_extra is not None:
        log_extra("vigor_score", scores)
    return rewards


__all__ = ["GroupIncompleteError", "RewardCall", "check_complete", "report"]
