"""The routing policy `VigorReplicas` and its asyncio twin share: health, shards, rounds, versions.

Sends nothing itself: the twins drive it, one client per replica, and differ only in how they
wait and run things side by side. The pure arithmetic (shard plans, merging) is in `_routing`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from ._client_base import GroupLike
from ._core import RequestCore, to_groups
from ._retry import RetryPolicy, as_policy, passing
from ._routing import ReplicaState, merge_results, plan_routes, rendezvous, split_urls
from .errors import VigorConnectionError, VigorError, WeightSyncError
from .schema import Group, RewardsResponse

# The name it had before the split, so log filters and handlers set on it still apply.
log = logging.getLogger("vigor_client.replicas")


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
        waits = [e.retry_after for e in errors if getattr(e, "retry_after", None) is not None]
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
