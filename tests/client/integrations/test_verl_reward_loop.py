"""verl 0.9.1's own reward loop driving `VigorRewardManager` against a real server, on real Ray.

Everything on the reward path is verl's released code (installed by `make install`, `--no-deps`):
`RewardLoopManager` starts its `RewardLoopWorker` actors on a local Ray, each loads the manager
with `load_reward_manager` (importlib source), and the samples reach it as verl sends them —
one `compute_score` call per sample from the agent loop (`AgentLoopWorker._compute_score`, the
path verl takes without a reward model), or chunked across workers by `compute_rm_score`. The
batch is built as `RayPPOTrainer` builds it (uid per prompt, `repeat(n, interleave=True)`), and
chunks split uid groups. Nothing is generated: response ids are scripted, since vLLM cannot run
here. Rewards must equal the whole-group ranks `/v1/rewards` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import numpy as np
import pytest
import ray
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopMetrics,
    AgentLoopOutput,
    AgentLoopWorker,
)
from verl.experimental.reward_loop.reward_loop import RewardLoopManager

from vigor_client.integrations import verl_reward_loop

pytestmark = pytest.mark.slow

N = 4
QUESTIONS = ["What is 12 * 3?", "Name a prime above 10.", "How many legs do 3 spiders have?"]
ANSWERS = [
    ["12 * 3 = 36.", "36", "36", "It is 38."],
    ["11", "13 is prime.", "banana", "17"],
    ["24", "3 * 8 = 24 legs.", "18", "24."],
]


def verl_config(model_dir, url: str, **reward_kwargs):
    """The keys verl's reward loop reads, as `ppo_trainer.yaml` lays them out."""
    return OmegaConf.create(
        {
            "actor_rollout_ref": {
                "model": {"path": str(model_dir), "tokenizer_path": None},
                "rollout": {"n": N, "val_kwargs": {"n": 1}},
            },
            "reward": {
                "num_workers": 2,
                "custom_reward_function": {"path": None, "name": "compute_score"},
                "reward_manager": {
                    "source": "importlib",
                    "name": "VigorRewardManager",
                    "module": {"path": verl_reward_loop.__file__, "name": "custom_reward_manager"},
                },
                "reward_model": {"enable": False, "enable_resource_pool": False},
                "reward_kwargs": {"server_url": url, "hold_s": 20, **reward_kwargs},
            },
            "trainer": {"val_before_train": False, "test_freq": -1},
            "data": {"val_files": None},
        }
    )


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def rollout(default_tokenizer):
    tok = default_tokenizer
    chats = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in QUESTIONS
    ]
    prompt_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in chats]
    responses = [
        [[*tok(a, add_special_tokens=False)["input_ids"], tok.eos_token_id] for a in answers]
        for answers in ANSWERS
    ]
    return prompt_ids, responses


def training_batch(prompt_ids, responses) -> tuple[DataProto, list[int]]:
    """RayPPOTrainer's batch: a uid per prompt, then each row repeated n times, interleaved."""
    batch = DataProto.from_single_dict(
        {
            "data_source": np.array(["gsm8k"] * len(prompt_ids), dtype=object),
            "uid": np.array([str(uuid.uuid4()) for _ in prompt_ids], dtype=object),
        }
    )
    repeated = batch.repeat(repeat_times=N, interleave=True)
    sample_of_row = [j for _ in prompt_ids for j in range(N)]
    return repeated, sample_of_row


def whole_group_answers(url: str, prompt_ids, responses) -> list[dict]:
    out = []
    for p, c in zip(prompt_ids, responses, strict=True):
        group = {"prompt_ids": p, "completion_ids": c}
        r = httpx.post(url + "/v1/rewards", json={"groups": [group]})
        assert r.status_code == 200, r.text
        out.append(r.json()["groups"][0])
    return out


def tied_rewards(want: list[dict], responses, g: int, j: int) -> list[float]:
    """The rewards sample j may get: identical completions tie, and ties go by arrival order."""
    same = [k for k, c in enumerate(responses[g]) if c == responses[g][j]]
    return [want[g]["rewards"][k] for k in same]


@contextlib.contextmanager
def reward_loop(config):
    """verl's RewardLoopManager; its named worker actors are killed after, for the next test."""
    manager = RewardLoopManager(config)
    try:
        yield manager
    finally:
        for worker in manager.reward_loop_workers:
            ray.kill(worker)


def agent_loop_worker(handles) -> AgentLoopWorker:
    """An AgentLoopWorker with only what `_compute_score` reads (no LLM server to build)."""
    worker = AgentLoopWorker.__new__(AgentLoopWorker)
    worker.reward_loop_worker_handles = handles
    worker.processor = None
    worker.mm_processor_kwargs = {}
    return worker


def stream_rewards(manager, chunks, prompt_ids, responses, sample_of_row):
    """Each agent-loop chunk's samples scored as each finishes, all chunks at once."""
    worker = agent_loop_worker(manager.reward_loop_workers)

    async def one(chunk, i, g, j):
        kwargs = {k: v[i] for k, v in chunk.non_tensor_batch.items()}
        output = AgentLoopOutput(
            prompt_ids=prompt_ids[g],
            response_ids=responses[g][j],
            response_mask=[1] * len(responses[g][j]),
            metrics=AgentLoopMetrics(),
        )
        await worker._compute_score([output], kwargs=kwargs)
        return g, j, output

    async def go():
        calls, row = [], 0
        for chunk in chunks:
            for i in range(len(chunk)):
                calls.append(one(chunk, i, row // N, sample_of_row[row]))
                row += 1
        return await asyncio.gather(*calls)

    return asyncio.run(go())


def test_agent_loop_stream_gets_whole_group_ranks(
    local_ray, served_tiny_chat, tiny_chat_model_dir, rollout
):
    prompt_ids, responses = rollout
    batch, sample_of_row = training_batch(prompt_ids, responses)
    chunks = batch.chunk(6)  # AgentLoopManager's split: chunks of 2 split every uid group
    assert len({c.non_tensor_batch["uid"][0] for c in chunks}) < len(chunks)
    with reward_loop(verl_config(tiny_chat_model_dir, served_tiny_chat.url)) as manager:
        results = stream_rewards(manager, chunks, prompt_ids, responses, sample_of_row)
    want = whole_group_answers(served_tiny_chat.url, prompt_ids, responses)
    keys = None
    for g, j, output in results:
        assert output.reward_score in tied_rewards(want, responses, g, j)
        info = output.extra_fields["reward_extra_info"]
        assert info["vigor_score"] == pytest.approx(want[g]["scores"][j], rel=1e-9)
        keys = keys or set(info)
        assert set(info) == keys
    for g in range(len(QUESTIONS)):
        got = sorted(out.reward_score for h, _, out in results if h == g)
        assert got == sorted(want[g]["rewards"])


def test_compute_rm_score_over_chunks_that_split_groups(
    local_ray, served_tiny_chat, tiny_chat_model_dir, rollout, default_tokenizer
):
    """verl's batch path: left-padded prompts, right-padded responses, chunked over workers."""
    prompt_ids, responses = rollout
    batch, sample_of_row = training_batch(prompt_ids, responses)
    rows = [(r // N, sample_of_row[r]) for r in range(len(batch))]
    p_len = max(map(len, prompt_ids))
    r_len = max(len(c) for group in responses for c in group)
    pad = default_tokenizer.pad_token_id
    prompts = torch.full((len(rows), p_len), pad)
    resp = torch.full((len(rows), r_len), pad)
    mask = torch.zeros((len(rows), p_len + r_len), dtype=torch.long)
    for k, (g, j) in enumerate(rows):
        p, c = prompt_ids[g], responses[g][j]
        prompts[k, p_len - len(p) :] = torch.tensor(p)
        resp[k, : len(c)] = torch.tensor(c)
        mask[k, p_len - len(p) : p_len + len(c)] = 1
    batch.batch = DataProto.from_dict(
        {"prompts": prompts, "responses": resp, "attention_mask": mask}
    ).batch
    with reward_loop(verl_config(tiny_chat_model_dir, served_tiny_chat.url)) as manager:
        out = manager.compute_rm_score(batch)  # 12 rows on 2 workers: uid 1 straddles them
    want = whole_group_answers(served_tiny_chat.url, prompt_ids, responses)
    got = {g: [] for g in range(len(QUESTIONS))}
    for k, (g, j) in enumerate(rows):
        reward = out.batch["rm_scores"][k, len(responses[g][j]) - 1].item()  # at the last token
        assert any(reward == pytest.approx(r) for r in tied_rewards(want, responses, g, j))
        assert out.batch["rm_scores"][k].count_nonzero() <= 1
        got[g].append(reward)
    for g, rewards in got.items():
        assert sorted(rewards) == pytest.approx(sorted(want[g]["rewards"]))
    assert set(out.meta_info["reward_extra_keys"]) >= {"vigor_score", "vigor_weight_version"}


def test_a_group_that_never_completes_raises_naming_the_uid(
    local_ray, served_tiny_chat, tiny_chat_model_dir, rollout
):
    prompt_ids, responses = rollout
    config = verl_config(tiny_chat_model_dir, served_tiny_chat.url, hold_s=2)
    batch, sample_of_row = training_batch(prompt_ids[:1], responses[:1])
    short = batch[: N - 1]  # a sample lost upstream: its group can never fill
    with (
        reward_loop(config) as manager,
        pytest.raises(Exception, match=r"uid .*no VIGOR reward \(group_incomplete\)"),
    ):
        stream_rewards(manager, [short], prompt_ids, responses, sample_of_row)


def test_refuses_validation_that_would_never_fill_a_group(tiny_chat_model_dir):
    config = verl_config(tiny_chat_model_dir, "http://127.0.0.1:1")
    config.trainer.val_before_train = True
    config.data.val_files = "val.parquet"
    with pytest.raises(ValueError, match=r"val_kwargs.n=4"):
        verl_reward_loop.check_validation(config, N)
    config.actor_rollout_ref.rollout.val_kwargs.n = N
    verl_reward_loop.check_validation(config, N)
    with pytest.raises(ValueError, match="several servers"):
        verl_reward_loop.reward_kwargs(verl_config(tiny_chat_model_dir, "http://a,http://b"))
