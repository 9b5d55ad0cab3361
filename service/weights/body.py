"""Tensor bodies as HTTP hands them over, read whole into one buffer within the staging bound.

The front knows nothing of the web framework: the route passes the declared length and the
chunk iterator, and the room for the body is reserved before a byte is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..errors import WeightsRejectedError
from .deadline import Deadline
from .staging import StagingArea


@dataclass(frozen=True)
class IncomingBody:
    """A request body as the transport hands it over: its declared length and its chunks."""

    content_length: str | None
    chunks: AsyncIterator[bytes]


async def read_body(body: IncomingBody, deadline: Deadline, staging: StagingArea) -> bytearray:
    """The whole body in one buffer, its size reserved against the staging bound before reading.

    The caller releases `len(buffer)` from `staging` once done with it.
    """
    length = body.content_length or ""
    if not length.isdigit():
        raise WeightsRejectedError(["a weights body needs a Content-Length header"])
    n = int(length)
    staging.reserve(n)
    try:
        buf, at = bytearray(n), 0

        async def fill() -> None:
            nonlocal at
            async for chunk in body.chunks:
                if at + len(chunk) > n:
                    raise WeightsRejectedError(["the body is longer than its Content-Length"])
                buf[at : at + len(chunk)] = chunk
                at += len(chunk)

        await deadline.wait(fill(), "receiving the body")
        if at != n:
            raise WeightsRejectedError([f"the body ended after {at} of {n} bytes"])
        return buf
    except BaseException:
        staging.release(n)
        raise
