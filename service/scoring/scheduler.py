"""Coalescing concurrent scoring requests into engine calls, with backpressure and deadlines.

Requests enter a bounded FIFO queue. A dispatcher takes the oldest request, keeps taking the
next ones for a short window while they fit the token budget and share its temperature, and
runs them as ONE engine call on the engine worker thread. Weight swaps run on that same thread
between calls, so every request scores on exactly one weight version. Results go back to each
request's own future. Out-of-memory errors split the call and retry; a single sequence that does
not fit even alone fails only its own request (413). Any other failure of a call holding several
requests is retried request by request, so one request's problem never fails its batch-mates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..engine.types import SequenceScore, TokenSequence
from ..errors import (
    ClientGoneError,
    DeadlineExceededError,
    LimitExceededError,
    NotReadyError,
    OverloadedError,
)
from ..serving.worker import EngineWorker

log = logging.getLogger(__name__)

# (sequences, signals, temperature) -> (scores in order, weight version they were computed on)
Execute = Callable[[list[TokenSequence], tuple[str, ...], float], tuple[list[SequenceScore], int]]


def is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - the server always has torch
        pass
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


@dataclass
class Job:
    sequences: list[TokenSequence]
    signals: tuple[str, ...]
    temperature: float
    deadline: float | None  # time.monotonic() by which scoring must have started
    future: asyncio.Future
    gone: Callable[[], Awaitable[bool]] | None = None  # has the client disconnected?
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(s.length for s in self.sequences)

    @property
    def abandoned(self) -> bool:
        return self.future.done()


@dataclass
class JobOutcome:
    scores: list[SequenceScore]
    version: int


@runtime_checkable
class EngineQueue(Protocol):
    """What the scoring pipeline needs of a scheduler: this module's Scheduler on a plain server,
    rayserve's ReplicaScheduler (the same call, made on a replica) at the Ray ingress."""

    in_flight: int

    @property
    def depth(self) -> int: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def cut_off(self, reason: str) -> int:
        """Answer every submission still waiting with NotReadyError(reason) (503: send it
        again); work already on the engine finishes unread. Returns how many were cut off."""
        ...

    async def submit(
        self,
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        deadline_s: float | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> JobOutcome: ...


class Scheduler:
    def __init__(
        self,
        worker: EngineWorker,
        execute: Execute,
        *,
        max_queue: int = 256,
        batch_window_s: float = 0.005,
        max_batch_tokens: int = 8192,
    ) -> None:
        self._worker = worker
        self._execute = execute
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self._window = batch_window_s
        self._budget = max_batch_tokens
        self._held: Job | None = None  # taken from the queue but not fitting the last batch
        self._task: asyncio.Task | None = None
        self._busy_s = 0.0
        self._batches = 0
        self.in_flight = 0
        self._waiting: dict[int, Job] = {}  # submitted jobs whose callers still wait, by id

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._dispatch(), name="vigor-scheduler"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._drain_queue():
            if not job.abandoned:
                job.future.set_exception(OverloadedError("server is shutting down", 1.0))

    def cut_off(self, reason: str) -> int:
        cut = [job for job in self._waiting.values() if not job.future.done()]
        for job in cut:
            job.future.set_exception(NotReadyError(reason))
        return len(cut)

    @property
    def depth(self) -> int:
        return self._queue.qsize() + (self._held is not None)

    # --- submitting ------------------------------------------------------------------------
    async def submit(
        self,
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        deadline_s: float | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> JobOutcome:
        """`gone` tells whether the caller left: its work is skipped if it has not started."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        job = Job(sequences, signals, temperature, deadline, loop.create_future(), gone)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise OverloadedError(
                f"queue full ({self._queue.maxsize} requests waiting); retry later",
                retry_after=self._retry_after(),
            ) from None
        self.in_flight += 1
        self._waiting[id(job)] = job
        try:
            if deadline_s is None:
                return await job.future
            # shield: timing out must not cancel a batch already running with this job in it.
            return await asyncio.wait_for(asyncio.shield(job.future), deadline_s)
        except TimeoutError:
            if job.future.done() and not job.future.cancelled():
                return job.future.result()
            job.future.cancel()
            raise DeadlineExceededError(
                f"could not start scoring within deadline_s={deadline_s:g} "
                f"({self.depth} requests queued)"
            ) from None
        finally:
            self.in_flight -= 1
            self._waiting.pop(id(job), None)
            if not job.future.done():
                job.future.cancel()  # the client went away: the dispatcher skips it

    def _retry_after(self) -> float:
        per_batch = self._busy_s / self._batches if self._batches else 1.0
        return max(1.0, per_batch * (self._queue.qsize() + 1))

    # --- dispatching -----------------------------------------------------------------------
    def _drain_queue(self) -> list[Job]:
        jobs = [self._held] if self._held else []
        self._held = None
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    async def _next(self, timeout: float | None) -> Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        if timeout is None:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[Job]:
        """The oldest live job, then followers within the window that fit and are compatible."""
        first = await self._next(None)
        batch, tokens = [first], first.tokens
        end = time.monotonic() + self._window
        while tokens < self._budget:
            job = await self._next(max(0.0, end - time.monotonic()))
            if job is None:
                break
            if job.temperature != first.temperature or tokens + job.tokens > self._budget:
                self._held = job  # FIFO: it goes first next time, nothing overtakes it
                break
            batch.append(job)
            tokens += job.tokens
        return batch

    async def _dispatch(self) -> None:
        while True:
            batch = await self._collect()
            now = time.monotonic()
            live = []
            for job in batch:
                if job.abandoned or await _client_left(job):
                    continue
                if job.deadline is not None and now > job.deadline:
                    job.future.set_exception(
                        DeadlineExceededError("deadline passed while queued; nothing was computed")
                    )
                    continue
                live.append(job)
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                outcomes = await self._worker.run(self._run_jobs, live)
            except Exception as exc:  # an engine bug: fail these requests, keep serving
                log.exception("engine call failed")
                outcomes = [exc] * len(live)
            self._busy_s += time.perf_counter() - t0
            self._batches += 1
            for job, outcome in zip(live, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    # --- on the engine thread --------------------------------------------------------------
    def _run_jobs(self, jobs: list[Job]) -> list[JobOutcome | BaseException]:
        try:
            return self._run_together(jobs)
        except Exception:
            if len(jobs) == 1:
                raise
            log.exception("an engine call of %d requests failed; retrying each alone", len(jobs))
        outcomes: list[JobOutcome | BaseException] = []
        for job in jobs:
            try:
                outcomes.extend(self._run_together([job]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _run_together(self, jobs: list[Job]) -> list[JobOutcome | BaseException]:
        signals = tuple(dict.fromkeys(s for job in jobs for s in job.signals))
        flat = [seq for job in jobs for seq in job.sequences]
        results, version = self._run_splitting(flat, signals, jobs[0].temperature)
        outcomes: list[JobOutcome | BaseException] = []
        k = 0
        for job in jobs:
            mine = results[k : k + len(job.sequences)]
            k += len(job.sequences)
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            if failed is not None:
                outcomes.append(failed)
                continue
            for r in mine:  # a job only sees the signals it asked for
                r.signals = {name: r.signals.get(name) for name in job.signals}
            outcomes.append(JobOutcome(mine, version))
        return outcomes

    def _run_splitting(self, seqs, signals, temperature):
        """Score `seqs`; on out-of-memory, halve and retry down to single sequences."""
        try:
            scores, version = self._execute(seqs, signals, temperature)
            return list(scores), version
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _free_cached_memory()
            if len(seqs) == 1:
                seq = seqs[0]
                log.warning("one sequence of %d tokens does not fit in memory", seq.length)
                return [
                    LimitExceededError(
                        f"a sequence of {seq.length} tokens does not fit in device memory even "
                        f"alone; send sequences shorter than {seq.length} tokens"
                    )
                ], -1
            half = len(seqs) // 2
            log.warning(
                "out of memory on %d sequences; retrying as %d + %d",
                len(seqs),
                half,
                len(seqs) - half,
            )
            left, v1 = self._run_splitting(seqs[:half], signals, temperature)
            right, v2 = self._run_splitting(seqs[half:], signals, temperature)
            return left + right, max(v1, v2)


async def _client_left(job: Job) -> bool:
    """A job whose client disconnected while it queued is cancelled, never computed."""
    if job.gone is None or not await job.gone():
        return False
    job.future.set_exception(ClientGoneError("the client disconnected while queued"))
    return True


def _free_cached_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
