"""What `VigorClient` and `AsyncVigorClient` share: options, the core, the retry exchange."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import _retry
from ._core import RequestCore
from ._defaults import DEFAULT_TIMEOUT, DEFAULT_TIMEOUT_MARGIN_S, DEFAULT_URL
from ._prepared_request import PreparedRequest
from ._retry import Recovered, RecoveredUpdate, RetryPolicy, as_policy
from .schema import Group

T = TypeVar("T", bound=BaseModel)
GroupLike = Group | Mapping[str, Any]

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
        return _retry.exchange(req, self._core.error_for, policy, self._rng)

    def _result(self, req: PreparedRequest, answer: Any, model: type[T]) -> T:
        if isinstance(answer, Recovered):
            return RecoveredUpdate(operation=req.operation, weight_version=answer.version)  # type: ignore[return-value]
        return self._core.parse(answer, model)
