"""Score the input's groups through `VigorClient`, so the figures are those of the served weights.

Only groups with two different labels are sent (the others have no pair to compare and are
counted in the report). Each answered group is appended to the scores file before the next
request, so nothing scored is lost to Ctrl-C, and groups already there are skipped.

A request the server finds too large (413) is split: first into its groups, then a group into
parts of its completions. That is exact here, because vigor-eval asks for raw scores (shaping
"none") and signals, which are per completion (each sequence has its own positions, so a score
never depends on what shares the request); a rank reward would need the whole group. A single
completion that is still too large leaves its group unscored, skipped with the server's reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..client import VigorClient
from ..errors import InvalidRequestError, PayloadTooLargeError
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
        done = cache.records.get(g.key)
        # a record for another number of completions is not this group's: score it again
        if done is not None and len(done["scores"]) != len(g.completions):
            done = None
        if g.status == "scorable" and done is None and g.key not in seen:
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
                results = [_score_batch(client, info, batch, temperature, cache)]
            except PayloadTooLargeError:
                results = [_score_split(client, info, g, temperature, cache) for g in batch]
            for group, result in zip(batch, (r for rs in results for r in rs), strict=True):
                if result is not None:
                    cache.append(record(group, result, info.weight_version))
            bar.advance(len(batch))
    finally:
        bar.close()
    return len(todo)


def _score_batch(client, info, batch, temperature, cache) -> list[GroupResult]:
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
        raise ScoringError(f"asked for {len(batch)} groups, the server answered {len(res.groups)}")
    return list(res.groups)


def _score_split(client, info, group: EvalGroup, temperature, cache) -> list[GroupResult | None]:
    """One group, in as many parts of its completions as the server's limits need; [None] (the
    group skipped, its reason in `cache.skipped`) when one completion alone is too large."""
    parts: list[GroupResult] = []
    todo = [(0, len(group.completions))]
    while todo:
        lo, hi = todo.pop(0)
        part = group.part(lo, hi)
        try:
            parts.append(_score_batch(client, info, [part], temperature, cache)[0])
        except PayloadTooLargeError as exc:
            if hi - lo == 1:
                cache.skipped[group.key] = (
                    f"{group.name}: completions[{lo}] alone is larger than the server accepts "
                    f"({exc.message}); the group is not scored"
                )
                return [None]
            mid = (lo + hi) // 2
            todo[:0] = [(lo, mid), (mid, hi)]
    merged = parts[0].model_copy(deep=True)
    for p in parts[1:]:
        for field in ("rewards", "scores", "grad_norms", "num_tokens", "reasons"):
            getattr(merged, field).extend(getattr(p, field))
        for name, values in (p.signals or {}).items():
            merged.signals[name].extend(values)  # type: ignore[index]
    return [merged]


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
