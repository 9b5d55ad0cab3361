"""The weight plane's requests (/admin, admin token): reload, push, uploads, adapters.

A mixin of `RequestCore`, built on its `post`, `post_bytes` and `auth_headers`; like the rest of
the core it builds requests and sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._prepared_request import PreparedRequest, weight_change
from ._retry import Idempotency
from .schema import AdapterRequest, CommitRequest, ReloadRequest


class WeightPlaneRequests:
    # Provided by RequestCore (annotations only, so nothing here shadows them).
    post: Callable[..., PreparedRequest]
    post_bytes: Callable[..., PreparedRequest]
    auth_headers: Callable[[bool], dict[str, str]]

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


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, None left out and booleans as true/false."""
    out = {}
    for key, value in values.items():
        if value is not None:
            out[key] = str(value).lower() if isinstance(value, bool) else value
    return out
