"""`VigorClient` (blocking) and `AsyncVigorClient`: the same calls over one RequestCore."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from ._core import DEFAULT_TIMEOUT, DEFAULT_URL, PreparedRequest, RequestCore
from ._core import translate_transport_error as _transport_error
from .errors import VigorConnectionError, VigorServerError, VigorTimeoutError
from .schema import Group, ModelInfo, RewardsResponse

T = TypeVar("T", bound=BaseModel)
GroupLike = Group | Mapping[str, Any]


class _ClientBase:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._core = RequestCore(base_url, api_token=api_token, admin_token=admin_token)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    @property
    def base_url(self) -> str:
        return self._core.base_url


class VigorClient(_ClientBase):
    """Blocking client. Every call has a timeout; server errors raise typed `VigorServerError`s."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(timeout=self._timeout, transport=transport)

    def _send(self, req: PreparedRequest) -> httpx.Response:
        try:
            return self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from exc

    def _call(self, req: PreparedRequest, model: type[T]) -> T:
        return self._core.parse(self._send(req), model)

    def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        """Score groups of completions; options: shaping, signals, temperature,
        min_weight_version, wait_s, deadline_s."""
        return self._call(self._core.rewards(groups, **options), RewardsResponse)

    def model_info(self) -> ModelInfo:
        return self._call(self._core.get("/v1/model"), ModelInfo)

    def ready(self) -> bool:
        try:
            return self._send(self._core.get("/ready")).status_code == 200
        except VigorConnectionError:
            return False

    def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> ModelInfo:
        """Block until /ready answers 200, then return the model info."""
        end = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > end:
                raise VigorTimeoutError(f"{self.base_url} was not ready within {timeout:g} s")
            time.sleep(poll)
        return self.model_info()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VigorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncVigorClient(_ClientBase):
    """Asyncio client with the same calls as `VigorClient`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(timeout=self._timeout, transport=transport)

    async def _send(self, req: PreparedRequest) -> httpx.Response:
        try:
            return await self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from exc

    async def _call(self, req: PreparedRequest, model: type[T]) -> T:
        return self._core.parse(await self._send(req), model)

    async def score(self, groups: Sequence[GroupLike], **options: Any) -> RewardsResponse:
        return await self._call(self._core.rewards(groups, **options), RewardsResponse)

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

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncVigorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncVigorClient", "VigorClient", "VigorServerError"]
