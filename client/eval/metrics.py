"""Within-group agreement between a signal and the labels: pure Python, no numpy.

AUROC: over every pair of completions in the same group whose labels differ, the share where
the better-labelled one has the higher signal, ties counted half; pooled over groups (pairs are
summed, so a group weighs by its number of pairs). Spearman (numeric labels): per group, then the
mean over groups. Intervals: percentile bootstrap over groups, seeded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PairCount:
    """One group's pairs: `wins` where the better-labelled completion scores higher."""

    wins: int
    ties: int
    pairs: int

    @property
    def auroc(self) -> float | None:
        return (self.wins + 0.5 * self.ties) / self.pairs if self.pairs else None


def count_pairs(values: Sequence[float | None], labels: Sequence[float]) -> PairCount:
    """Pairs with different labels and both values present (a None value joins no pair)."""
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} values but {len(labels)} labels")
    wins = ties = pairs = 0
    n = len(values)
    for i in range(n):
        for j in range(i + 1, n):
            vi, vj = values[i], values[j]
            if vi is None or vj is None or labels[i] == labels[j]:
                continue
            pairs += 1
            better, worse = (vi, vj) if labels[i] > labels[j] else (vj, vi)
            if better > worse:
                wins += 1
            elif better == worse:
                ties += 1
    return PairCount(wins, ties, pairs)


def pooled_auroc(counts: Sequence[PairCount]) -> float | None:
    pairs = sum(c.pairs for c in counts)
    if not pairs:
        return None
    return sum(c.wins + 0.5 * c.ties for c in counts) / pairs


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(values: Sequence[float | None], labels: Sequence[float]) -> float | None:
    """Spearman's rho over the completions with a value; None when either side is constant."""
    pairs = [(v, y) for v, y in zip(values, labels, strict=True) if v is not None]
    if len(pairs) < 2:
        return None
    rv = ranks([v for v, _ in pairs])
    ry = ranks([y for _, y in pairs])
    mv, my = sum(rv) / len(rv), sum(ry) / len(ry)
    cov = sum((a - mv) * (b - my) for a, b in zip(rv, ry, strict=True))
    var_v = sum((a - mv) ** 2 for a in rv)
    var_y = sum((b - my) ** 2 for b in ry)
    if var_v == 0 or var_y == 0:
        return None
    return cov / (var_v * var_y) ** 0.5


def mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_interval(
    units: Sequence[T],
    statistic: Callable[[Sequence[T]], float | None],
    *,
    samples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of `statistic` over `samples` resamples of `units` with replacement.

    The same seed draws the same resamples for any statistic over the same number of units, so
    intervals of different signals are paired and a rerun reproduces them exactly.
    """
    if not units or samples < 1:
        return None
    rng = random.Random(seed)
    n = len(units)
    stats = []
    for _ in range(samples):
        value = statistic([units[rng.randrange(n)] for _ in range(n)])
        if value is not None:
            stats.append(value)
    if not stats:
        return None
    stats.sort()
    tail = (1 - level) / 2
    return quantile(stats, tail), quantile(stats, 1 - tail)
