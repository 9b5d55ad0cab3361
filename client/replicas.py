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

The routing (shard plans, health, rounds, version checks) is `_routing.ReplicasBase`; this module
holds the twins over it, which differ only in how they wait and run shards side by side: threads
for `VigorReplicas`, one event loop for `AsyncVigorReplicas`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._requests import GroupLike
from ._retry import NO_RETRY
from ._routing import ReplicasBase, split_urls
from .client import AsyncVigorClient, VigorClient
from .errors import VigorError, VigorTimeoutError, WeightSyncError
from .schema import Group, ModelInfo, RewardsResponse


class VigorReplicas(ReplicasBase):
    """Blocking client over several replicas; one `VigorClient` (one RequestCore) per replica."""

    client_class = VigorClient

    def __init__(self, base_urls: str | Sequence[str], **kwargs: Any):
        super().__init__(base_urls, **kwargs)
        # Threads start only when needed. Many: a held group's route blocks until the server has
        # the group's other samples, and those may be queued in this same pool behind it.
        self._pool = ThreadPoolExecutor(
            max_workers=max(64, 4 * len(self.urls)), thread_name_prefix="vigor-replica"
        )

    def _score_shard(
        self, first: int, groups: list[Group], options: dict, held_key: str | None = None
    ) -> RewardsResponse:
        tried: set[int] = set()
        errors: list[VigorError] = []
        rounds, started = 0, time.monotonic()
        while True:
            order = self._fallbacks(first, tried, held_key)
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
                self._rest(i, exc, errors, len(groups))
                continue
            self.states[i].mark_up()
            return result

    def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        """Same call and answer as `VigorClient.score`; the answer's weight_version is the oldest
        version any replica scored at (all are ≥ min_weight_version when that is given)."""
        parsed = self._validated(groups, options)
        plan = self._plan(parsed)
        (r0, idx0, key0), rest = plan[0], plan[1:]
        futures = [
            (idx, self._pool.submit(self._score_shard, r, [parsed[i] for i in idx], options, key))
            for r, idx, key in rest
        ]
        # The first route on the caller's own thread: a one-sample request (as trainers send a
        # held group's samples) never waits for a pool thread.
        first = self._score_shard(r0, [parsed[i] for i in idx0], options, key0)
        return self._merge(len(parsed), [(idx0, first)] + [(i, f.result()) for i, f in futures])

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


class AsyncVigorReplicas(ReplicasBase):
    """Asyncio twin of `VigorReplicas`."""

    client_class = AsyncVigorClient

    async def _score_shard(
        self, first: int, groups: list[Group], options: dict, held_key: str | None = None
    ) -> RewardsResponse:
        tried: set[int] = set()
        errors: list[VigorError] = []
        rounds, started = 0, time.monotonic()
        while True:
            order = self._fallbacks(first, tried, held_key)
            if not order:
                await asyncio.sleep(self._next_round(rounds, errors, started))
                rounds, tried = rounds + 1, set()
                continue
            i = order[0]
            tried.add(i)
            try:
                result = await self.clients[i].score(groups, retry=NO_RETRY, **options)
            except VigorError as exc:
                self._rest(i, exc, errors, len(groups))
                continue
            self.states[i].mark_up()
            return result

    async def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        parsed = self._validated(groups, options)
        plan = self._plan(parsed)
        results = await asyncio.gather(
            *(self._score_shard(r, [parsed[i] for i in idx], options, key) for r, idx, key in plan)
        )
        return self._merge(
            len(parsed), [(idx, res) for (_, idx, _), res in zip(plan, results, strict=True)]
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
