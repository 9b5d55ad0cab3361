"""Admin auth before any body is read: a client without the token never makes us buffer a byte.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so the admin check in
deps.py alone would come after the body. This pure ASGI guard runs the same check on the headers
first; the route dependency stays as the check of record.
"""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings
from .deps import admin_refusal
from .errors import http_error_response
from .routes.transfer import ADMIN_PATHS as TRANSFER_PATHS

ADMIN_PREFIX = "/admin"


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/") or path in TRANSFER_PATHS


class AdminGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, api: FastAPI) -> None:
        self.app = app
        self.settings = settings
        self.api = api
        self._templates: list | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_admin_path(scope["path"]):
            refusal = admin_refusal(Request(scope), self.settings)
            if refusal is not None:
                self._name_route(scope)
                response = http_error_response(refusal)
                response.headers["connection"] = "close"  # the unread body is not wanted
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _name_route(self, scope: Scope) -> None:
        """A refused request never reaches routing: name its route template here (from the
        OpenAPI paths, FastAPI's public list of them), so metrics count it under that template."""
        if self._templates is None:
            paths = self.api.openapi()["paths"]
            self._templates = [(compile_path(p)[0], p) for p in paths if is_admin_path(p)]
        for regex, template in self._templates:
            if regex.match(scope["path"]):
                scope["route"] = SimpleNamespace(path=template)
                return
