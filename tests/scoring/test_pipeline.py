"""The scoring pipeline end to end with a fake serving slot: no model, no HTTP server."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from vigor_client.schema import RewardsRequest, SketchEstimator
from vigor_service.engine.types import SequenceScore, Sketch
from vigor_service.errors import (
    InvalidInputError,
    LimitExceededError,
    NotReadyError,
    StaleWeightsError,
)
from vigor_service.scoring import ScoringPipeline
from vigor_service.scoring.limits import Limits
from vigor_service.scoring.scheduler import Scheduler
from vigor_service.serving.worker import EngineWorker


class FakeSlot:
    """A slot whose 'model' scores a sequence's gradient norm as the sum of its completion ids."""

    def __init__(self) -> None:
        self.served = SimpleNamespace(
            name="fake", tokenizer=None, vocab_size=50, max_length=16, engine_name="batched"
        )
        self.version = 7
        self.draining = False
        self.calls: list[int] = []
        self.waited: list[tuple[int, float]] = []
        self.estimators: list = []

    def require_served(self):
        return self.served

    def require_accepting(self) -> None:
        if self.draining:
            raise NotReadyError("draining")

    async def wait_for_version(self, minimum: int, wait_s: float) -> None:
        self.waited.append((minimum, wait_s))
        if self.version < minimum:
            raise StaleWeightsError("old", current_version=self.version)

    def score(self, sequences, signals, temperature, estimator=None):
        self.calls.append(len(sequences))
        self.estimators.append(estimator)
        out = [
            SequenceScore(
                float(sum(s.completion_ids)) if s.completion_ids else None,
                s.num_tokens,
                dict.fromkeys(signals, 0.5),
            )
            for s in sequences
        ]
        return out, self.version


LIMITS = Limits(max_request_bytes=1 << 20, max_groups=2, max_completions_per_group=4,
                max_sequence_tokens=0)  # fmt: skip


def run(coro_fn, **pipeline_kw):
    async def main():
        slot, worker = FakeSlot(), EngineWorker()
        scheduler = Scheduler(worker, slot.score, batch_window_s=0.0)
        scheduler.start()
        scored = []
        pipeline = ScoringPipeline(slot, scheduler, LIMITS, on_scored=scored.append, **pipeline_kw)
        try:
            return await coro_fn(pipeline, slot, scored)
        finally:
            await scheduler.stop()
            worker.shutdown()

    return asyncio.run(main())


def request(**kw) -> RewardsRequest:
    groups = kw.pop(
        "groups",
        [{"id": "a", "prompt_ids": [1, 2], "completion_ids": [[3, 4], [1], [9, 9, 9], []]}],
    )
    return RewardsRequest.model_validate({"groups": groups, **kw})


def test_scores_rewards_and_version_come_from_one_engine_call():
    async def go(pipeline, slot, scored):
        groups = [
            {"id": "a", "prompt_ids": [1, 2], "completion_ids": [[3, 4], [1], [9, 9, 9]]},
            {"id": "b", "prompt_ids": [5], "completion_ids": [[2], []]},
        ]
        return await pipeline.score(request(groups=groups, signals=["entropy_mean"])), slot, scored

    response, slot, scored = run(go)
    assert slot.calls == [5] and response.weight_version == 7 and scored == [response]
    a, b = response.groups
    # grad norm = sum of ids; score = −norm·√T; the smallest norm gets the top reward.
    assert a.scores == pytest.approx([-7 * math.sqrt(2), -1.0, -27 * math.sqrt(3)])
    assert a.rewards == [0.0, 1.0, -1.0]
    assert b.scores[1] is None and b.reasons == [None, "empty_completion"]
    assert b.rewards == [1.0, -1.0]
    assert a.signals == {"entropy_mean": [0.5, 0.5, 0.5]}


def test_bad_requests_fail_before_anything_waits_or_runs():
    async def go(pipeline, slot, scored):
        errors = []
        too_many = [{"prompt_ids": [1], "completion_ids": [[2]]}] * 3  # max_groups=2
        for req, kind in [
            (request(groups=too_many), LimitExceededError),
            (
                request(
                    groups=[{"prompt_ids": [1], "completion_ids": [[99]]}], min_weight_version=9
                ),
                InvalidInputError,
            ),
            (
                request(groups=[{"prompt_ids": [1], "completion_ids": [[1] * 16]}]),
                InvalidInputError,
            ),
        ]:
            with pytest.raises(kind) as info:
                await pipeline.score(req)
            errors.append(str(info.value))
        return errors, slot

    errors, slot = run(go)
    assert "max_groups=2" in errors[0]
    assert "groups[0].completion_ids[0][0]: token id 99 is outside" in errors[1]
    assert "exceeds max_sequence_tokens=16" in errors[2]
    assert slot.calls == [] and slot.waited == []  # never waited for version 9, never scored


def test_version_wait_and_draining_are_the_slots_word():
    async def go(pipeline, slot, scored):
        with pytest.raises(StaleWeightsError):
            await pipeline.score(request(min_weight_version=8, wait_s=0.5))
        ok = await pipeline.score(request(min_weight_version=7, wait_s=0.5))
        slot.draining = True
        with pytest.raises(NotReadyError):
            await pipeline.score(request())
        return ok, slot

    ok, slot = run(go)
    assert slot.waited == [(8, 0.5), (7, 0.5)] and ok.weight_version == 7
    assert slot.calls == [4]


def test_limits_report_the_served_context():
    async def go(pipeline, slot, scored):
        return pipeline.limits

    assert run(go).max_sequence_tokens == 16


def test_estimator_reaches_the_engine_and_is_echoed_default_filled_in():
    sketch = {"kind": "sketch", "k": 64, "seed": 5}

    async def go(pipeline, slot, scored):
        named = await pipeline.score(request(estimator=sketch))
        exact = await pipeline.score(request(estimator={"kind": "exact"}))
        default = await pipeline.score(request())
        return named, exact, default, slot

    server_default = SketchEstimator(kind="sketch", k=32, seed=1)
    named, exact, default, slot = run(go, estimator=server_default)
    assert slot.estimators == [Sketch(64, 5), None, Sketch(32, 1)]
    assert named.estimator.model_dump() == sketch
    assert exact.estimator.kind == "exact"
    assert default.estimator == server_default


def test_loop_engine_refuses_a_sketch_naming_estimator():
    async def go(pipeline, slot, scored):
        slot.served.engine_name = "loop"
        with pytest.raises(InvalidInputError) as info:
            await pipeline.score(request(estimator={"kind": "sketch", "k": 8}))
        fine = await pipeline.score(request())  # exact, the loop's own
        return info.value, fine, slot

    err, fine, slot = run(go)
    assert [p.loc for p in err.problems] == ["estimator"]
    assert "batched engine" in err.problems[0].message
    assert slot.estimators == [None] and fine.estimator.kind == "exact"
