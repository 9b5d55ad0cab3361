"""The request-building core shared by the sync and async clients; only sending differs.

`RequestCore` is the one object both clients talk to. Its parts, each in its own module:
defaults and tokens (`_defaults`), the request as plain data (`_prepared_request`), the weight
plane's requests (`_weight_requests`), bodies and errors at httpx's transport (`_transport`),
and answers turned into models or typed errors (`_responses`). The names defined here before
that split are imported back (`X as X`), so they stay importable from this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from ._defaults import (
    ADMIN_TOKEN_ENV,
    API_TOKEN_ENV,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEOUT_MARGIN_S,
    DEFAULT_URL,
    held_wait,
    token_or_env,
)
from ._defaults import DEFAULT_ADMIN_TIMEOUT as DEFAULT_ADMIN_TIMEOUT
from ._defaults import SERVER_HOLD_S as SERVER_HOLD_S
from ._prepared_request import UNVERSIONED as UNVERSIONED
from ._prepared_request import PreparedRequest
from ._responses import error_for, parse_response
from ._responses import parse_retry_after as parse_retry_after
from ._transport import NOT_SENT as NOT_SENT
from ._transport import SEND_CHUNK as SEND_CHUNK
from ._transport import TRANSIENT as TRANSIENT
from ._transport import sliced_body, translate_transport_error
from ._weight_requests import WeightPlaneRequests
from .errors import VigorServerError
from .schema import Focal, Group, RewardSpec, RewardsRequest

T = TypeVar("T", bound=BaseModel)


def to_groups(groups: Iterable[Group | Mapping[str, Any]]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.model_validate(dict(g)) for g in groups]


class RequestCore(WeightPlaneRequests):
    """Builds requests and turns responses into models or typed errors; sends nothing.

    A token left as None is read from VIGOR_API_TOKEN / VIGOR_ADMIN_TOKEN at construction;
    pass "" to send none whatever the environment holds.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_token: str | None = None,
        admin_token: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        timeout_margin_s: float = DEFAULT_TIMEOUT_MARGIN_S,
    ) -> None:
        if timeout_margin_s < 0:
            raise ValueError(f"timeout_margin_s must be >= 0, not {timeout_margin_s}")
        self.base_url = base_url.rstrip("/")
        self.api_token = token_or_env(api_token, API_TOKEN_ENV)
        self.admin_token = token_or_env(admin_token, ADMIN_TOKEN_ENV)
        self.timeout = timeout
        self.timeout_margin_s = timeout_margin_s

    def scoring_timeout(self, wait_s: float, deadline_s: float | None) -> float | None:
        """How long to listen for a scoring answer: the server waits up to wait_s for the weight
        version, then answers within deadline_s (504), or within the client's read timeout (the
        scoring bound when no deadline is given); plus the margin."""
        bound = deadline_s if deadline_s is not None else self.timeout.read
        if bound is None:
            return None  # no read timeout was asked for
        return wait_s + bound + self.timeout_margin_s

    def auth_headers(self, admin: bool = False) -> dict[str, str]:
        token = self.admin_token if admin else self.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def rewards(
        self,
        groups: Sequence[Group | Mapping[str, Any]],
        *,
        shaping: str = "rank",
        signals: Sequence[str] = (),
        temperature: float = 1.0,
        min_weight_version: int | None = None,
        wait_s: float = 0.0,
        deadline_s: float | None = None,
        hold_s: float | None = None,
        focal: Focal | Mapping[str, Any] | None = None,
        reward_spec: str | RewardSpec | Mapping[str, Any] | None = None,
    ) -> PreparedRequest:
        body = RewardsRequest(
            groups=to_groups(groups),
            shaping=shaping,
            signals=list(signals),
            temperature=temperature,
            min_weight_version=min_weight_version,
            wait_s=wait_s,
            deadline_s=deadline_s,
            hold_s=hold_s,
            focal=focal,
            reward_spec=reward_spec,
        )
        return PreparedRequest(
            "POST",
            "/v1/rewards",
            json=body.model_dump(mode="json", exclude_none=True, by_alias=True),
            headers=self.auth_headers(),
            timeout=self.scoring_timeout(body.wait_s + held_wait(body), body.deadline_s),
        )

    def get(self, path: str, *, admin: bool = False) -> PreparedRequest:
        return PreparedRequest("GET", path, headers=self.auth_headers(admin))

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        admin: bool = False,
        timeout: float | None = None,
        **retry_facts: Any,
    ) -> PreparedRequest:
        headers = self.auth_headers(admin)
        return PreparedRequest(
            "POST", path, json=body, headers=headers, timeout=timeout, **retry_facts
        )

    def post_bytes(
        self,
        path: str,
        content: Any,
        *,
        params: dict[str, Any] | None = None,
        admin: bool = True,
        timeout: float | None = None,
        **retry_facts: Any,
    ) -> PreparedRequest:
        headers = {"Content-Type": "application/octet-stream", **self.auth_headers(admin)}
        return PreparedRequest(
            "POST",
            path,
            content=content,
            headers=headers,
            params=params or {},
            timeout=timeout,
            **retry_facts,
        )

    def build(
        self, client: httpx.Client | httpx.AsyncClient, req: PreparedRequest
    ) -> httpx.Request:
        extensions = {}
        if req.timeout is not None:
            timeout = httpx.Timeout(req.timeout, connect=self.timeout.connect)
            extensions["timeout"] = timeout.as_dict()
        content, length = sliced_body(req.content, isinstance(client, httpx.AsyncClient))
        headers = req.headers if length is None else {**req.headers, "Content-Length": str(length)}
        return client.build_request(
            req.method,
            self.base_url + req.path,
            json=req.json,
            content=content,
            headers=headers,
            params=req.params or None,
            extensions=extensions,
        )

    def parse(self, response: httpx.Response, model: type[T]) -> T:
        return parse_response(response, model)

    def raise_for_error(self, response: httpx.Response) -> None:
        error = self.error_for(response)
        if error is not None:
            raise error

    def error_for(self, response: httpx.Response) -> VigorServerError | None:
        """The typed error an answer stands for, or None for a success."""
        return error_for(response)


__all__ = [
    "ADMIN_TOKEN_ENV",
    "API_TOKEN_ENV",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "PreparedRequest",
    "RequestCore",
    "VigorServerError",
    "to_groups",
    "token_or_env",
    "translate_transport_error",
]
