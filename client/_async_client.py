"""`AsyncVigorClient`: the asyncio twin of `VigorClient`, over the same core."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

import httpx

from . import _retry
from ._client_base import CLIENT_POLICY, ClientBase, GroupLike, T
from ._defaults import DEFAULT_ADMIN_TIMEOUT, DEFAULT_URL
from ._prepared_request import PreparedRequest
from ._transport import translate_transport_error as _transport_error
from ._weights import DEFAULT_BUCKET_BYTES, adapter_body, drive_async, push_plan
from .errors import VigorConnectionError, VigorTimeoutError
from .schema import ModelInfo, RewardsResponse, WeightUpdate


class AsyncVigorClient(ClientBase):
    """Asyncio client with the same calls as `VigorClient`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(timeout=self._timeout, transport=transport)

    async def _send(self, req: PreparedRequest) -> httpx.Response:
        try:
            return await self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from exc

    async def _call(self, req: PreparedRequest, model: type[T], retry: Any = CLIENT_POLICY) -> T:
        answer = await _retry.drive_async(self._exchange(req, retry), self._send)
        return self._result(req, answer, model)

    async def score(
        self, groups: Sequence[GroupLike], *, retry: Any = CLIENT_POLICY, **options: Any
    ) -> RewardsResponse:
        return await self._call(self._core.rewards(groups, **options), RewardsResponse, retry)

    async def model_info(self) -> ModelInfo:
        return await self._call(self._core.get("/v1/model"), ModelInfo)

    async def ready(self) -> bool:
        try:
            return (await self._send(self._core.get("/ready"))).status_code == 200
        except VigorConnectionError:
            return False

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> ModelInfo:
        end = time.monotonic() + timeout
        while not await self.ready():
            if time.monotonic() > end:
                raise VigorTimeoutError(f"{self.base_url} was not ready within {timeout:g} s")
            await asyncio.sleep(poll)
        return await self.model_info()

    async def reload_weights(
        self,
        path: str | os.PathLike[str],
        version: int | None = None,
        *,
        full: bool = True,
        allow_cast: bool = False,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        req = self._core.reload_weights(
            os.fspath(path), version=version, full=full, allow_cast=allow_cast, timeout=timeout
        )
        return await self._call(req, WeightUpdate)

    async def push_weights(
        self,
        model_or_state_dict: Any,
        version: int | None = None,
        *,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        full: bool | None = None,
        cast: bool = True,
        progress: bool = True,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        plan = push_plan(
            self._core,
            model_or_state_dict,
            version=version,
            bucket_bytes=bucket_bytes,
            full=full,
            cast=cast,
            progress=progress,
            timeout=timeout,
            restarts=self.retry.max_retries,
        )
        return await drive_async(plan, self._step)

    async def load_adapter(
        self,
        source: Any,
        version: int | None = None,
        *,
        config: Any = None,
        name: str | None = None,
        allow_cast: bool = True,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        if isinstance(source, str | os.PathLike):
            req = self._core.load_adapter(
                os.fspath(source),
                version=version,
                name=name,
                allow_cast=allow_cast,
                timeout=timeout,
            )
        else:
            body = await asyncio.to_thread(adapter_body, source, config)
            req = self._core.push_adapter(
                body, version=version, name=name, allow_cast=allow_cast, timeout=timeout
            )
        return await self._call(req, WeightUpdate)

    async def unload_adapter(
        self, version: int | None = None, *, timeout: float = DEFAULT_ADMIN_TIMEOUT
    ) -> WeightUpdate:
        req = self._core.unload_adapter(version=version, timeout=timeout)
        return await self._call(req, WeightUpdate)

    async def _step(self, req: PreparedRequest, model: type[T] | None) -> T | None:
        if model is not None:
            return await self._call(req, model)
        await _retry.drive_async(self._exchange(req, CLIENT_POLICY), self._send)
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncVigorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
