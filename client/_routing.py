"""Routing over replicas: which replica scores which groups, and what a failure moves.

Sends nothing: the twins in replicas.py drive it, one client per replica, and differ only in
how they wait and run things side by side. The pure arithmetic (shard plans, rendezvous keys,
merging) comes first; `ReplicasBase`, the policy both twins share (health, rounds, versions),
after it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._requests import GroupLike, RequestCore, to_groups
from ._retry import RetryPolicy, as_policy, passing
from .errors import VigorConnectionError, VigorError, WeightSyncError
from .schema import Group, RewardsResponse

# Logged under the public module's name, so filters and handlers set on it apply.
log = logging.getLogger("vigor_client.replicas")

# Characters per token, to weigh text against ids when estimating a group's cost.
CHARS_PER_TOKEN = 4


def _length(ids: list[int] | None, text: str | None) -> int:
    if ids is not None:
        return len(ids)
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


def group_cost(group: Group) -> int:
    """Tokens the engine processes for a group: every completion re-reads the prompt."""
    if group.messages is not None:
        prompt = math.ceil(sum(len(m.content) + 8 for m in group.messages) / CHARS_PER_TOKEN)
    else:
        prompt = _length(group.prompt_ids, group.prompt)
    if group.completion_ids is not None:
        return sum(prompt + len(c) for c in group.completion_ids)
    return sum(prompt + _length(None, c) for c in group.completions or [])


def plan_shards(groups: list[Group], n: int, offset: int = 0) -> list[list[int]]:
    """Split group indices into at most n shards of similar cost; a group is never split.

    Longest-processing-time first: the costliest group goes to the least-loaded shard. `offset`
    rotates which shard wins ties, so a stream of one-group requests cycles over replicas.
    Each shard keeps its groups in request order.
    """
    if n <= 0:
        raise ValueError("need at least one replica")
    loads = [0] * n
    shards: list[list[int]] = [[] for _ in range(n)]
    order = sorted(range(len(groups)), key=lambda i: (-group_cost(groups[i]), i))
    for i in order:
        k = min(range(n), key=lambda s: (loads[s], (s - offset) % n))
        loads[k] += group_cost(groups[i])
        shards[k].append(i)
    return [sorted(s) for s in shards]


def rendezvous(key: str, urls: list[str]) -> list[int]:
    """Indices into `urls`, the replica that holds the group `key` first: rendezvous hashing, so
    every client ranks the same URLs alike, and a replica that leaves moves only its own keys."""

    def weight(i: int) -> bytes:
        return hashlib.blake2b(f"{urls[i]}\0{key}".encode(), digest_size=8).digest()

    return sorted(range(len(urls)), key=weight, reverse=True)


@dataclass(frozen=True)
class Route:
    replica: int  # index into the URLs planned over
    groups: list[int]  # indices into the request's groups, in request order
    held_key: str | None = None  # the held group's id: where its other samples go too


def plan_routes(groups: list[Group], urls: list[str], offset: int = 0) -> list[Route]:
    """Which replica scores which groups. A held group (group_size set: the request carries only
    some of its samples) goes to its id's replica, one route per id, since a server assembles a
    group only from samples it holds itself; the other groups are sharded by cost."""
    held: dict[str, list[int]] = {}
    free = []
    for i, g in enumerate(groups):
        if g.group_size is not None:
            held.setdefault(str(g.id), []).append(i)
        else:
            free.append(i)
    routes = [Route(rendezvous(key, urls)[0], idx, key) for key, idx in held.items()]
    for k, shard in enumerate(plan_shards([groups[i] for i in free], len(urls), offset)):
        if shard:
            routes.append(Route(k, [free[j] for j in shard]))
    return routes


def merge_results(
    n_groups: int, parts: list[tuple[list[int], RewardsResponse]]
) -> tuple[RewardsResponse, set[int]]:
    """Reassemble shard responses in request order; also returns the weight versions seen."""
    slots: list = [None] * n_groups
    versions: set[int] = set()
    model = ""
    for indices, response in parts:
        if len(response.groups) != len(indices):
            raise ValueError(f"a replica answered {len(response.groups)} groups for {len(indices)}")
        versions.add(response.weight_version)
        model = response.model
        for i, g in zip(indices, response.groups, strict=True):
            slots[i] = g
    # The oldest version is the one every group is guaranteed to have been scored at or after.
    version = min(versions) if versions else 0
    return RewardsResponse(model=model, weight_version=version, groups=slots), versions


@dataclass
class ReplicaState:
    """Health bookkeeping for one replica: after a transport failure it rests for `cooldown_s`."""

    url: str
    down_until: float = 0.0
    last_error: str | None = None
    failures: int = field(default=0)

    def available(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) >= self.down_until

    def mark_down(self, error: BaseException, cooldown_s: float) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self.down_until = time.monotonic() + cooldown_s

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.last_error = None


def split_urls(urls: str | list[str] | tuple[str, ...]) -> list[str]:
    """'http://a:8000,http://b:8000' or a list → a list of distinct base URLs."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for u in items:
        u = u.strip().rstrip("/")
        if u and u not in out:
            out.append(u)
    if not out:
        raise ValueError("no base URL given")
    return out


class ReplicasBase:
    client_class: type  # one client (one RequestCore) per replica; the twins differ only here

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        cooldown_s: float = 5.0,
        retry: RetryPolicy | int | None = RetryPolicy(),  # noqa: B008 - frozen
        **kwargs: Any,
    ) -> None:
        self.urls = split_urls(base_urls if isinstance(base_urls, str) else list(base_urls))
        self.states = [ReplicaState(u) for u in self.urls]
        self.cooldown_s = cooldown_s
        self.retry = as_policy(retry)
        self._rng = random.Random(self.retry.seed)
        self._turn = 0
        self.clients = [self.client_class(u, retry=retry, **kwargs) for u in self.urls]

    def options(self) -> dict[str, Any]:
        """The keyword arguments that build replicas like these (their twin, sync or async)."""
        return {**self.clients[0].options(), "cooldown_s": self.cooldown_s, "retry": self.retry}

    def _reroutable(self, exc: VigorError) -> bool:
        """ "This replica, not this request": a failure another replica may not have."""
        return passing(exc, self.retry.statuses)

    def _rest(self, i: int, exc: VigorError, errors: list[VigorError], n_groups: int) -> None:
        """Rest replica i after `exc` so its groups go elsewhere; a failure of the request
        itself (one another replica would have too) is raised instead."""
        if not self._reroutable(exc):
            raise exc
        errors.append(exc)
        self.states[i].mark_down(exc, self.cooldown_s)
        log.warning("replica %s failed (%s); rerouting %d groups", self.urls[i], exc, n_groups)

    def _next_round(self, rounds: int, errors: list[VigorError], started: float) -> float:
        """The pause before trying every replica again, or raise when the bound is reached."""
        if rounds >= self.retry.max_retries:
            error = self._no_replica_left(errors)
            why = f"{rounds + 1} rounds over {len(self.urls)} replicas"
            error.record_attempts(errors[:-1], time.monotonic() - started, why)
            raise error
        waits = [
            self.retry.after(e.retry_after, self._rng)
            for e in errors
            if getattr(e, "retry_after", None) is not None
        ]
        backoff = self.retry.backoff(rounds + 1, self._rng)
        return min(max([backoff, *waits]), self.retry.max_retry_after_s)

    def _candidates(self) -> list[int]:
        now = time.monotonic()
        up = [i for i, s in enumerate(self.states) if s.available(now)]
        return up or list(range(len(self.states)))  # all resting: try everyone again

    def _validated(self, groups: Sequence[GroupLike], options: dict) -> list[Group]:
        """Parse once and check the whole request as one server would (empty, bad options)."""
        parsed = to_groups(groups)
        RequestCore(self.urls[0]).rewards(parsed, **options)
        return parsed

    def _plan(self, groups: list[Group]) -> list[tuple[int, list[int], str | None]]:
        """(replica, group indices, held group key) per shard to send."""
        up = self._candidates()
        routes = plan_routes(groups, [self.urls[i] for i in up], offset=self._turn)
        self._turn += 1
        return [(up[r.replica], r.groups, r.held_key) for r in routes]

    def _fallbacks(self, first: int, tried: set[int], held_key: str | None = None) -> list[int]:
        rest = [i for i in self._candidates() if i not in tried and i != first]
        if held_key is not None:  # where the group's other samples go once `first` is resting
            rest.sort(key=rendezvous(held_key, self.urls).index)
        return ([first] if first not in tried else []) + rest

    def _no_replica_left(self, errors: list[VigorError]) -> VigorConnectionError:
        why = "; ".join(f"{s.url}: {s.last_error}" for s in self.states if s.last_error)
        return VigorConnectionError(f"no replica could score the groups ({why})")

    def _merge(self, n: int, parts: list[tuple[list[int], RewardsResponse]]) -> RewardsResponse:
        merged, versions = merge_results(n, parts)
        if len(versions) > 1:
            log.warning("replicas answered at different weight versions %s", sorted(versions))
        return merged

    def _check_versions(
        self, action: str, failures: dict[str, BaseException], versions: dict[str, int]
    ) -> int:
        if failures or len(set(versions.values())) != 1:
            raise WeightSyncError(action, failures, versions)
        return next(iter(versions.values()))
