"""Where the client meets httpx's transport: large bodies go in slices, its errors become ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx

from .errors import VigorConnectionError, VigorTimeoutError

SEND_CHUNK = 1 << 20


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


# The connection was never made: the server cannot have seen the request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures a repeat may get past: the network, or a peer that went away mid-exchange.
TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def translate_transport_error(exc: httpx.HTTPError, url: str) -> VigorConnectionError:
    """Map httpx's transport errors onto ours at the boundary; callers `raise ... from exc`."""
    facts = {
        "request_sent": not isinstance(exc, NOT_SENT),
        "transient": isinstance(exc, TRANSIENT),
    }
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return VigorTimeoutError(f"no answer from {url} in time ({what})", **facts)
    return VigorConnectionError(f"cannot reach {url} ({what})", **facts)
