"""Held groups belong to their caller (issue 26, finding 1), over real HTTP on a tiny model.

A group key lives in the namespace of the caller's bearer token and run key: another tenant
sending the same key with other terms, other sample ids or other completions neither joins,
supersedes nor configures it. Within one namespace the first sample fixes the terms, and a
sample that differs is refused naming the field while the held group stays as it was.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from vigor_client.wire import RUN_KEY_HEADER

from ..weights.helpers import runtime_of, tiny_server
from .test_group_assembly import COMPLETIONS, PROMPTS, one_sample, until_gauge, whole_groups

VICTIM = {RUN_KEY_HEADER: "victim-run"}
OTHER = {RUN_KEY_HEADER: "other-run"}


async def post(client: httpx.AsyncClient, body: dict, headers: dict, delay: float = 0.0):
    await asyncio.sleep(delay)
    return await client.post("/v1/rewards", json=body, headers=headers)


def hostile_samples(key: str) -> list[dict]:
    """Everything the adversarial run did to a victim's key, sent from another namespace."""
    foreign = COMPLETIONS["c"]  # other text under the victim's key
    raw = one_sample(key, 0)
    raw["shaping"] = "none"
    stale = one_sample(key, 1)
    stale["min_weight_version"] = 10**9
    taker = one_sample(key, 2, sample_ids=["s0"])
    taker["groups"][0]["completion_ids"] = [foreign[0]]
    twice = {
        "groups": [
            {**one_sample(key, 0)["groups"][0], "prompt_ids": [7, 7]},
            {**one_sample(key, 1)["groups"][0], "prompt_ids": PROMPTS[key]},
        ]
    }
    return [raw, stale, taker, twice]


def test_another_tenant_cannot_join_supersede_or_configure_a_group():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            victim = [
                post(client, one_sample("a", j, sample_ids=[f"s{j}"]), VICTIM, 0.3 * j)
                for j in range(4)
            ]
            # The other tenant's own whole group under the same key, plus the hostile samples.
            other = [
                post(client, one_sample("a", j, sample_ids=[f"s{j}"]), OTHER, 0.1 + 0.3 * j)
                for j in range(4)
            ]
            hostile = [
                post(client, body, {RUN_KEY_HEADER: "hostile"}, 0.15 + 0.2 * k)
                for k, body in enumerate(hostile_samples("a"))
            ]
            return await asyncio.gather(asyncio.gather(*victim), asyncio.gather(*other),
                                        asyncio.gather(*hostile))  # fmt: skip

    with tiny_server(group_hold_s=4.0) as srv:
        want = whole_groups(srv.url)["a"]
        victim, other, hostile = asyncio.run(go(srv.url))
        for responses in (victim, other):  # each tenant's ranks as if it were alone
            assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
            got = [r.json()["groups"][0]["rewards"][0] for r in responses]
            assert got == want["rewards"]
            scores = [r.json()["groups"][0]["scores"][0] for r in responses]
            # float32, and the two tenants' groups may share an engine call: to rounding
            assert scores == pytest.approx(want["scores"], rel=1e-5)
        assert all(r.status_code < 500 for r in hostile), [r.text for r in hostile]
        assert runtime_of(srv).pipeline.assembler.held_samples == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"shaping": "none"}, "shaping"),
        ({"min_weight_version": 10**9}, "min_weight_version"),
        ({"signals": ["entropy_mean", "logprob_mean"]}, "signals"),
        ({"temperature": 0.5}, "temperature"),
        ({"group_size": 5}, "groups[0].group_size"),
        ({"prompt_ids": [9, 9]}, "held with another prompt"),
    ],
)
def test_a_sample_with_other_terms_is_refused_and_the_held_group_is_untouched(change, field):
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.create_task(post(client, one_sample("a", 0), {}))
            await until_gauge(client, "vigor_held_samples", 1, "the first sample held")
            odd = one_sample("a", 1)
            for k, v in change.items():
                (odd["groups"][0] if k in ("group_size", "prompt_ids") else odd)[k] = v
            refused = await post(client, odd, {})
            held = runtime_of_url[url].pipeline.assembler.held_samples
            rest = [post(client, one_sample("a", j), {}) for j in (1, 2, 3)]
            return refused, held, await asyncio.gather(first, *rest)

    runtime_of_url = {}
    with tiny_server() as srv:
        runtime_of_url[srv.url] = runtime_of(srv)
        want = whole_groups(srv.url)["a"]
        refused, held, answers = asyncio.run(go(srv.url))
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["error"]["message"]
        assert held == 1  # nothing of the odd sample was held
        assert [r.json()["groups"][0]["rewards"][0] for r in answers] == want["rewards"]


def test_the_same_key_twice_in_one_request_is_refused():
    with tiny_server() as srv:
        body = {
            "groups": [
                {**one_sample("a", 0)["groups"][0]},
                {**one_sample("a", 1)["groups"][0], "prompt_ids": PROMPTS["b"]},
            ]
        }
        r = httpx.post(srv.url + "/v1/rewards", json=body, timeout=30)
        assert r.status_code == 422, r.text
        assert "groups[1].id: repeats groups[0].id" in r.json()["error"]["message"]
        assert runtime_of(srv).pipeline.assembler.held_samples == 0


def test_a_retry_after_the_group_was_answered_gets_the_same_answer():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            bodies = [one_sample("a", j, sample_ids=[f"s{j}"]) for j in range(4)]
            first = await asyncio.gather(*(post(client, b, VICTIM) for b in bodies))
            # Their answers were lost on the way back: every sample is sent again.
            again = await asyncio.gather(*(post(client, b, VICTIM) for b in bodies[:2]))
            return first, again

    with tiny_server() as srv:
        first, again = asyncio.run(go(srv.url))
        assert [r.status_code for r in again] == [200, 200]
        for a, b in zip(first, again):  # noqa: B905 - again is the first two
            assert a.json()["groups"] == b.json()["groups"]
        assembler = runtime_of(srv).pipeline.assembler
        assert assembler.held_samples == 0 and assembler.held_groups == 0  # no new group


def test_a_sample_id_sent_again_with_other_text_is_refused():
    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = asyncio.create_task(post(client, one_sample("a", 0, sample_ids=["s0"]), {}))
            await until_gauge(client, "vigor_held_samples", 1, "the first sample held")
            other = one_sample("a", 1, sample_ids=["s0"])  # s0's id, another completion
            refused = await post(client, other, {})
            rest = [post(client, one_sample("a", j, sample_ids=[f"s{j}"]), {}) for j in (1, 2, 3)]
            return refused, await asyncio.gather(first, *rest)

    with tiny_server() as srv:
        want = whole_groups(srv.url)["a"]
        refused, answers = asyncio.run(go(srv.url))
        assert refused.status_code == 422, refused.text
        assert "groups[0].sample_ids[0]" in refused.text and "same one" in refused.text
        assert [r.json()["groups"][0]["rewards"][0] for r in answers] == want["rewards"]


def test_hold_s_past_the_servers_ceiling_is_refused():
    with tiny_server(group_hold_s=10, max_group_hold_s=30) as srv:
        r = httpx.post(srv.url + "/v1/rewards", json=one_sample("a", 0, hold_s=3600), timeout=30)
        assert r.status_code == 422, r.text
        assert "groups[0].hold_s: 3600 exceeds this server's max_group_hold_s=30" in r.text
        body = {**one_sample("a", 0), "hold_s": 31}
        r = httpx.post(srv.url + "/v1/rewards", json=body, timeout=30)
        assert r.status_code == 422 and "hold_s: 31 exceeds" in r.text
        assert runtime_of(srv).pipeline.assembler.held_samples == 0
