"""EngineWorker: one thread runs every engine job, in the order they came, one at a time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from vigor_service.serving import EngineWorker


def test_jobs_run_one_at_a_time_on_one_thread_in_order():
    async def main() -> tuple[list[int], set[int], int]:
        worker = EngineWorker()
        order: list[int] = []
        threads: set[int] = set()
        running = 0
        most = 0
        lock = threading.Lock()

        def job(k: int) -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            threads.add(threading.get_ident())
            time.sleep(0.01)
            order.append(k)
            with lock:
                running -= 1
            return k * k

        results = await asyncio.gather(*(worker.run(job, k) for k in range(8)))
        assert results == [k * k for k in range(8)]
        assert worker.pending == 0
        worker.shutdown()
        return order, threads, most

    order, threads, most = asyncio.run(main())
    assert order == list(range(8))
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert most == 1


def test_pending_counts_queued_and_running_jobs():
    async def main() -> None:
        worker = EngineWorker()
        release = threading.Event()
        first = asyncio.ensure_future(worker.run(release.wait, 5))
        second = asyncio.ensure_future(worker.run(lambda: "done"))
        await asyncio.sleep(0.05)
        assert worker.pending == 2
        release.set()
        assert await second == "done" and await first is True
        assert worker.pending == 0
        worker.shutdown()

    asyncio.run(main())


def test_a_failing_job_raises_to_its_caller_and_the_worker_goes_on():
    async def main() -> None:
        worker = EngineWorker()

        def boom() -> None:
            raise ValueError("engine job failed")

        with pytest.raises(ValueError, match="engine job failed"):
            await worker.run(boom)
        assert await worker.run(lambda: 41 + 1) == 42
        worker.shutdown()

    asyncio.run(main())


def test_submit_queues_without_waiting_behind_the_running_job():
    worker = EngineWorker()
    release = threading.Event()
    worker.submit(release.wait, 5)
    future = worker.submit(lambda: threading.current_thread().name)
    assert not future.done()
    release.set()
    assert future.result(5).startswith("vigor-engine")
    worker.shutdown()
