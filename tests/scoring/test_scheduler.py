"""Scheduler behaviour with a fake engine: no model, no HTTP."""

import asyncio
import threading
import time

import pytest
import torch

from vigor_service.engine.types import SequenceScore, TokenSequence
from vigor_service.errors import (
    DeadlineExceededError,
    LimitExceededError,
    NotReadyError,
    OverloadedError,
)
from vigor_service.scoring.scheduler import Scheduler, is_out_of_memory
from vigor_service.serving.worker import EngineWorker


class FakeEngine:
    """Scores a sequence as its first completion token; records every call it gets."""

    def __init__(self, delay=0.0, oom_above=None, oom_tokens=None, gate=None):
        self.calls: list[list[TokenSequence]] = []
        self.delay, self.oom_above, self.oom_tokens, self.gate = delay, oom_above, oom_tokens, gate
        self.version = 3
        self._waiting = threading.Event()

    def gate_waiting(self) -> bool:
        return self._waiting.is_set()

    def __call__(self, seqs, signals, temperature):
        if self.gate is not None:
            self._waiting.set()
            self.gate.wait(5)
        if self.oom_tokens is not None and any(s.length >= self.oom_tokens for s in seqs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if self.oom_above is not None and len(seqs) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory")
        self.calls.append(list(seqs))
        time.sleep(self.delay)
        return [
            SequenceScore(float(s.completion_ids[0]), s.num_tokens, dict.fromkeys(signals, 1.0))
            for s in seqs
        ], self.version


def seqs(*firsts, length=1):
    return [TokenSequence((0,), (f,) + (0,) * (length - 1)) for f in firsts]


def run(coro):
    return asyncio.run(coro)


async def with_scheduler(engine, body, **kw):
    worker = EngineWorker()
    sched = Scheduler(worker, engine, **kw)
    sched.start()
    try:
        return await body(sched)
    finally:
        await sched.stop()
        worker.shutdown()


def test_concurrent_requests_coalesce_into_one_engine_call():
    engine = FakeEngine()

    async def body(s):
        return await asyncio.gather(
            s.submit(seqs(1, 2)), s.submit(seqs(3)), s.submit(seqs(4, 5), signals=("perplexity",))
        )

    a, b, c = run(with_scheduler(engine, body, batch_window_s=0.05))
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 5
    assert [r.grad_norm for r in a.scores] == [1.0, 2.0] and a.version == 3
    assert [r.grad_norm for r in b.scores] == [3.0]
    assert a.scores[0].signals == {} and c.scores[0].signals == {"perplexity": 1.0}


def test_fifo_and_token_budget_split_batches_without_overtaking():
    engine = FakeEngine()

    async def body(s):
        return await asyncio.gather(
            s.submit(seqs(1, length=6)),  # 7 tokens each
            s.submit(seqs(2, length=6)),
            s.submit(seqs(3), temperature=0.5),  # incompatible: must not be overtaken by 4
            s.submit(seqs(4)),
        )

    run(with_scheduler(engine, body, batch_window_s=0.05, max_batch_tokens=10))
    order = [s.completion_ids[0] for call in engine.calls for s in call]
    assert order == [1, 2, 3, 4]
    # 7 + 7 tokens exceed the budget of 10; 3 (temperature 0.5) and 4 (1.0) cannot share a call.
    assert [len(c) for c in engine.calls] == [1, 1, 1, 1]


def test_deadline_passes_while_queued_gives_504_and_no_compute():
    gate = threading.Event()
    engine = FakeEngine(gate=gate)

    async def body(s):
        first = asyncio.create_task(s.submit(seqs(1)))
        await asyncio.sleep(0.05)  # the first batch is now blocked on the gate
        with pytest.raises(DeadlineExceededError, match=r"deadline_s=0\.1"):
            await s.submit(seqs(2), deadline_s=0.1)
        gate.set()
        await first
        await s.submit(seqs(3))

    run(with_scheduler(engine, body, batch_window_s=0.0))
    scored = [s.completion_ids[0] for call in engine.calls for s in call]
    assert scored == [1, 3]


def test_full_queue_answers_overloaded_with_retry_after():
    gate = threading.Event()
    engine = FakeEngine(gate=gate)

    async def body(s):
        tasks = [asyncio.create_task(s.submit(seqs(1)))]
        await asyncio.sleep(0.05)  # the dispatcher holds job 1, blocked on the gate
        tasks += [asyncio.create_task(s.submit(seqs(i))) for i in (2, 3)]
        await asyncio.sleep(0.05)  # jobs 2 and 3 fill the queue
        with pytest.raises(OverloadedError) as info:
            await s.submit(seqs(9))
        gate.set()
        await asyncio.gather(*tasks)
        return info.value

    err = run(with_scheduler(engine, body, max_queue=2, batch_window_s=0.0))
    assert err.retry_after >= 1.0 and "queue full" in err.message


def test_out_of_memory_splits_and_retries():
    engine = FakeEngine(oom_above=2)

    async def body(s):
        return await asyncio.gather(*(s.submit(seqs(i)) for i in range(1, 6)))

    outs = run(with_scheduler(engine, body, batch_window_s=0.05))
    assert [o.scores[0].grad_norm for o in outs] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(len(c) <= 2 for c in engine.calls)


def test_single_sequence_too_large_fails_only_its_request():
    engine = FakeEngine(oom_tokens=50)

    async def body(s):
        return await asyncio.gather(
            s.submit(seqs(1)),
            s.submit(seqs(2, length=60)),
            s.submit(seqs(3)),
            return_exceptions=True,
        )

    ok1, big, ok3 = run(with_scheduler(engine, body, batch_window_s=0.05))
    assert isinstance(big, LimitExceededError) and "61 tokens" in big.message
    assert ok1.scores[0].grad_norm == 1.0 and ok3.scores[0].grad_norm == 3.0


def test_engine_error_fails_its_batch_and_the_scheduler_keeps_serving():
    engine = FakeEngine()
    boom = {"on": True}

    def flaky(seqs_, signals, temperature):
        if boom.pop("on", False):
            raise ValueError("engine bug")
        return engine(seqs_, signals, temperature)

    async def body(s):
        with pytest.raises(ValueError, match="engine bug"):
            await s.submit(seqs(1))
        return await s.submit(seqs(2))

    out = run(with_scheduler(flaky, body, batch_window_s=0.0))
    assert out.scores[0].grad_norm == 2.0


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_one_requests_engine_failure_never_fails_its_batch_mates():
    engine = FakeEngine()

    def poisoned(seqs_, signals, temperature):
        if any(s.completion_ids[0] == 13 for s in seqs_):
            raise OverflowError("math range error")  # the bug of one request's input
        return engine(seqs_, signals, temperature)

    async def body(s):
        return await asyncio.gather(
            s.submit(seqs(1)), s.submit(seqs(13)), s.submit(seqs(2, 3)), return_exceptions=True
        )

    ok1, bad, ok2 = run(with_scheduler(poisoned, body, batch_window_s=0.05))
    assert isinstance(bad, OverflowError)
    assert [r.grad_norm for r in ok1.scores] == [1.0]
    assert [r.grad_norm for r in ok2.scores] == [2.0, 3.0]
    assert [len(c) for c in engine.calls] == [1, 2]  # the coalesced call failed; each ran alone


def test_cut_off_answers_every_waiting_submission_not_ready_at_once():
    gate = threading.Event()
    engine = FakeEngine(gate=gate)  # the running call blocks until the gate opens

    async def body(s):
        running = asyncio.ensure_future(s.submit(seqs(1)))
        while not engine.gate_waiting():
            await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(s.submit(seqs(2), temperature=0.5))
        with_deadline = asyncio.ensure_future(s.submit(seqs(3), deadline_s=60))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        assert s.cut_off("shutting down; send it again") == 3
        outcomes = await asyncio.gather(running, queued, with_deadline, return_exceptions=True)
        waited = time.monotonic() - t0
        gate.set()
        return outcomes, waited, s.in_flight

    outcomes, waited, in_flight = run(with_scheduler(engine, body))
    assert all(isinstance(o, NotReadyError) and "send it again" in str(o) for o in outcomes)
    assert waited < 1 and in_flight == 0  # not after the engine call ended (the gate's 5 s)
