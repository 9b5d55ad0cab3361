"""`AsyncVigorReplicas`: the asyncio twin of `VigorReplicas`, shards gathered on one loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._async_client import AsyncVigorClient
from ._client_base import GroupLike
from ._replicas_base import ReplicasBase
from ._retry import NO_RETRY
from .errors import VigorError, VigorTimeoutError, WeightSyncError
from .schema import Group, ModelInfo, RewardsResponse


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
