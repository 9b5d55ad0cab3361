"""Several servers behind one client: data plane routed, control plane broadcast.

- `score` splits a request by group over the healthy replicas (a group is never split, the cost
  is spread evenly); a replica that cannot be reached, is not ready or is overloaded is rested and
  its groups go to another one. When every replica has failed so, the retry policy's backoff is
  waited and all are tried again, up to `max_retries` rounds.
- `reload_weights`, `push_weights`, `load_adapter`, `unload_adapter` go to every replica and
  succeed only when every replica then reports the same weight version; otherwise
  `WeightSyncError` names each replica that failed or disagrees.

`connect("http://a:8000,http://b:8000")` gives a `VigorReplicas` for several URLs and a plain
`VigorClient` for one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._core import RequestCore, to_groups
from ._retry import NO_RETRY, RetryPolicy, as_policy, passing
from ._routing import ReplicaState, merge_results, plan_shards, split_urls
from .client import AsyncVigorClient, GroupLike, VigorClient
from .errors import VigorConnectionError, VigorError, VigorTimeoutError
from .schema import Group, ModelInfo, RewardsResponse

log = logging.getLogger(__name__)


class WeightSyncError(VigorError):
    """A broadcast weight change did not leave every replica on one version.

    `failures` maps a replica URL to the exception it raised; `versions` maps every replica that
    answered to the weight version it reports now.
    """

    def __init__(self, action: str, failures: dict[str, BaseException], versions: dict[str, int]):
        parts = [f"{url}: {type(e).__name__}: {e}" for url, e in failures.items()]
        if not failures:
            parts = [f"{url} is at version {v}" for url, v in versions.items()]
        super().__init__(
            f"{action} did not reach one weight version on every replica: " + "; ".join(parts)
        )
        self.action = action
        self.failures = failures
        self.versions = versions


class _ReplicasBase:
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

    def _reroutable(self, exc: VigorError) -> bool:
        """ "This replica, not this request": a failure another replica may not have."""
        return passing(exc, self.retry.statuses)

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

    def _plan(self, groups: list[Group]) -> list[tuple[int, list[int]]]:
        up = self._candidates()
        shards = plan_shards(groups, len(up), offset=self._turn)
        self._turn += 1
        return [(up[k], idx) for k, idx in enumerate(shards) if idx]

    def _fallbacks(self, first: int, tried: set[int]) -> list[int]:
        rest = [i for i in self._candidates() if i not in tried and i != first]
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


class VigorReplicas(_ReplicasBase):
    """Blocking client over several replicas; one `VigorClient` (one RequestCore) per replica."""

    client_class = VigorClient

    def __init__(self, base_urls: str | Sequence[str], **kwargs: Any):
        super().__init__(base_urls, **kwargs)
        self._pool = ThreadPoolExecutor(
            max_workers=max(2, len(self.urls)), thread_name_prefix="vigor-replica"
        )

    def _score_shard(self, first: int, groups: list[Group], options: dict) -> RewardsResponse:
        tried: set[int] = set()
        errors: list[VigorError] = []
        rounds, started = 0, time.monotonic()
        while True:
            order = self._fallbacks(first, tried)
            if not order:
                time.sleep(self._next_round(rounds, errors, started))
                rounds, tried = rounds + 1, set()
                continue
            i = order[0]
            tried.add(i)
            try:
                # Retrying here is rerouting: one try per replica per round.
                result = self.clients[i].score(groups, retry=NO_RETRY, **options)
            except VigorError as exc:
                if not self._reroutable(exc):
                    raise
                errors.append(exc)
                self.states[i].mark_down(exc, self.cooldown_s)
                log.warning(
                    "replica %s failed (%s); rerouting %d groups", self.urls[i], exc, len(groups)
                )
                continue
            self.states[i].mark_up()
            return result

    def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        """Same call and answer as `VigorClient.score`; the answer's weight_version is the oldest
        version any replica scored at (all are ≥ min_weight_version when that is given)."""
        parsed = self._validated(groups, options)
        plan = self._plan(parsed)
        futures = [
            (idx, self._pool.submit(self._score_shard, r, [parsed[i] for i in idx], options))
            for r, idx in plan
        ]
        return self._merge(len(parsed), [(idx, f.result()) for idx, f in futures])

    # --- every replica -----------------------------------------------------------------
    def _each(
        self, fn: Callable[[VigorClient], Any]
    ) -> tuple[dict[str, Any], dict[str, BaseException]]:
        futures = {
            u: self._pool.submit(fn, c) for u, c in zip(self.urls, self.clients, strict=True)
        }
        ok, failed = {}, {}
        for url, fut in futures.items():
            try:
                ok[url] = fut.result()
            except Exception as exc:  # each replica's own failure is reported, not raised alone
                failed[url] = exc
        return ok, failed

    def model_infos(self) -> dict[str, ModelInfo]:
        ok, failed = self._each(lambda c: c.model_info())
        if failed:
            raise WeightSyncError(
                "model_info", failed, {u: i.weight_version for u, i in ok.items()}
            )
        return ok

    def model_info(self) -> ModelInfo:
        """The info of the replica at the oldest weight version (what every replica has reached)."""
        return min(self.model_infos().values(), key=lambda i: i.weight_version)

    def ready(self) -> bool:
        ok, _ = self._each(lambda c: c.ready())
        return len(ok) == len(self.urls) and all(ok.values())

    def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> ModelInfo:
        """Block until every replica answers /ready with 200."""
        end = time.monotonic() + timeout
        while True:
            ok, _ = self._each(lambda c: c.ready())
            waiting = [u for u in self.urls if not ok.get(u)]
            if not waiting:
                return self.model_info()
            if time.monotonic() > end:
                raise VigorTimeoutError(
                    f"replicas not ready within {timeout:g} s: {', '.join(waiting)}"
                )
            time.sleep(poll)

    def _broadcast(self, action: str, *args: Any, **kwargs: Any) -> int:
        _, failed = self._each(lambda c: getattr(c, action)(*args, **kwargs))
        infos, info_failed = self._each(lambda c: c.model_info())
        versions = {u: i.weight_version for u, i in infos.items()}
        return self._check_versions(action, {**info_failed, **failed}, versions)

    def reload_weights(self, path: str, version: int | None = None, **kwargs: Any) -> int:
        """Every replica loads `path`; returns the one weight version they all report."""
        return self._broadcast("reload_weights", path, version=version, **kwargs)

    def push_weights(
        self, model_or_state_dict: Any, version: int | None = None, **kwargs: Any
    ) -> int:
        """Every replica receives the weights; returns the one weight version they all report."""
        return self._broadcast("push_weights", model_or_state_dict, version=version, **kwargs)

    def load_adapter(self, *args: Any, **kwargs: Any) -> int:
        return self._broadcast("load_adapter", *args, **kwargs)

    def unload_adapter(self, *args: Any, **kwargs: Any) -> int:
        return self._broadcast("unload_adapter", *args, **kwargs)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> VigorReplicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncVigorReplicas(_ReplicasBase):
    """Asyncio twin of `VigorReplicas`."""

    client_class = AsyncVigorClient

    async def _score_shard(self, first: int, groups: list[Group], options: dict) -> RewardsResponse:
        tried: set[int] = set()
        errors: list[VigorError] = []
        rounds, started = 0, time.monotonic()
        while True:
            order = self._fallbacks(first, tried)
            if not order:
                await asyncio.sleep(self._next_round(rounds, errors, started))
                rounds, tried = rounds + 1, set()
                continue
            i = order[0]
            tried.add(i)
            try:
                result = await self.clients[i].score(groups, retry=NO_RETRY, **options)
            except VigorError as exc:
                if not self._reroutable(exc):
                    raise
                errors.append(exc)
                self.states[i].mark_down(exc, self.cooldown_s)
                log.warning(
                    "replica %s failed (%s); rerouting %d groups", self.urls[i], exc, len(groups)
                )
                continue
            self.states[i].mark_up()
            return result

    async def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        parsed = self._validated(groups, options)
        plan = self._plan(parsed)
        results = await asyncio.gather(
            *(self._score_shard(r, [parsed[i] for i in idx], options) for r, idx in plan)
        )
        return self._merge(
            len(parsed), [(idx, res) for (_, idx), res in zip(plan, results, strict=True)]
        )

    async def _each(
        self, fn: Callable[[AsyncVigorClient], Any]
    ) -> tuple[dict[str, Any], dict[str, BaseException]]:
        results = await asyncio.gather(*(fn(c) for c in self.clients), return_exceptions=True)
        ok, failed = {}, {}
        for url, res in zip(self.urls, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                failed[url] = res
            else:
                ok[url] = res
        return ok, failed

    async def model_infos(self) -> dict[str, ModelInfo]:
        ok, failed = await self._each(lambda c: c.model_info())
        if failed:
            raise WeightSyncError(
                "model_info", failed, {u: i.weight_version for u, i in ok.items()}
            )
        return ok

    async def model_info(self) -> ModelInfo:
        return min((await self.model_infos()).values(), key=lambda i: i.weight_version)

    async def ready(self) -> bool:
        ok, _ = await self._each(lambda c: c.ready())
        return len(ok) == len(self.urls) and all(ok.values())

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> ModelInfo:
        end = time.monotonic() + timeout
        while True:
            ok, _ = await self._each(lambda c: c.ready())
            waiting = [u for u in self.urls if not ok.get(u)]
            if not waiting:
                return await self.model_info()
            if time.monotonic() > end:
                raise VigorTimeoutError(
                    f"replicas not ready within {timeout:g} s: {', '.join(waiting)}"
                )
            await asyncio.sleep(poll)

    async def _broadcast(self, action: str, *args: Any, **kwargs: Any) -> int:
        _, failed = await self._each(lambda c: getattr(c, action)(*args, **kwargs))
        infos, info_failed = await self._each(lambda c: c.model_info())
        versions = {u: i.weight_version for u, i in infos.items()}
        return self._check_versions(action, {**info_failed, **failed}, versions)

    async def reload_weights(self, path: str, version: int | None = None, **kwargs: Any) -> int:
        return await self._broadcast("reload_weights", path, version=version, **kwargs)

    async def push_weights(
        self, model_or_state_dict: Any, version: int | None = None, **kwargs: Any
    ) -> int:
        return await self._broadcast("push_weights", model_or_state_dict, version=version, **kwargs)

    async def load_adapter(self, *args: Any, **kwargs: Any) -> int:
        return await self._broadcast("load_adapter", *args, **kwargs)

    async def unload_adapter(self, *args: Any, **kwargs: Any) -> int:
        return await self._broadcast("unload_adapter", *args, **kwargs)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))

    async def __aenter__(self) -> AsyncVigorReplicas:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def connect(base_urls: str | Sequence[str], **kwargs: Any) -> VigorClient | VigorReplicas:
    """One URL → `VigorClient`; several (a list, or comma-separated) → `VigorReplicas`."""
    urls = split_urls(base_urls if isinstance(base_urls, str) else list(base_urls))
    return VigorClient(urls[0], **kwargs) if len(urls) == 1 else VigorReplicas(urls, **kwargs)


def aconnect(
    base_urls: str | Sequence[str], **kwargs: Any
) -> AsyncVigorClient | AsyncVigorReplicas:
    urls = split_urls(base_urls if isinstance(base_urls, str) else list(base_urls))
    return (
        AsyncVigorClient(urls[0], **kwargs)
        if len(urls) == 1
        else AsyncVigorReplicas(urls, **kwargs)
    )


__all__ = [
    "AsyncVigorReplicas",
    "VigorReplicas",
    "WeightSyncError",
    "aconnect",
    "connect",
]
