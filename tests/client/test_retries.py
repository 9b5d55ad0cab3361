"""Retries: the policy's arithmetic, which calls are idempotent, then both clients against a real
server (a tiny model in-process) behind a proxy that answers 429 / 503 or drops connections."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from vigor_client import (
    AsyncVigorClient,
    NotReadyError,
    OverloadedError,
    RetryPolicy,
    StaleWeightsError,
    VigorClient,
    VigorConnectionError,
    VigorServerError,
)
from vigor_client._requests import RequestCore
from vigor_client._retry import Idempotency, as_policy

from ..servers import free_port
from ..weights.helpers import GROUPS, tiny_server
from .flaky_proxy import FlakyProxy

FAST = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05, seed=0)


# --- the policy, without a server -----------------------------------------------------------
def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=3.0, jitter=0.5)
    rng = random.Random(0)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(full * 0.5 <= w <= full for w in waits)
        assert max(waits) - min(waits) > full * 0.3  # jittered, not constant
    exact = RetryPolicy(backoff_s=0.5, jitter=0.0)
    assert [exact.backoff(k, rng) for k in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_bad_policies_and_retry_arguments_are_refused():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)
    with pytest.raises(TypeError, match="retry="):
        as_policy("3")
    assert as_policy(None).max_retries == 0 and as_policy(5).max_retries == 5


def test_scoring_listens_for_the_wait_and_the_deadline_plus_a_margin():
    core = RequestCore(timeout=httpx.Timeout(120.0, connect=5.0), timeout_margin_s=10.0)
    assert core.rewards(GROUPS).timeout == 130.0
    assert core.rewards(GROUPS, min_weight_version=3, wait_s=120.0).timeout == 250.0
    assert core.rewards(GROUPS, wait_s=30.0, deadline_s=5.0).timeout == 45.0
    built = core.build(httpx.Client(), core.rewards(GROUPS, wait_s=120.0))
    assert built.extensions["timeout"] == {"connect": 5.0, "read": 250.0, "write": 250.0,
                                           "pool": 250.0}  # fmt: skip
    with pytest.raises(ValueError, match="timeout_margin_s"):
        RequestCore(timeout_margin_s=-1)


def test_each_call_says_whether_it_may_be_repeated():
    core = RequestCore()
    kinds = {
        "score": core.rewards(GROUPS),
        "model": core.get("/v1/model"),
        "stage": core.stage_bucket("u", b"x", timeout=1),
        "abort": core.abort_upload("u", timeout=1),
        "reload v": core.reload_weights("/p", version=3, full=True, allow_cast=False, timeout=1),
        "push v": core.push_weights(b"x", version=3, full=True, timeout=1),
        "commit v": core.commit_upload("u", version=3, full=True, timeout=1),
        "adapter v": core.load_adapter("/p", version=3, name=None, allow_cast=True, timeout=1),
        "unload v": core.unload_adapter(version=3, timeout=1),
        "reload": core.reload_weights("/p", version=None, full=True, allow_cast=False, timeout=1),
        "push": core.push_weights(b"x", version=None, full=True, timeout=1),
        "commit": core.commit_upload("u", version=None, full=True, timeout=1),
        "create": core.create_upload(timeout=1),
    }
    got = {name: req.idempotency for name, req in kinds.items()}
    S, V, N = Idempotency.SAFE, Idempotency.BY_VERSION, Idempotency.NONE
    assert got == {"score": S, "model": S, "stage": S, "abort": S, "reload v": V, "push v": V,
                   "commit v": V, "adapter v": V, "unload v": V, "reload": N, "push": N,
                   "commit": N, "create": N}  # fmt: skip
    assert kinds["commit v"].version == 3 and kinds["commit v"].operation == "commit"


# --- against a real server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with tiny_server() as srv:
        yield srv


@pytest.fixture()
def proxy(server):
    with FlakyProxy(server.url) as p:
        yield p


def test_scoring_rides_out_503_and_429_and_honours_retry_after(proxy):
    proxy.script("POST /v1/rewards", ["503", "429:1", "pass"])
    with VigorClient(proxy.url, retry=FAST) as client:
        t0 = time.monotonic()
        res = client.score(GROUPS, shaping="none")
        elapsed = time.monotonic() - t0
    assert len(res.groups[0].scores) == 3 and all(s is not None for s in res.groups[0].scores)
    assert [a for _, _, a in proxy.seen] == ["503", "429:1", "pass"]
    assert proxy.count("/v1/rewards", forwarded=True) == 1
    assert 1.0 <= elapsed < 5.0  # waited the server's Retry-After, not the 10 ms backoff


def test_async_client_retries_the_same_way(proxy):
    proxy.script("POST /v1/rewards", ["drop", "503", "pass"])

    async def run():
        async with AsyncVigorClient(proxy.url, retry=FAST) as client:
            return await client.score(GROUPS)

    assert sorted(asyncio.run(run()).groups[0].rewards) == [-1.0, 0.0, 1.0]
    assert [a for _, _, a in proxy.seen] == ["drop", "503", "pass"]


def test_dropped_connections_are_retried_for_scoring(proxy):
    proxy.script("POST /v1/rewards", ["drop", "drop_answer", "pass"])
    with VigorClient(proxy.url, retry=FAST) as client:
        assert len(client.score(GROUPS).groups[0].rewards) == 3
    assert proxy.count("/v1/rewards") == 3 and proxy.count("/v1/rewards", forwarded=True) == 2


def test_retries_stop_at_the_bound_and_the_error_tells_them(proxy):
    proxy.script("POST /v1/rewards", ["503", "drop", "429", "503", "pass"])
    with VigorClient(proxy.url, retry=FAST) as client, pytest.raises(NotReadyError) as info:
        client.score(GROUPS)
    err = info.value
    assert err.attempts == 4 and err.retries == 3 and proxy.count("/v1/rewards") == 4
    assert [type(e) for e in err.history] == [NotReadyError, VigorConnectionError, OverloadedError]
    assert "after 4 attempts" in str(err) and "max_retries=3" in str(err)
    assert "earlier: 503 not_ready, VigorConnectionError, 429 overloaded" in str(err)


def test_a_long_retry_after_is_not_waited(proxy):
    proxy.script("POST /v1/rewards", ["429:600"])
    policy = RetryPolicy(max_retries=3, max_retry_after_s=5)
    with VigorClient(proxy.url, retry=policy) as client, pytest.raises(OverloadedError) as info:
        client.score(GROUPS)
    assert info.value.retry_after == 600 and info.value.attempts == 1
    assert "exceeds max_retry_after_s=5" in str(info.value) and proxy.count("/v1/rewards") == 1


def test_no_retry_policy_and_unretried_statuses(proxy, server):
    proxy.script("POST /v1/rewards", ["503"])
    with VigorClient(proxy.url, retry=None) as client, pytest.raises(NotReadyError) as info:
        client.score(GROUPS)
    assert info.value.attempts == 1 and str(info.value).endswith("answers 503")
    # A 409 after wait_s is never repeated.
    with VigorClient(server.url, retry=FAST) as client, pytest.raises(StaleWeightsError) as info:
        client.score(GROUPS, min_weight_version=99, wait_s=0.05)
    assert info.value.attempts == 1


def test_a_server_that_is_not_there_is_retried_then_named():
    dead = f"http://127.0.0.1:{free_port()}"
    with VigorClient(dead, retry=FAST) as client, pytest.raises(VigorConnectionError) as info:
        client.score(GROUPS)
    err = info.value
    assert err.attempts == 4 and not err.request_sent and "ConnectError" in str(err)
    assert not isinstance(err, VigorServerError)


# --- a busy server is ridden out; every wait is jittered; a time budget bounds it all ---------
def test_retry_after_is_lengthened_by_jitter_never_shortened():
    policy = RetryPolicy(jitter=0.5, max_retry_after_s=10.0)
    rng = random.Random(0)
    waits = [policy.after(2.0, rng) for _ in range(200)]
    assert all(2.0 <= w <= 3.0 for w in waits) and max(waits) - min(waits) > 0.6
    assert all(policy.after(8.0, rng) <= 10.0 for _ in range(50))  # within the bound
    assert RetryPolicy(jitter=0.0).after(2.0, rng) == 2.0


def test_a_busy_policy_needs_a_bound():
    with pytest.raises(ValueError, match="max_elapsed_s"):
        RetryPolicy(busy_retries=None, max_elapsed_s=None)
    with pytest.raises(ValueError, match="busy_retries"):
        RetryPolicy(busy_retries=-1)
    assert RetryPolicy(busy_retries=5, max_elapsed_s=None).max_elapsed_s is None


def test_busy_answers_are_ridden_out_apart_from_the_failure_count(proxy):
    proxy.script("POST /v1/rewards", ["429:0.05"] * 6 + ["503", "pass"])
    policy = RetryPolicy(max_retries=1, backoff_s=0.01, seed=0)
    with VigorClient(proxy.url, retry=policy) as client:
        assert len(client.score(GROUPS).groups[0].rewards) == 3
    assert proxy.count("/v1/rewards") == 8 and proxy.count("/v1/rewards", forwarded=True) == 1


def test_busy_retries_bounds_busy_answers_when_given(proxy):
    proxy.script("POST /v1/rewards", ["429:0.05"] * 5)
    policy = RetryPolicy(max_retries=3, busy_retries=2, seed=0)
    with VigorClient(proxy.url, retry=policy) as client, pytest.raises(OverloadedError) as info:
        client.score(GROUPS)
    assert info.value.attempts == 3 and "busy_retries=2" in str(info.value)


def test_the_time_budget_stops_a_busy_server_being_waited_on_forever(proxy):
    proxy.script("POST /v1/rewards", ["429:0.2"] * 50)
    policy = RetryPolicy(max_elapsed_s=1.0, seed=0)
    with VigorClient(proxy.url, retry=policy) as client, pytest.raises(OverloadedError) as info:
        t0 = time.monotonic()
        client.score(GROUPS)
    assert time.monotonic() - t0 < 1.5 and 3 <= info.value.attempts <= 5
    assert "max_elapsed_s=1" in str(info.value)


def test_no_retry_means_no_retry_of_a_busy_answer_either(proxy):
    proxy.script("POST /v1/rewards", ["429:0.05", "pass"])
    with VigorClient(proxy.url, retry=None) as client, pytest.raises(OverloadedError) as info:
        client.score(GROUPS)
    assert info.value.attempts == 1 and proxy.count("/v1/rewards") == 1


def test_the_default_policy_rides_out_a_busy_server(proxy):
    # Five busy answers in a row: past the 3 retries the policy allowed before (issue 26, #10).
    proxy.script("POST /v1/rewards", ["429:0.1"] * 5 + ["pass"])
    with VigorClient(proxy.url) as client:
        assert len(client.score(GROUPS).groups[0].rewards) == 3
    assert proxy.count("/v1/rewards") == 6
