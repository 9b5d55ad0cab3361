"""Rebuilding a trainer's groups from the flat lists it hands a reward function."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def contiguous_runs(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped into runs of equal consecutive keys: [a, a, b, a] → [[0, 1], [2], [3]]."""
    runs: list[list[int]] = []
    for i, key in enumerate(keys):
        if runs and keys[runs[-1][-1]] == key:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def fixed_runs(keys: Sequence[Hashable], size: int) -> list[list[int]]:
    """Consecutive blocks of `size`, each of which must hold a single key."""
    if size <= 0 or len(keys) % size:
        raise ValueError(f"{len(keys)} samples do not split into groups of {size}")
    runs = [list(range(s, s + size)) for s in range(0, len(keys), size)]
    for run in runs:
        if any(keys[i] != keys[run[0]] for i in run):
            raise ValueError(f"samples {run[0]}..{run[-1]} should share one prompt but do not")
    return runs


def by_key(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by equal key wherever they sit, groups in order of first appearance."""
    where: dict[Hashable, int] = {}
    groups: list[list[int]] = []
    for i, key in enumerate(keys):
        g = where.setdefault(key, len(groups))
        if g == len(groups):
            groups.append([])
        groups[g].append(i)
    return groups


def scatter(groups: Sequence[Sequence[int]], values: Sequence[Sequence[T]], n: int) -> list[T]:
    """Put per-group values back into the flat order the trainer used."""
    out: list = [None] * n
    for idx, vals in zip(groups, values, strict=True):
        if len(idx) != len(vals):
            raise ValueError(f"group of {len(idx)} samples got {len(vals)} values")
        for i, v in zip(idx, vals, strict=True):
            out[i] = v
    return out


def freeze(value: object) -> Hashable:
    """A hashable stand-in for a prompt: text stays text, chat messages become tuples."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value  # type: ignore[return-value]
