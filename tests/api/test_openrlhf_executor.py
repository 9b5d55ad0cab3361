"""OpenRLHF 0.11.2's own `SingleTurnAgentExecutor` fetching rewards from a real server.

OpenRLHF ≥ 0.9.1 posts one sample per call, right after that sample is generated, with its own
aiohttp client (180 s timeout, 5 tries 1 s apart). The executor, its tokenization, its query
building and its HTTP client are theirs (installed by `make install`, `--no-deps`); only the
vLLM engine is a stand-in that returns scripted token ids after a scripted delay, since vLLM
cannot run here. Rewards must equal the whole-group ranks `/v1/rewards` gives. The server holds
a tiny random model with the default model's tokenizer: real text, fast scoring.
"""

from __future__ import annotations

import asyncio
import random
import re
from types import SimpleNamespace

import httpx
import pytest
from openrlhf.utils.agent import SingleTurnAgentExecutor

from ..client.flaky_proxy import FlakyProxy
from ..servers import ProcessServer

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is 12 * 3?",
    "Name a prime number above 10.",
    "How many legs do 3 spiders have?",
    "What is the capital of France?",  # only the group that never completes asks this
]
ANSWERS = [
    ["12 * 3 = 36.", "36", "36", "It is 38, I think."],  # two identical completions: two samples
    ["11", "13 is prime.", "banana", "17, since it has no divisors but 1 and itself."],
    ["24", "3 * 8 = 24 legs.", "Spiders have 6 legs, so 18.", "24."],
    ["Paris", "Paris.", "Lyon"],
]
N = 4
WHOLE = [0, 1, 2]  # the groups every sample of which is generated
NEVER_WHOLE = 3


class ScriptedEngine:
    """Stands in for vLLM: `generate` returns the next scripted completion of a prompt."""

    def __init__(self, tokenizer, plan: dict[tuple[int, ...], list[tuple[float, list[int]]]]):
        self.tok = tokenizer
        self.plan = {k: list(v) for k, v in plan.items()}

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        delay, ids = self.plan[tuple(prompt_token_ids)].pop(0)
        await asyncio.sleep(delay)
        out = SimpleNamespace(
            token_ids=ids, text=self.tok.decode(ids), finish_reason="stop", logprobs=None
        )
        return SimpleNamespace(outputs=[out])


def chat_prompt(tok, question: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )


@pytest.fixture(scope="module")
def rollout(default_tokenizer):
    """Prompt texts, their ids (as OpenRLHF tokenizes them) and each sample's response ids."""
    tok = default_tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    responses = [
        [[*tok(a, add_special_tokens=False)["input_ids"], tok.eos_token_id] for a in answers]
        for answers in ANSWERS
    ]
    return SimpleNamespace(prompts=prompts, prompt_ids=prompt_ids, responses=responses)


def whole_group_answers(url: str, rollout) -> list[dict]:
    """Each whole group scored alone by /v1/rewards, as the assembler scores it."""
    out = []
    for g in WHOLE:
        group = {"prompt_ids": rollout.prompt_ids[g], "completion_ids": rollout.responses[g]}
        r = httpx.post(url + "/v1/rewards", json={"groups": [group]}, timeout=120)
        assert r.status_code == 200, r.text
        out.append(r.json()["groups"][0])
    return out


def run_executors(url, tok, rollout, delays, groups=None, n_of=None):
    """Every sample of `groups` through its own `execute` call, all concurrently.

    OpenRLHF runs a prompt's N samples with asyncio.gather on one engine and several prompts on
    several engines at once; one event loop holding all of them interleaves them the same way.
    """
    groups = WHOLE if groups is None else groups
    plan = {
        tuple(rollout.prompt_ids[g]): [
            (delays(g, j), rollout.responses[g][j]) for j in range(n_of or N)
        ]
        for g in groups
    }
    engine = ScriptedEngine(tok, plan)
    executor = SingleTurnAgentExecutor(remote_rm_url=url)
    params = SimpleNamespace(max_tokens=64, logprobs=None)

    async def go():
        calls = [
            executor.execute(rollout.prompts[g], f"label{g}", params, 512, tok, engine)
            for g in groups
            for _ in range(n_of or N)
        ]
        return await asyncio.gather(*calls)

    return asyncio.run(go())


def by_group(outputs, rollout):
    """Each output's (group, sample index), found from the response ids it carries."""
    found = []
    for out in outputs:
        g = rollout.prompts.index(out["prompt"])
        start, end = out["action_ranges"][0]
        ids = out["observation_tokens"][start:end]
        found.append((g, ids))
    return found


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def check_whole_group_rewards(outputs, rollout, want):
    keys = None
    for out, (g, ids) in zip(outputs, by_group(outputs, rollout), strict=True):
        wg = want[g]
        rewards = [wg["rewards"][j] for j, r in enumerate(rollout.responses[g]) if r == ids]
        assert out["reward"][0] in rewards  # identical completions share their rank
        j = rollout.responses[g].index(ids)
        assert out["scores"] == [(out["reward"][0] + 1) / 2]
        # the held group's rows come in arrival order: float64 keeps that to rounding
        assert out["extra_logs"]["vigor_score"][0] == pytest.approx(wg["scores"][j], rel=1e-9)
        keys = keys or set(out["extra_logs"])
        assert set(out["extra_logs"]) == keys  # the same keys for every sample
    found = [g for g, _ in by_group(outputs, rollout)]
    for g in WHOLE:
        mine = sorted(out["reward"][0] for out, h in zip(outputs, found, strict=True) if h == g)
        assert mine == sorted(want[g]["rewards"])
        # OpenRLHF's dynamic filtering keeps a prompt when min < mean(scores) < max (0, 1).
        scores = [(r + 1) / 2 for r in mine]
        assert 0 < sum(scores) / len(scores) < 1


def test_interleaved_samples_get_their_whole_group_rank(
    served_tiny_chat, default_tokenizer, rollout
):
    url = f"{served_tiny_chat.url}/get_reward?group_size={N}"
    rng = random.Random(0)
    outputs = run_executors(url, default_tokenizer, rollout, lambda g, j: rng.uniform(0, 0.4))
    check_whole_group_rewards(outputs, rollout, whole_group_answers(served_tiny_chat.url, rollout))


def test_without_group_size_a_lone_sample_is_refused_not_scored_zero(
    served_tiny_chat, default_tokenizer, rollout
):
    outputs = run_executors(
        served_tiny_chat.url + "/get_reward", default_tokenizer, rollout, lambda g, j: 0, [0], 1
    )
    # Their client got a 422 five times and left the reward unset: no silent 0.0.
    assert outputs[0]["reward"] is None and outputs[0]["scores"] is None


def test_a_group_that_never_completes_fails_fast_for_their_retries(
    served_tiny_chat, default_tokenizer, rollout
):
    before = metric(served_tiny_chat.url, "vigor_groups_incomplete_total")
    url = f"{served_tiny_chat.url}/get_reward?group_size={N}&hold_s=2"
    outputs = run_executors(url, default_tokenizer, rollout, lambda g, j: 0, [NEVER_WHOLE], 3)
    assert all(o["reward"] is None and o["scores"] is None for o in outputs)
    # One hold, then each of their four retries is told at once (not four more holds).
    assert metric(served_tiny_chat.url, "vigor_groups_incomplete_total") == before + 1


def test_a_sample_cut_off_while_held_is_retried_and_counts_once(
    served_tiny_chat, default_tokenizer, rollout
):
    with FlakyProxy(served_tiny_chat.url) as proxy:
        # The first call to arrive (group 0, sample 0) loses its connection 1.5 s into its
        # hold; group 0 cannot complete before its last sample comes at 4 s.
        proxy.script("POST /get_reward", ["cut:1.5"])
        url = f"{proxy.url}/get_reward?group_size={N}"

        def delays(g, j):
            return 0.0 if (g, j) == (0, 0) else 4.0 if (g, j) == (0, N - 1) else 0.3 + 0.1 * j

        outputs = run_executors(url, default_tokenizer, rollout, delays)
        assert proxy.count("POST /get_reward") == len(WHOLE) * N + 1  # one retry
    check_whole_group_rewards(outputs, rollout, whole_group_answers(served_tiny_chat.url, rollout))


def test_past_the_held_sample_bound_their_retries_get_through(
    tiny_chat_model_dir, default_tokenizer, rollout, tmp_path
):
    server = ProcessServer(
        "--model",
        str(tiny_chat_model_dir),
        "--dtype",
        "float64",
        env={"VIGOR_MAX_HELD_SAMPLES": str(N + 1)},
    )
    server.start(tmp_path / "server.log")
    try:
        before = metric(server.url, "vigor_groups_incomplete_total")
        url = f"{server.url}/get_reward?group_size={N}"

        def delays(g, j):  # all but the last sample of every group first: 9 would be held
            return 1.5 if j == N - 1 else 0.02 * (g * N + j)

        outputs = run_executors(url, default_tokenizer, rollout, delays)
        assert '/get_reward?group_size=4 HTTP/1.1" 429' in server.log()  # some were refused
        check_whole_group_rewards(outputs, rollout, whole_group_answers(server.url, rollout))
        assert metric(server.url, "vigor_groups_incomplete_total") == before
    finally:
        server.stop()
