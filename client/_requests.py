"""Building requests: every call of the service as plain data (`PreparedRequest`); sends nothing.

`RequestCore` is the one object both clients (client.py) ask for a request: scoring, model info,
and the weight plane's calls (/admin, admin token). A request carries the facts the retry loop
needs to repeat it (`Idempotency`, see _retry.py); `build` turns it into an httpx request, with
large bodies handed over in slices. What a client assumes when told nothing (URL, timeouts,
tokens) is here too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ._retry import Idempotency
from .schema import (
    AdapterRequest,
    CommitRequest,
    ExactEstimator,
    Focal,
    Group,
    ReloadRequest,
    RewardSpec,
    RewardsRequest,
    SketchEstimator,
)
from .wire import GROUP_HOLD_S

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
# Admin calls: above the server's own bound (--admin-timeout-s, 300 s), which answers first.
DEFAULT_ADMIN_TIMEOUT = 330.0
# Read when a client is given no token, as the server reads its own (VIGOR_API_TOKEN,
# VIGOR_ADMIN_TOKEN): one environment, e.g. a compose file's, configures both ends.
API_TOKEN_ENV = "VIGOR_API_TOKEN"
ADMIN_TOKEN_ENV = "VIGOR_ADMIN_TOKEN"
# Added to the longest a server may take by its own bounds before the client stops listening.
DEFAULT_TIMEOUT_MARGIN_S = 10.0
SEND_CHUNK = 1 << 20

UNVERSIONED = "without a version the server applies served + 1, so a repeat would apply twice"


@dataclass(frozen=True)
class PreparedRequest:
    """What to send, and the facts the retry loop needs to repeat it."""

    method: str
    path: str
    json: Any = None
    content: Any = None  # bytes, or a body of parts (`.parts`, `.length`) sent without copying
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    idempotency: Idempotency = Idempotency.SAFE
    why_not_idempotent: str = ""
    version: int | None = None  # the weight version a BY_VERSION call sets
    operation: str | None = None  # its WeightUpdate.operation
    body: Any = None  # the request model a scoring answer is checked against (never sent)


def weight_change(version: int | None, operation: str) -> dict[str, Any]:
    """The retry facts of a weight change: idempotent by version when it names one."""
    if version is None:
        return {"idempotency": Idempotency.NONE, "why_not_idempotent": UNVERSIONED}
    return {"idempotency": Idempotency.BY_VERSION, "version": version, "operation": operation}


def held_wait(body: RewardsRequest) -> float:
    """How long the server may hold this request's samples before it answers (0: whole groups)."""
    holds = [
        g.hold_s or body.hold_s or GROUP_HOLD_S for g in body.groups if g.group_size is not None
    ]
    return max(holds, default=0.0)


def token_or_env(token: str | None, env: str) -> str | None:
    """`token` as given; None reads `env`. An empty string (given or in `env`) is no token."""
    if token is None:
        token = os.environ.get(env)
    return token or None


GroupLike = Group | Mapping[str, Any]  # a group as a model or as its JSON dict


def to_groups(groups: Iterable[GroupLike]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.model_validate(dict(g)) for g in groups]


class RequestCore:
    """Builds requests for one server; sends nothing.

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

    # --- the data plane ----------------------------------------------------------------------
    def rewards(
        self,
        groups: Sequence[GroupLike],
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
        estimator: ExactEstimator | SketchEstimator | Mapping[str, Any] | None = None,
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
            estimator=estimator,
        )
        return PreparedRequest(
            "POST",
            "/v1/rewards",
            json=body.model_dump(mode="json", exclude_none=True, by_alias=True),
            headers=self.auth_headers(),
            timeout=self.scoring_timeout(body.wait_s + held_wait(body), body.deadline_s),
            body=body,
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

    # --- the weight plane (/admin, admin token) ----------------------------------------------
    def reload_weights(
        self, path: str, *, version: int | None, full: bool, allow_cast: bool, timeout: float
    ) -> PreparedRequest:
        body = ReloadRequest(path=path, version=version, full=full, allow_cast=allow_cast)
        return self.post(
            "/admin/weights/reload",
            body.model_dump(mode="json"),
            admin=True,
            timeout=timeout,
            **weight_change(version, "reload"),
        )

    def push_weights(
        self, content: Any, *, version: int | None, full: bool, timeout: float
    ) -> PreparedRequest:
        params = _params(version=version, full=full)
        return self.post_bytes(
            "/admin/weights/push",
            content,
            params=params,
            timeout=timeout,
            **weight_change(version, "push"),
        )

    def create_upload(self, *, timeout: float) -> PreparedRequest:
        return self.post(
            "/admin/weights/uploads",
            admin=True,
            timeout=timeout,
            idempotency=Idempotency.NONE,
            why_not_idempotent="a repeat opens a second upload",
        )

    def stage_bucket(self, upload_id: str, content: Any, *, timeout: float) -> PreparedRequest:
        path = f"/admin/weights/uploads/{upload_id}/buckets"
        return self.post_bytes(path, content, timeout=timeout)

    def commit_upload(
        self, upload_id: str, *, version: int | None, full: bool, timeout: float
    ) -> PreparedRequest:
        body = CommitRequest(version=version, full=full).model_dump(mode="json")
        path = f"/admin/weights/uploads/{upload_id}/commit"
        return self.post(
            path, body, admin=True, timeout=timeout, **weight_change(version, "commit")
        )

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
            "/admin/adapter",
            body.model_dump(mode="json"),
            admin=True,
            timeout=timeout,
            **weight_change(version, "adapter_load"),
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
        return self.post_bytes(
            "/admin/adapter",
            content,
            params=params,
            timeout=timeout,
            **weight_change(version, "adapter_load"),
        )

    def unload_adapter(self, *, version: int | None, timeout: float) -> PreparedRequest:
        return PreparedRequest(
            "DELETE",
            "/admin/adapter",
            headers=self.auth_headers(True),
            params=_params(version=version),
            timeout=timeout,
            **weight_change(version, "adapter_unload"),
        )

    # --- onto httpx --------------------------------------------------------------------------
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


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, None left out and booleans as true/false."""
    out = {}
    for key, value in values.items():
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else value
    return out


def sliced_body(content: Any, asynchronous: bool) -> tuple[Any, int | None]:
    """The body to hand httpx and its Content-Length when it is sent in slices (else None).

    `content` is None, bytes, or a body of parts (`.parts`, `.length`) sent without copying.
    """
    parts, length = None, 0
    if content is not None and not isinstance(content, bytes | bytearray):
        parts, length = content.parts, content.length  # a TensorBody: sent zero-copy
    elif content is not None and len(content) > SEND_CHUNK:
        parts, length = [content], len(content)
    if parts is None:
        return content, None
    # Sent in slices: httpcore re-slices one big buffer on every partial send, which
    # makes a single 256 MB write quadratic (~60 MB/s on loopback).
    return (_aslices(parts) if asynchronous else _slices(parts)), length


def _slices(parts: Sequence[bytes | memoryview]) -> Iterator[memoryview]:
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, len(view), SEND_CHUNK):
            yield view[start : start + SEND_CHUNK]


async def _aslices(parts: Sequence[bytes | memoryview]) -> AsyncIterator[memoryview]:
    for piece in _slices(parts):
        yield piece
