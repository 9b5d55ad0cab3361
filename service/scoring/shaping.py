"""Turning raw VIGOR scores into rewards within one group (pure Python, no torch)."""

from __future__ import annotations

from collections.abc import Sequence


def rank_rewards(scores: Sequence[float | None]) -> list[float]:
    """Rewards evenly spaced in [−1, 1] by rank within the group; 0 for a group of one.

    Matches the reference's stable double argsort: ties go to position (earlier = lower rank),
    and a member without a score (None: empty completion) ranks below every scored member —
    the reference substitutes `min − 1e-3`, which orders the same way.
    """
    g = len(scores)
    if g == 1:
        return [0.0]
    order = sorted(range(g), key=lambda i: (scores[i] is not None, scores[i] or 0.0, i))
    rewards = [0.0] * g
    for rank, i in enumerate(order):
        rewards[i] = 2.0 * rank / (g - 1) - 1.0
    return rewards


def shape(scores: Sequence[float | None], how: str) -> list[float | None]:
    if how == "rank":
        return list(rank_rewards(scores))
    if how == "none":
        return list(scores)
    raise ValueError(f"unknown shaping {how!r}")
