"""The request-building core shared by the sync and async clients; only sending differs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
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
from .schema import AdapterRequest, CommitRequest, Group, ReloadRequest, RewardsRequest

T = TypeVar("T", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
SEND_CHUNK = 1 << 20
# Admin calls: above the server's own bound (--admin-timeout-s, 300 s), which answers first.
DEFAULT_ADMIN_TIMEOUT = 330.0
# Read when a client is given no token, as the server reads its own (VIGOR_API_TOKEN,
# VIGOR_ADMIN_TOKEN): one environment, e.g. a compose file's, configures both ends.
API_TOKEN_ENV = "VIGOR_API_TOKEN"
ADMIN_TOKEN_ENV = "VIGOR_ADMIN_TOKEN"


@dataclass(frozen=True)
class PreparedRequest:
    method: str
    path: str
    json: Any = None
    content: Any = None  # bytes, or a body of parts (`.parts`, `.length`) sent without copying
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


def to_groups(groups: Iterable[Group | Mapping[str, Any]]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.model_validate(dict(g)) for g in groups]


def token_or_env(token: str | None, env: str) -> str | None:
    """`token` as given; None reads `env`. An empty string (given or in `env`) is no token."""
    if token is None:
        token = os.environ.get(env)
    return token or None


class RequestCore:
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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_token = token_or_env(api_token, API_TOKEN_ENV)
        self.admin_token = token_or_env(admin_token, ADMIN_TOKEN_ENV)

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
        content: Any,
        *,
        params: dict[str, Any] | None = None,
        admin: bool = True,
        timeout: float | None = None,
    ) -> PreparedRequest:
        headers = {"Content-Type": "application/octet-stream", **self.auth_headers(admin)}
        return PreparedRequest(
            "POST", path, content=content, headers=headers, params=params or {}, timeout=timeout
        )

    # --- the weight plane (/admin, admin token) -------------------------------------------
    def reload_weights(
        self, path: str, *, version: int | None, full: bool, allow_cast: bool, timeout: float
    ) -> PreparedRequest:
        body = ReloadRequest(path=path, version=version, full=full, allow_cast=allow_cast)
        return self.post(
            "/admin/weights/reload", body.model_dump(mode="json"), admin=True, timeout=timeout
        )

    def push_weights(
        self, content: Any, *, version: int | None, full: bool, timeout: float
    ) -> PreparedRequest:
        params = _params(version=version, full=full)
        return self.post_bytes("/admin/weights/push", content, params=params, timeout=timeout)

    def create_upload(self, *, timeout: float) -> PreparedRequest:
        return self.post("/admin/weights/uploads", admin=True, timeout=timeout)

    def stage_bucket(self, upload_id: str, content: Any, *, timeout: float) -> PreparedRequest:
        path = f"/admin/weights/uploads/{upload_id}/buckets"
        return self.post_bytes(path, content, timeout=timeout)

    def commit_upload(
        self, upload_id: str, *, version: int | None, full: bool, timeout: float
    ) -> PreparedRequest:
        body = CommitRequest(version=version, full=full).model_dump(mode="json")
        path = f"/admin/weights/uploads/{upload_id}/commit"
        return self.post(path, body, admin=True, timeout=timeout)

    def abort_upload(self, upload_id: str, *, timeout: float) -> PreparedRequest:
        path = f"/admin/weights/uploads/{upload_id}"
        return PreparedRequest("DELETE", path, headers=self.auth_headers(True), timeout=timeout)

    def load_adapter(
        self,
        path: str,
        *,
        version: int | None,
        name: str | None,
        allow_cast: bool,
        timeout: float,
    ) -> PreparedRequest:
        body = AdapterRequest(path=path, version=version, name=name, allow_cast=allow_cast)
        return self.post(
            "/admin/adapter", body.model_dump(mode="json"), admin=True, timeout=timeout
        )

    def push_adapter(
        self,
        content: Any,
        *,
        version: int | None,
        name: str | None,
        allow_cast: bool,
        timeout: float,
    ) -> PreparedRequest:
        params = _params(version=version, name=name, allow_cast=allow_cast)
        return self.post_bytes("/admin/adapter", content, params=params, timeout=timeout)

    def unload_adapter(self, *, version: int | None, timeout: float) -> PreparedRequest:
        return PreparedRequest(
            "DELETE",
            "/admin/adapter",
            headers=self.auth_headers(True),
            params=_params(version=version),
            timeout=timeout,
        )

    def build(
        self, client: httpx.Client | httpx.AsyncClient, req: PreparedRequest
    ) -> httpx.Request:
        extensions = {}
        if req.timeout is not None:
            extensions["timeout"] = httpx.Timeout(req.timeout, connect=10.0).as_dict()
        content, headers = req.content, req.headers
        parts, length = None, 0
        if content is not None and not isinstance(content, bytes | bytearray):
            parts, length = content.parts, content.length  # a TensorBody: sent zero-copy
        elif content is not None and len(content) > SEND_CHUNK:
            parts, length = [content], len(content)
        if parts is not None:
            # Sent in slices: httpcore re-slices one big buffer on every partial send, which
            # makes a single 256 MB write quadratic (~60 MB/s on loopback).
            asynchronous = isinstance(client, httpx.AsyncClient)
            content = _aslices(parts) if asynchronous else _slices(parts)
            headers = {**headers, "Content-Length": str(length)}
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


def _slices(parts: Sequence[bytes | memoryview]) -> Iterator[memoryview]:
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, len(view), SEND_CHUNK):
            yield view[start : start + SEND_CHUNK]


async def _aslices(parts: Sequence[bytes | memoryview]) -> AsyncIterator[memoryview]:
    for piece in _slices(parts):
        yield piece


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, None left out and booleans as true/false."""
    out = {}
    for key, value in values.items():
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else value
    return out


def translate_transport_error(exc: httpx.HTTPError, url: str) -> VigorConnectionError:
    """Map httpx's transport errors onto ours at the boundary; callers `raise ... from exc`."""
    if isinstance(exc, httpx.TimeoutException):
        return VigorTimeoutError(f"no answer from {url} in time ({type(exc).__name__}: {exc})")
    return VigorConnectionError(f"cannot reach {url} ({type(exc).__name__}: {exc})")


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
