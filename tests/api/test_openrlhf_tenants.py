"""Two tenants on one server (issue 26, finding 1): OpenRLHF 0.11.2's own executor as the victim.

The victim is OpenRLHF's `SingleTurnAgentExecutor` with its own aiohttp client, posting one sample
per call to `/get_reward?group_size=4&run=<uuid>` (the run key is all it can set: its URL). At
the same time a second OpenRLHF run on the same server (run key "other") sends other completions
for the same prompts, and a third client (httpx, no run key) sends what the adversarial run sent:
samples under the same group keys (the prompt texts) asking for raw scores, a weight version that
will never come, and a stranger's completion. Each run's rewards must equal those it gets alone.
Only the vLLM engine is a stand-in (see test_openrlhf_executor.py).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from types import SimpleNamespace

import httpx
import pytest
from openrlhf.utils.agent import SingleTurnAgentExecutor

from .test_openrlhf_executor import (
    NEVER_WHOLE,
    WHOLE,
    N,
    ScriptedEngine,
    check_whole_group_rewards,
    rollout,  # noqa: F401 - the fixture
    whole_group_answers,
)

pytestmark = pytest.mark.slow


def hostile_bodies(ro) -> list[dict]:
    out = []
    stranger = ro.responses[NEVER_WHOLE][0]
    for g in WHOLE:
        base = {"id": ro.prompts[g], "group_size": N, "hold_s": 3.0}
        sample = {**base, "prompt_ids": ro.prompt_ids[g], "completion_ids": [stranger]}
        out += [
            {"groups": [sample], "shaping": "none"},
            {"groups": [sample], "min_weight_version": 10**9},
            {"groups": [{**sample, "sample_ids": ["x"]}]},
        ]
    return out


def test_another_run_and_a_hostile_client_leave_openrlhf_rewards_as_they_are_alone(
    served_tiny_chat,
    default_tokenizer,
    rollout,  # noqa: F811
):
    tok, url = default_tokenizer, served_tiny_chat.url
    # The other run: each prompt's samples are another prompt's completions.
    other = SimpleNamespace(
        prompts=rollout.prompts,
        prompt_ids=rollout.prompt_ids,
        responses=[rollout.responses[g] for g in (1, 2, 0, NEVER_WHOLE)],
    )
    rng = random.Random(1)

    def executor_calls(run_key: str, ro) -> list:
        plan = {
            tuple(ro.prompt_ids[g]): [(rng.uniform(0, 0.6), ro.responses[g][j]) for j in range(N)]
            for g in WHOLE
        }
        engine = ScriptedEngine(tok, plan)
        executor = SingleTurnAgentExecutor(
            remote_rm_url=f"{url}/get_reward?group_size={N}&run={run_key}"
        )
        params = SimpleNamespace(max_tokens=64, logprobs=None)
        return [
            executor.execute(ro.prompts[g], f"label{g}", params, 512, tok, engine)
            for g in WHOLE
            for _ in range(N)
        ]

    async def hostile(client: httpx.AsyncClient):
        answers = []
        for body in hostile_bodies(rollout):
            await asyncio.sleep(0.03)
            answers.append(client.post("/v1/rewards", json=body))
        return await asyncio.gather(*answers)

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            victim = executor_calls(uuid.uuid4().hex, rollout)
            theirs = executor_calls("other", other)
            return await asyncio.gather(
                asyncio.gather(*victim), asyncio.gather(*theirs), hostile(client)
            )

    victim, theirs, refused = asyncio.run(go())
    check_whole_group_rewards(victim, rollout, whole_group_answers(url, rollout))
    check_whole_group_rewards(theirs, other, whole_group_answers(url, other))
    # The hostile client's samples were only ever its own (held, then incomplete; or refused
    # for asking other terms of its own group): never a server error.
    assert all(r.status_code in (200, 422) for r in refused), [r.text for r in refused]
