"""The ingress's side of the drain cut-off (ReplicaScheduler.cut_off), without a Ray cluster.

The replica handle is a stand-in whose calls wait on an event: what is under test is the
ingress's bookkeeping (every waiting call answered 503-not-ready at once, in_flight back to 0,
later calls unaffected), which a real Serve deployment would only make slow and racy to hold
open. The real path, replicas and all, is covered by test_ray_serve.py.
"""

from __future__ import annotations

import asyncio

import pytest

from vigor_service.engine.types import SequenceScore, TokenSequence
from vigor_service.errors import NotReadyError
from vigor_service.rayserve.remote import ReplicaScheduler


class _Slot:
    version = 3


class _Score:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    def remote(self, sequences, *args, **kwargs):
        self.calls += 1
        return self._answer(sequences)

    async def _answer(self, sequences):
        await self.release.wait()
        return [SequenceScore(1.0, s.num_tokens, {}) for s in sequences], 3


class _Handle:
    def __init__(self) -> None:
        self.score = _Score()


def _seqs(n: int) -> list[TokenSequence]:
    return [TokenSequence((1, 2), (3,) * (i + 1)) for i in range(n)]


def test_cut_off_answers_every_waiting_call_not_ready_and_later_calls_still_run():
    async def body():
        handle = _Handle()
        s = ReplicaScheduler(handle, _Slot())
        waiting = [asyncio.ensure_future(s.submit(_seqs(n))) for n in (1, 2, 3)]
        while handle.score.calls < 3:
            await asyncio.sleep(0.01)
        assert s.in_flight == 3
        assert s.cut_off("shutting down; send it again") == 3
        outcomes = await asyncio.wait_for(
            asyncio.gather(*waiting, return_exceptions=True), timeout=5
        )
        after_cut = s.in_flight
        # A call made after the cut waits for its own answer, not for the old cut.
        handle.score.release.set()
        later = await asyncio.wait_for(s.submit(_seqs(2)), timeout=5)
        return outcomes, after_cut, later, s.in_flight

    outcomes, after_cut, later, in_flight = asyncio.run(body())
    assert all(isinstance(o, NotReadyError) and "send it again" in str(o) for o in outcomes)
    assert after_cut == 0 and in_flight == 0
    assert [r.num_tokens for r in later.scores] == [1, 2] and later.version == 3


def test_cut_off_with_nothing_waiting_answers_zero():
    async def body():
        s = ReplicaScheduler(_Handle(), _Slot())
        return s.cut_off("shutting down"), s.cut_off("again")

    assert asyncio.run(body()) == (0, 0)


@pytest.mark.parametrize("calls", [1, 4])
def test_an_answered_call_is_not_cut(calls):
    async def body():
        handle = _Handle()
        handle.score.release.set()
        s = ReplicaScheduler(handle, _Slot())
        done = [await s.submit(_seqs(1)) for _ in range(calls)]
        return done, s.cut_off("late"), s.in_flight

    done, cut, in_flight = asyncio.run(body())
    assert len(done) == calls and cut == 0 and in_flight == 0
