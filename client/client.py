"""`VigorClient` (blocking) and `AsyncVigorClient`: twins over one request builder and one driver.

Each call builds its request with `RequestCore` (_requests.py), runs the retry exchange
(_retry.py) or the push plan (_weights.py) with the driver (_drive.py), and reads the answer
(_responses.py). The twins differ only in how they send and wait: httpx.Client and time.sleep,
or httpx.AsyncClient and asyncio.sleep.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import _retry
from ._drive import drive_async, drive_sync
from ._requests import (
    DEFAULT_ADMIN_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEOUT_MARGIN_S,
    DEFAULT_URL,
    GroupLike,
    PreparedRequest,
    RequestCore,
)
from ._responses import check_rewards, error_for, parse_response, translate_transport_error
from ._retry import Recovered, RecoveredUpdate, RetryPolicy, as_policy
from ._weights import DEFAULT_BUCKET_BYTES, adapter_body, push_plan
from .errors import VigorConnectionError, VigorServerError, VigorTimeoutError
from .schema import ModelInfo, RewardsRequest, RewardsResponse, WeightUpdate

T = TypeVar("T", bound=BaseModel)

CLIENT_POLICY = object()  # `retry=` default: "use the client's retry policy"


class ClientBase:
    """Options shared by both clients.

    `timeout`: seconds (or an httpx.Timeout) for a scoring pass and for small calls; a scoring
    request listens `wait_s + (deadline_s or timeout) + timeout_margin_s`, since the server may
    wait that long by its own bounds. `retry`: a `RetryPolicy`, a number of retries, or None for
    none; see `vigor_client._retry` for which calls are repeated and on which failures.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        timeout_margin_s: float = DEFAULT_TIMEOUT_MARGIN_S,
        retry: RetryPolicy | int | None = RetryPolicy(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._core = RequestCore(
            base_url,
            api_token=api_token,
            admin_token=admin_token,
            timeout=self._timeout,
            timeout_margin_s=timeout_margin_s,
        )
        self.retry = as_policy(retry)
        self._rng = random.Random(self.retry.seed)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def options(self) -> dict[str, Any]:
        """The keyword arguments that build a client like this one (its twin, sync or async)."""
        core = self._core
        return {
            "api_token": core.api_token,
            "admin_token": core.admin_token,
            "timeout": self._timeout,
            "timeout_margin_s": core.timeout_margin_s,
            "retry": self.retry,
        }

    def _exchange(self, req: PreparedRequest, retry: Any):
        policy = self.retry if retry is CLIENT_POLICY else as_policy(retry)  # type: ignore[arg-type]
        return _retry.exchange(req, error_for, policy, self._rng)

    def _result(self, req: PreparedRequest, answer: Any, model: type[T]) -> T:
        if isinstance(answer, Recovered):
            return RecoveredUpdate(operation=req.operation, weight_version=answer.version)  # type: ignore[return-value]
        parsed = parse_response(answer, model)
        if isinstance(parsed, RewardsResponse) and isinstance(req.body, RewardsRequest):
            check_rewards(req.body, parsed, str(answer.request.url))
        return parsed

    def _plan(self, source: Any, version: int | None, **options: Any):
        return push_plan(
            self._core, source, version=version, restarts=self.retry.max_retries, **options
        )


class VigorClient(ClientBase):
    """Blocking client. Every call has a timeout; server errors raise typed `VigorServerError`s."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(timeout=self._timeout, transport=transport)

    def _send(self, req: PreparedRequest) -> httpx.Response:
        """One try, no retries."""
        try:
            return self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, self.base_url) from exc

    def _call(self, req: PreparedRequest, model: type[T], retry: Any = CLIENT_POLICY) -> T:
        answer = drive_sync(self._exchange(req, retry), self._send)
        return self._result(req, answer, model)

    def score(
        self, groups: Sequence[GroupLike], *, retry: Any = CLIENT_POLICY, **options: Any
    ) -> RewardsResponse:
        """Score groups of completions; options: shaping, signals, temperature,
        min_weight_version, wait_s, deadline_s, hold_s, focal, reward_spec (a variant name or spec),
        estimator ({"kind": "sketch", "k": 128, "seed": 0} for the sketched norm).
        `retry` overrides the client's policy."""
        return self._call(self._core.rewards(groups, **options), RewardsResponse, retry)

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

    # --- the weight plane (needs the admin token) ----------------------------------------
    def reload_weights(
        self,
        path: str | os.PathLike[str],
        version: int | None = None,
        *,
        full: bool = True,
        allow_cast: bool = False,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        """Load a checkpoint (HF directory or .safetensors file) from the server's own disk."""
        req = self._core.reload_weights(
            os.fspath(path), version=version, full=full, allow_cast=allow_cast, timeout=timeout
        )
        return self._call(req, WeightUpdate)

    def push_weights(
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
        """Send weights over HTTP in buckets of at most `bucket_bytes`, then commit them as one
        swap. `full` (default: True for a module, False for a dict) requires every parameter;
        `cast` converts floating tensors to the served dtype first. Buckets are sent straight
        from the tensors' memory: do not modify them until this returns. Needs torch."""
        plan = self._plan(
            model_or_state_dict,
            version,
            bucket_bytes=bucket_bytes,
            full=full,
            cast=cast,
            progress=progress,
            timeout=timeout,
        )
        return drive_sync(plan, self._step)

    def load_adapter(
        self,
        source: Any,
        version: int | None = None,
        *,
        config: Any = None,
        name: str | None = None,
        allow_cast: bool = True,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        """Attach a PEFT LoRA adapter: a directory path on the server's disk, a peft model, or a
        dict of LoRA tensors with its `config`. Scores then differentiate the LoRA weights only."""
        if isinstance(source, str | os.PathLike):
            req = self._core.load_adapter(
                os.fspath(source),
                version=version,
                name=name,
                allow_cast=allow_cast,
                timeout=timeout,
            )
        else:
            req = self._core.push_adapter(
                adapter_body(source, config),
                version=version,
                name=name,
                allow_cast=allow_cast,
                timeout=timeout,
            )
        return self._call(req, WeightUpdate)

    def unload_adapter(
        self, version: int | None = None, *, timeout: float = DEFAULT_ADMIN_TIMEOUT
    ) -> WeightUpdate:
        """Remove the adapter: the base model is served (and scored in full) again."""
        return self._call(self._core.unload_adapter(version=version, timeout=timeout), WeightUpdate)

    def _step(self, step: tuple[PreparedRequest, type[T] | None]) -> T | None:
        """One step of a push plan: its request, retried by the client's policy."""
        req, model = step
        if model is not None:
            return self._call(req, model)
        drive_sync(self._exchange(req, CLIENT_POLICY), self._send)
        return None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VigorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncVigorClient(ClientBase):
    """Asyncio client with the same calls as `VigorClient`."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(timeout=self._timeout, transport=transport)

    async def _send(self, req: PreparedRequest) -> httpx.Response:
        try:
            return await self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, self.base_url) from exc

    async def _call(self, req: PreparedRequest, model: type[T], retry: Any = CLIENT_POLICY) -> T:
        answer = await drive_async(self._exchange(req, retry), self._send)
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
        plan = self._plan(
            model_or_state_dict,
            version,
            bucket_bytes=bucket_bytes,
            full=full,
            cast=cast,
            progress=progress,
            timeout=timeout,
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

    async def _step(self, step: tuple[PreparedRequest, type[T] | None]) -> T | None:
        req, model = step
        if model is not None:
            return await self._call(req, model)
        await drive_async(self._exchange(req, CLIENT_POLICY), self._send)
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncVigorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncVigorClient", "GroupLike", "VigorClient", "VigorServerError"]
