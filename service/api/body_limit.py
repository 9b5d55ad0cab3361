"""Refuse oversized request bodies (413) before the app parses them.

Pure ASGI: a declared Content-Length over the limit is refused before a byte is read; any other
body is read here up to the limit (the app would hold it whole anyway) and replayed to the app,
so a chunked body over the limit is a 413 naming the limit, not a parse error. Bodies that stream
tensors into the weight plane (`exempt`) pass untouched: the staging bound covers them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import LimitExceededError


class BodyTooLarge(LimitExceededError):
    """A body past the limit; answered 413 here or by the handlers."""

    def __init__(self) -> None:
        super().__init__("the request body exceeds max_request_bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._refuse(send, seen)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "limit_exceeded",
                    "message": f"request body of {size}+ bytes exceeds max_request_bytes="
                    f"{self.max_bytes}; split the groups over several requests",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(chunks: list[bytes], last: Message | None, receive: Receive) -> Receive:
    """The body already read, as one message; then the real channel (to see a disconnect)."""
    whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
    pending: list[Message] = [last if last is not None else whole]

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
