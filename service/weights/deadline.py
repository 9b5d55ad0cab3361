"""Deadlines for admin calls: threads told to stop, worker jobs called off before they start.

No admin call may hang the server or answer "failed" and then take effect later: blocking reads
run in threads that stop at the deadline, and a swap queued behind long scoring passes is called
off (never run) when it has not started by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import DeadlineExceededError
from ..serving import EngineWorker
from .sources import Cancelled

R = TypeVar("R")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self, what: str) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"{what} did not finish within {self.seconds:g} s (--admin-timeout-s); "
            "the served weights are unchanged"
        )

    async def wait(self, aw: Awaitable[R], what: str) -> R:
        try:
            return await asyncio.wait_for(aw, self.left())
        except TimeoutError:
            raise self.expired(what) from None


class Gate:
    """Lets a job queued on the worker be called off until the moment it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "queued"

    def cancel(self) -> bool:
        """True when the job will not run; False when it has already started."""
        with self._lock:
            if self._state == "queued":
                self._state = "cancelled"
            return self._state == "cancelled"

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._state == "cancelled":
                return None
            self._state = "started"
        return fn(*args)


async def in_thread(deadline: Deadline, what: str, fn: Callable[..., R], *args: Any) -> R:
    """`fn(*args, cancel)` in a thread; past the deadline `cancel` is set and we answer 504."""
    cancel = threading.Event()
    try:
        return await deadline.wait(asyncio.to_thread(fn, *args, cancel), what)
    except Cancelled:
        raise deadline.expired(what) from None
    finally:
        cancel.set()


async def on_worker(
    worker: EngineWorker, deadline: Deadline, what: str, fn: Callable[..., R], *args: Any
) -> R:
    """`fn` on the engine worker, or not at all when it cannot start before the deadline."""
    gate = Gate()
    task = asyncio.ensure_future(worker.run(gate.run, fn, *args))
    try:
        return await asyncio.wait_for(asyncio.shield(task), deadline.left())
    except TimeoutError:
        if gate.cancel():
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise DeadlineExceededError(
                f"the engine stayed busy past the {deadline.seconds:g} s deadline; {what} "
                "was not applied and the served weights are unchanged"
            ) from None
        return await task  # already running: a copy is short, let it finish


async def in_daemon_thread(
    fn: Callable[..., R],
    *args: Any,
    within: float | None = None,
    late: Callable[[R], Any] | None = None,
    **kwargs: Any,
) -> R:
    """`fn` in a thread of its own that never holds up the server's exit.

    A receive blocked on a silent peer ends only at the group's timeout; asyncio's default
    executor would make shutdown wait for it. With `within`, the caller stops waiting after that
    many seconds (TimeoutError) even when `fn` itself never returns (a peer that accepts a
    connection and never answers); a value `fn` returns after the caller gave up is handed to
    `late` (to close a group nobody holds) instead of being dropped.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[R] = loop.create_future()
    lock = threading.Lock()
    gave_up = False  # set once the caller stopped waiting

    def settle(ok: bool, value: Any) -> None:
        if not done.done():
            done.set_result(value) if ok else done.set_exception(value)

    def run() -> None:
        try:
            outcome = (True, fn(*args, **kwargs))
        except BaseException as exc:
            outcome = (False, exc)
        with lock:
            orphan = gave_up
        if orphan:
            if outcome[0] and late is not None:
                late(outcome[1])
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, daemon=True, name=f"vigor-transfer-{fn.__name__}").start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), within)
    except (TimeoutError, asyncio.CancelledError):
        with lock:
            gave_up = True

        def orphaned(f: asyncio.Future[R]) -> None:
            # Settled after all (the thread passed its check before we gave up): nobody uses it.
            if not f.cancelled() and f.exception() is None and late is not None:
                late(f.result())

        done.add_done_callback(orphaned)
        raise
