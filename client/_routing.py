"""Spreading groups over replicas: pure helpers (no I/O) shared by the sync and async clients."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

from .schema import Group, RewardsResponse

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
