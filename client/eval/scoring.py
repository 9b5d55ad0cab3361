"""Score the input's groups through `VigorClient`, so the figures are those of the served weights.

Only groups with two different labels are sent (the others have no pair to compare and are
counted in the report). Each answered group is appended to the scores file before the next
request, so nothing scored is lost to Ctrl-C, and groups already there are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..client import VigorClient
from ..errors import InvalidRequestError
from ..schema import GroupResult
from .cache import ScoreCache
from .data import EvalGroup
from .progress import GroupProgress
from .signals import SERVER_SIGNALS


class ScoringError(RuntimeError):
    pass


def pending(groups: Sequence[EvalGroup], cache: ScoreCache) -> list[EvalGroup]:
    """Scorable groups not yet in the cache, each distinct group once."""
    seen: set[str] = set()
    out = []
    for g in groups:
        if g.status == "scorable" and g.key not in cache.records and g.key not in seen:
            seen.add(g.key)
            out.append(g)
    return out


def score_groups(
    client: VigorClient,
    groups: Sequence[EvalGroup],
    cache: ScoreCache,
    *,
    groups_per_request: int = 8,
    temperature: float = 1.0,
    progress: bool = True,
) -> int:
    """Score what the cache lacks; return how many groups were scored now."""
    if groups_per_request < 1:
        raise ValueError("groups_per_request must be at least 1")
    todo = pending(groups, cache)
    if not todo:
        return 0
    info = client.model_info()
    header = {
        "model": info.model,
        "weight_version": info.weight_version,
        "temperature": temperature,
        "signals": list(SERVER_SIGNALS),
    }
    cache.check_or_set_header(header)
    total = sum(1 for g in groups if g.status == "scorable")
    bar = GroupProgress(total, total - len(todo), enabled=progress)
    try:
        for start in range(0, len(todo), groups_per_request):
            batch = todo[start : start + groups_per_request]
            try:
                res = client.score(
                    [g.request() for g in batch],
                    signals=list(SERVER_SIGNALS),
                    temperature=temperature,
                    shaping="none",
                )
            except InvalidRequestError as exc:
                raise ScoringError(
                    f"the server refused {_lines(batch)}: {_name_lines(exc.message, batch)}"
                ) from exc
            if (res.model, res.weight_version) != (info.model, info.weight_version):
                raise ScoringError(
                    f"the server's weights changed during the run (from {info.model} version "
                    f"{info.weight_version} to {res.model} version {res.weight_version}); scores "
                    f"so far are kept in {cache.path}, but this run cannot mix them"
                )
            if len(res.groups) != len(batch):
                raise ScoringError(
                    f"asked for {len(batch)} groups, the server answered {len(res.groups)}"
                )
            for group, result in zip(batch, res.groups, strict=True):
                cache.append(record(group, result, res.weight_version))
            bar.advance(len(batch))
    finally:
        bar.close()
    return len(todo)


def record(group: EvalGroup, result: GroupResult, weight_version: int) -> dict[str, Any]:
    n = len(group.completions)
    for field in ("scores", "num_tokens", "reasons"):
        if len(getattr(result, field)) != n:
            raise ScoringError(
                f"{group.name}: the server returned {field} for "
                f"{len(getattr(result, field))} completions, not {n}"
            )
    signals = result.signals or {}
    missing = [s for s in SERVER_SIGNALS if len(signals.get(s) or []) != n]
    if missing:
        raise ScoringError(f"{group.name}: the server did not return {', '.join(missing)}")
    return {
        "key": group.key,
        "line": group.line,
        "id": group.id,
        "weight_version": weight_version,
        "scores": result.scores,
        "num_tokens": result.num_tokens,
        "reasons": result.reasons,
        "signals": {s: signals[s] for s in SERVER_SIGNALS},
    }


def _lines(batch: Sequence[EvalGroup]) -> str:
    lines = [g.line for g in batch]
    return f"line {lines[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"


def _name_lines(message: str, batch: Sequence[EvalGroup]) -> str:
    """The server names `groups[k]` of the request; the user knows input lines."""

    def sub(m: re.Match[str]) -> str:
        k = int(m.group(1))
        return f"line {batch[k].line}: " if k < len(batch) else m.group(0)

    return re.sub(r"groups\[(\d+)\]\.?", sub, message)
