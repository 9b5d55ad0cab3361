"""One thread owns the model: every scoring pass and every weight change runs on it in turn.

Serializing on a single thread is what makes weight swaps atomic for requests: a request's whole
computation happens between two swaps, never across one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")


class EngineWorker:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigor-engine")
        self.pending = 0  # jobs queued or running via run(): the queue depth in /metrics

    async def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        finally:
            self.pending -= 1

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Queue `fn` without waiting for it (start-up work that outlives the caller)."""
        return self._executor.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
