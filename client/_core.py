"""The request-building core shared by the sync and async clients; only sending differs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .errors import (
    ERRORS_BY_STATUS,
    VigorConnectionError,
    VigorProtocolError,
    VigorServerError,
    VigorTimeoutError,
)
from .schema import Group, RewardsRequest

T = TypeVar("T", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


def to_groups(groups: Iterable[Group | Mapping[str, Any]]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.model_validate(dict(g)) for g in groups]


class RequestCore:
    """Builds requests and turns responses into models or typed errors; sends nothing."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_token: str | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_token = api_token
        self.admin_token = admin_token

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
    ) -> PreparedRequest:
        body = RewardsRequest(
            groups=to_groups(groups),
            shaping=shaping,
            signals=list(signals),
            temperature=temperature,
            min_weight_version=min_weight_version,
            wait_s=wait_s,
            deadline_s=deadline_s,
        )
        return PreparedRequest(
            "POST",
            "/v1/rewards",
            json=body.model_dump(mode="json", exclude_none=True),
            headers=self.auth_headers(),
        )

    def get(self, path: str, *, admin: bool = False) -> PreparedRequest:
        return PreparedRequest("GET", path, headers=self.auth_headers(admin))

    def post(
        self, path: str, body: Any = None, *, admin: bool = False, timeout: float | None = None
    ) -> PreparedRequest:
        return PreparedRequest(
            "POST", path, json=body, headers=self.auth_headers(admin), timeout=timeout
        )

    def post_bytes(
        self,
        path: str,
        content: bytes,
        *,
        params: dict[str, Any] | None = None,
        admin: bool = True,
        timeout: float | None = None,
    ) -> PreparedRequest:
        headers = {"Content-Type": "application/octet-stream", **self.auth_headers(admin)}
        return PreparedRequest(
            "POST", path, content=content, headers=headers, params=params or {}, timeout=timeout
        )

    def build(
        self, client: httpx.Client | httpx.AsyncClient, req: PreparedRequest
    ) -> httpx.Request:
        extensions = {}
        if req.timeout is not None:
            extensions["timeout"] = httpx.Timeout(req.timeout, connect=10.0).as_dict()
        return client.build_request(
            req.method,
            self.base_url + req.path,
            json=req.json,
            content=req.content,
            headers=req.headers,
            params=req.params or None,
            extensions=extensions,
        )

    def parse(self, response: httpx.Response, model: type[T]) -> T:
        self.raise_for_error(response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise VigorProtocolError(
                f"{response.request.url} answered {response.status_code} with a body that is not a "
                f"{model.__name__}: {exc}"
            ) from exc

    def raise_for_error(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        code, message, version = "http_error", response.text[:500], None
        try:
            detail = json.loads(response.content)["error"]
            code, message = detail["code"], detail["message"]
            version = detail.get("current_weight_version")
        except (ValueError, KeyError, TypeError):
            pass
        retry_after = response.headers.get("Retry-After")
        cls = ERRORS_BY_STATUS.get(response.status_code, VigorServerError)
        raise cls(
            response.status_code,
            code,
            message,
            url=str(response.request.url),
            current_weight_version=version,
            retry_after=float(retry_after) if retry_after else None,
        )


def translate_transport_error(exc: httpx.HTTPError, url: str) -> VigorConnectionError:
    """Map httpx's transport errors onto ours at the boundary; callers `raise ... from exc`."""
    if isinstance(exc, httpx.TimeoutException):
        return VigorTimeoutError(f"no answer from {url} in time ({type(exc).__name__}: {exc})")
    return VigorConnectionError(f"cannot reach {url} ({type(exc).__name__}: {exc})")


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "PreparedRequest",
    "RequestCore",
    "VigorServerError",
    "to_groups",
    "translate_transport_error",
]
