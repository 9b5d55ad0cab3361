"""Auth before any body is read: a client without the token never makes us buffer a byte.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so the checks in
deps.py alone would come after the body. This pure ASGI guard runs the same checks on the
headers first: the admin check on admin routes, and with --api-token the API token on the routes
that take a scoring body. The route dependencies stay as the checks of record.
"""

from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings
from .deps import admin_refusal, token_refusal
from .errors import http_error_response
from .routes.transfer import ADMIN_PATHS as TRANSFER_PATHS

ADMIN_PREFIX = "/admin"
SCORING_PATHS = ("/v1/rewards", "/get_reward")  # the routes that read a scoring body


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/") or path in TRANSFER_PATHS


class AdminGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings, api: FastAPI) -> None:
        self.app = app
        self.settings = settings
        self.api = api
        self._templates: list | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                self._name_route(scope)
                response = http_error_response(refusal)
                response.headers["connection"] = "close"  # the unread body is not wanted
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope):
        path = scope["path"]
        if is_admin_path(path):
            return admin_refusal(Request(scope), self.settings)
        token = self.settings.api_token
        if token is not None and path in SCORING_PATHS:
            return token_refusal(Request(scope), token.get_secret_value())
        return None

    def _name_route(self, scope: Scope) -> None:
        """A refused request never reaches routing: name its route template here (from the
        OpenAPI paths, FastAPI's public list of them), so metrics count it under that template."""
        if self._templates is None:
            paths = self.api.openapi()["paths"]
            self._templates = [
                (compile_path(p)[0], p) for p in paths if is_admin_path(p) or p in SCORING_PATHS
            ]
        for regex, template in self._templates:
            if regex.match(scope["path"]):
                scope["route"] = SimpleNamespace(path=template)
                return
