"""Running the client's sans-IO generators: one driver for blocking code, its twin for asyncio.

The retry exchange (_retry.py) and the push plan (_weights.py) are generators that decide what
to do and do no I/O (httpx's auth-flow pattern): each yields a step, a `Pause` to take or
something to send, and receives the answer, or has the send's exception thrown back in, so the
generator decides what a failure means (retry it, abort an upload, re-raise). The driver only
sends and sleeps; the clients differ in nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Pause:
    """A step that asks the driver to wait before the next one."""

    seconds: float


def drive_sync(gen: Generator[Any, Any, R], send: Callable[[Any], Any]) -> R:
    """Run `gen` to its return value: `send(step)` for each step, `time.sleep` for a Pause."""
    try:
        step = next(gen)
        while True:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = gen.send(None)
                continue
            try:
                answer = send(step)
            except BaseException as exc:  # the generator decides; what it re-raises leaves
                step = gen.throw(exc)
            else:
                step = gen.send(answer)
    except StopIteration as stop:
        return stop.value


async def drive_async(gen: Generator[Any, Any, R], send: Callable[[Any], Awaitable[Any]]) -> R:
    """`drive_sync` for asyncio: `await send(step)`, `asyncio.sleep` for a Pause."""
    try:
        step = next(gen)
        while True:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                step = gen.send(None)
                continue
            try:
                answer = await send(step)
            except BaseException as exc:
                step = gen.throw(exc)
            else:
                step = gen.send(answer)
    except StopIteration as stop:
        return stop.value
