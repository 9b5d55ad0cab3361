"""Groups assembled from one-sample requests over real HTTP (tiny model, uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import httpx
import pytest

from ..servers import metric, until_async
from ..weights.helpers import runtime_of, tiny_server

PROMPTS = {"a": [1, 2, 3], "b": [4, 5], "c": [6, 7, 8, 9]}
COMPLETIONS = {
    "a": [[10, 11], [12], [13, 14, 15], [16, 17]],
    "b": [[20], [21, 22, 23], [24, 25], []],
    "c": [[30, 31, 32], [33], [34, 35], [36, 37, 38, 39]],
}


def whole_groups(url: str) -> dict[str, dict]:
    body = {
        "groups": [
            {"id": k, "prompt_ids": PROMPTS[k], "completion_ids": COMPLETIONS[k]} for k in PROMPTS
        ],
        "signals": ["entropy_mean"],
    }
    r = httpx.post(url + "/v1/rewards", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return {g["id"]: g for g in r.json()["groups"]}


def one_sample(key: str, j: int, **extra) -> dict:
    group = {
        "id": key,
        "group_size": len(COMPLETIONS[key]),
        "prompt_ids": PROMPTS[key],
        "completion_ids": [COMPLETIONS[key][j]],
        **extra,
    }
    return {"groups": [group], "signals": ["entropy_mean"]}


async def post_all(url: str, bodies: list[dict], timeout: float = 60) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        return await asyncio.gather(*(client.post("/v1/rewards", json=b) for b in bodies))


async def until_gauge(client: httpx.AsyncClient, gauge: str, n: int, what: str) -> None:
    """Until /metrics shows `gauge` at n: how soon the server has read a request or noticed a
    closed connection depends on load, so a fixed sleep is a race."""

    async def reached() -> bool:
        return metric((await client.get("/metrics")).text, gauge) == n

    await until_async(reached, what)


async def until_orphaned(client: httpx.AsyncClient, n: int) -> None:
    """Until n held samples are known to have lost their caller (a client timeout)."""
    await until_gauge(client, "vigor_held_orphans", n, f"the server saw {n} caller(s) leave")


def rounding_equal(got: float | None, want: float | None) -> bool:
    return got == want if got is None or want is None else got == pytest.approx(want, rel=1e-6)


def test_interleaved_samples_get_their_whole_group_ranks_and_exact_scores():
    with tiny_server() as srv:
        want = whole_groups(srv.url)
        order = [(k, j) for k in COMPLETIONS for j in range(len(COMPLETIONS[k]))]
        random.Random(0).shuffle(order)
        responses = asyncio.run(post_all(srv.url, [one_sample(k, j) for k, j in order]))
        for (k, j), r in zip(order, responses, strict=True):
            assert r.status_code == 200, r.text
            got = r.json()["groups"][0]
            assert got["id"] == k and got["rewards"] == [want[k]["rewards"][j]]
            # float32: a group scored alone may be packed into other micro-batch shapes than in
            # the three-group request (the planner weighs padding), so equal up to rounding.
            assert rounding_equal(got["scores"][0], want[k]["scores"][j])
            assert got["reasons"] == [want[k]["reasons"][j]]
            signal = got["signals"]["entropy_mean"][0]
            assert rounding_equal(signal, want[k]["signals"]["entropy_mean"][j])
        assert any(r.json()["groups"][0]["reasons"] == ["empty_completion"] for r in responses)
        metrics = httpx.get(srv.url + "/metrics").text
        assert "vigor_held_samples 0.0" in metrics and "vigor_held_groups 0.0" in metrics


def test_the_same_key_twice_forms_two_groups_of_its_size():
    with tiny_server() as srv:
        bodies = [one_sample("a", j) for j in range(4)] * 2
        responses = asyncio.run(post_all(srv.url, bodies))
        rewards = sorted(r.json()["groups"][0]["rewards"][0] for r in responses)
        assert rewards == pytest.approx(sorted([-1.0, -1 / 3, 1 / 3, 1.0] * 2))


def test_a_group_that_never_completes_answers_null_with_a_reason():
    with tiny_server() as srv:
        # 2 of 4 ever arrive. Sent together, but both must be read within the hold time to
        # share one group: 2 s is a margin a loaded machine keeps.
        bodies = [one_sample("a", j, hold_s=2.0) for j in range(2)]
        responses = asyncio.run(post_all(srv.url, bodies))
        for r in responses:
            g = r.json()["groups"][0]
            assert r.status_code == 200
            assert g["rewards"] == [None] and g["scores"] == [None]
            assert g["reasons"] == ["group_incomplete"]
        assert "vigor_groups_incomplete_total 1.0" in httpx.get(srv.url + "/metrics").text


def test_a_retry_of_an_expired_sample_hears_so_at_once():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await post_all(url, [one_sample("a", j, hold_s=2.0) for j in range(2)])  # one group
            t0 = time.monotonic()
            # OpenRLHF re-sends a failed sample 1 s later: without the memory of the expiry it
            # would open a new group and wait the whole hold time again, five times over.
            retry = await client.post("/v1/rewards", json=one_sample("a", 0, hold_s=30))
            return retry, time.monotonic() - t0

    with tiny_server() as srv:
        retry, waited = asyncio.run(go(srv.url))
        assert retry.json()["groups"][0]["reasons"] == ["group_incomplete"]
        assert waited < 10  # answered from the record, not after another 30 s hold
        metrics = httpx.get(srv.url + "/metrics").text
        assert "vigor_groups_incomplete_total 1.0" in metrics  # the retry opened no group
        assert "vigor_held_samples 0.0" in metrics


def test_a_retried_sample_counts_once():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = one_sample("a", 0, sample_ids=["s0"])
            # The first try gives up (client timeout), as OpenRLHF's does, and is sent again.
            with pytest.raises(httpx.TimeoutException):
                await client.post("/v1/rewards", json=first, timeout=0.5)
            rest = [one_sample("a", j, sample_ids=[f"s{j}"]) for j in (1, 2)]
            return await asyncio.gather(
                client.post("/v1/rewards", json=first),
                *(client.post("/v1/rewards", json=b) for b in rest),
                client.post("/v1/rewards", json=one_sample("a", 3, sample_ids=["s3"])),
            )

    with tiny_server() as srv:
        want = whole_groups(srv.url)["a"]
        responses = asyncio.run(go(srv.url))
        got = [r.json()["groups"][0]["rewards"][0] for r in responses]
        assert got == want["rewards"]  # 4 samples, not 5: the retry took its slot


def test_a_try_read_after_its_own_retry_hears_the_same_answer_and_counts_once():
    """Under load the server can read a try only after its caller's retry: both are connected
    then, and neither may be turned away or counted twice."""

    def earlier_tries(srv) -> int:
        pending = list(runtime_of(srv).pipeline.assembler._pending.values())
        return sum(len(s.earlier) for p in pending for s in p.samples)

    async def go(srv):
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            s0 = one_sample("a", 0, sample_ids=["s0"])
            tries = [asyncio.create_task(client.post("/v1/rewards", json=s0)) for _ in range(2)]
            await until_async(
                lambda: earlier_tries(srv) >= 1, "the second try joined the first's slot"
            )
            rest = [one_sample("a", j, sample_ids=[f"s{j}"]) for j in (1, 2, 3)]
            others = await asyncio.gather(*(client.post("/v1/rewards", json=b) for b in rest))
            return await asyncio.gather(*tries), others

    with tiny_server() as srv:
        want = whole_groups(srv.url)["a"]
        tries, others = asyncio.run(go(srv))
        for r in [*tries, *others]:
            assert r.status_code == 200, r.text
        assert [r.json()["groups"][0]["rewards"][0] for r in tries] == [want["rewards"][0]] * 2
        assert [r.json()["groups"][0]["rewards"][0] for r in others] == want["rewards"][1:]


def test_a_retry_without_sample_ids_takes_the_slot_of_a_caller_that_left():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post("/v1/rewards", json=one_sample("b", 1), timeout=0.5)
            await until_orphaned(client, 1)  # the server noticed the closed connection
            return await asyncio.gather(
                *(client.post("/v1/rewards", json=one_sample("b", j)) for j in (1, 0, 2, 3))
            )

    with tiny_server() as srv:
        want = whole_groups(srv.url)["b"]
        responses = asyncio.run(go(srv.url))
        got = [r.json()["groups"][0]["rewards"][0] for r in responses]
        assert got == [want["rewards"][j] for j in (1, 0, 2, 3)]


@pytest.mark.parametrize("ids", [False, True], ids=["by_content", "by_sample_id"])
def test_a_retry_that_arrives_while_its_group_is_scored_hears_that_answer(ids):
    """The rest of a group can complete it (a caller that left still counts) before the retry
    of the sample that left arrives (under load, or sent at the same time): the retry must hear
    the group's answer, not open a new group that never fills."""

    def sample(j: int) -> dict:
        return one_sample("b", j, sample_ids=[f"s{j}"]) if ids else one_sample("b", j)

    def retries_attached(srv) -> int:
        scoring = runtime_of(srv).pipeline.assembler._scoring.values()
        return sum(len(s.earlier) for groups in scoring for p in groups for s in p.samples)

    async def go(srv):
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post("/v1/rewards", json=sample(1), timeout=0.5)
            await until_orphaned(client, 1)
            gate = threading.Event()
            runtime_of(srv).worker.submit(gate.wait)  # the engine is busy: scoring waits
            try:
                rest = [asyncio.create_task(client.post("/v1/rewards", json=sample(j)))
                        for j in (0, 2, 3)]  # fmt: skip
                await until_gauge(client, "vigor_held_samples", 0, "the group closed, to score")
                retry = asyncio.create_task(client.post("/v1/rewards", json=sample(1)))
                assembler = runtime_of(srv).pipeline.assembler
                await until_async(
                    lambda: retries_attached(srv) or assembler.held_samples,
                    "the retry read by the server",
                )
                assert assembler.held_samples == 0, "the retry opened a new group"
            finally:
                gate.set()
            return await retry, await asyncio.gather(*rest)

    with tiny_server() as srv:
        want = whole_groups(srv.url)["b"]
        retry, rest = asyncio.run(go(srv))
        assert [r.status_code for r in [retry, *rest]] == [200] * 4, retry.text
        got = [r.json()["groups"][0]["rewards"][0] for r in [retry, *rest]]
        assert got == [want["rewards"][j] for j in (1, 0, 2, 3)]
        assembler = runtime_of(srv).pipeline.assembler
        assert assembler.held_samples == 0 and assembler.held_groups == 0


def test_past_the_hold_bound_a_request_is_refused_whole_and_nothing_is_lost():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = [asyncio.create_task(client.post("/v1/rewards", json=one_sample("a", j)))
                    for j in range(3)]  # fmt: skip
            await until_gauge(client, "vigor_held_samples", 3, "the first 3 samples held")
            refused = await client.post("/v1/rewards", json=one_sample("c", 0))
            last = await client.post("/v1/rewards", json=one_sample("a", 3))
            return refused, await asyncio.gather(*held), last

    with tiny_server(max_held_samples=3) as srv:
        want = whole_groups(srv.url)["a"]
        refused, held, last = asyncio.run(go(srv.url))
        assert refused.status_code == 429 and "max_held_samples=3" in refused.text
        assert refused.headers["retry-after"]
        got = [r.json()["groups"][0]["rewards"][0] for r in [*held, last]]
        assert got == want["rewards"]


def test_pieces_of_one_key_must_agree():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.create_task(
                client.post("/v1/rewards", json=one_sample("a", 0, hold_s=2.0))
            )
            await until_gauge(client, "vigor_held_samples", 1, "the first sample held")
            other = one_sample("a", 1)
            other["groups"][0]["prompt_ids"] = [9, 9]
            return await client.post("/v1/rewards", json=other), await first

    with tiny_server() as srv:
        refused, first = asyncio.run(go(srv.url))
        assert refused.status_code == 422 and "held with another prompt" in refused.text
        assert first.json()["groups"][0]["reasons"] == ["group_incomplete"]
        mixed = {
            "groups": [
                one_sample("a", 0)["groups"][0],
                {"prompt_ids": [1], "completion_ids": [[2]]},
            ]
        }
        r = httpx.post(srv.url + "/v1/rewards", json=mixed)
        assert r.status_code == 422 and "groups[1].group_size" in r.text


def test_a_group_size_that_could_never_be_scored_is_refused_at_once():
    with tiny_server(max_completions_per_group=8) as srv:
        start = time.monotonic()
        r = httpx.post(srv.url + "/v1/rewards", json=one_sample("a", 0, group_size=9), timeout=30)
        assert r.status_code == 413, r.text
        assert "groups[0].group_size: 9 exceeds max_completions_per_group=8" in r.text
        assert time.monotonic() - start < 10  # not held until it expires
        assert runtime_of(srv).pipeline.assembler.held_samples == 0
