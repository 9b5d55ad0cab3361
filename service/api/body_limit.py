"""Refuse oversized request bodies (413) before the app parses them.

Pure ASGI: a declared Content-Length over the limit is refused before a byte is read; any other
body is read here up to the limit (the app would hold it whole anyway) and replayed to the app,
so a chunked body over the limit is a 413 naming the limit, not a parse error. Bodies that stream
tensors into the weight plane (`exempt`) pass unbuffered: the staging bound covers them.
Every body, exempt or not, must keep arriving: one that sends nothing for `idle_timeout_s` is
answered 408 and its connection closed, so a stalled client cannot hold a connection forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import BodyTimeoutError, LimitExceededError

# Where the bytes of a body read here are recorded in the ASGI scope: a held request pins them.
BODY_BYTES_KEY = "vigor.body_bytes"


class BodyTooLarge(LimitExceededError):
    """A body past the limit; answered 413 here or by the handlers."""

    def __init__(self) -> None:
        super().__init__("the request body exceeds max_request_bytes")


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        exempt: Callable[[Scope], bool],
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.exempt(scope):
            await self.app(scope, _while_arriving(receive, self.idle_timeout_s), send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, 413, f"request body of {declared.decode()}+ bytes", "")
            return
        chunks, seen, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                await self._refuse(send, 408, "", f"after {seen} bytes")
                return
            if message["type"] != "http.request":  # the client left: let the app see it
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._refuse(send, 413, f"request body of {seen}+ bytes", "")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        scope[BODY_BYTES_KEY] = seen
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _refuse(self, send: Send, status: int, size: str, progress: str) -> None:
        if status == 413:
            code, message = (
                LimitExceededError.code,
                (
                    f"{size} exceeds max_request_bytes={self.max_bytes}; split the groups over "
                    "several requests"
                ),
            )
        else:
            code, message = BodyTimeoutError.code, _stalled(self.idle_timeout_s, progress)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
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


def _stalled(idle_timeout_s: float, progress: str) -> str:
    return (
        f"the request body stopped arriving ({progress}, nothing for {idle_timeout_s:g} s; "
        "body_timeout_s); send the whole body promptly"
    )


def _while_arriving(receive: Receive, idle_timeout_s: float) -> Receive:
    """`receive` for a streamed body: a wait past `idle_timeout_s` while the body is still
    arriving raises BodyTimeoutError (408); after the body, waits are untimed (disconnects)."""
    state = {"done": False, "seen": 0}

    async def timed() -> Message:
        if state["done"]:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), idle_timeout_s)
        except TimeoutError:
            raise BodyTimeoutError(
                _stalled(idle_timeout_s, f"after {state['seen']} bytes")
            ) from None
        state["seen"] += len(message.get("body", b""))
        state["done"] = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return timed
