"""The TRL integration: the reward function alone (mock transport), then a real GRPOTrainer run
against a real `vigor-serve` process on the default model, with weights pushed every step."""

import asyncio
import json
import logging
from types import SimpleNamespace

import httpx
import pytest

from vigor_client import AsyncVigorClient, VigorClient, VigorServerError
from vigor_client.integrations.trl import (
    AsyncVigorRewardFunction,
    VigorRewardFunction,
    vigor_for_trl,
)

from ...servers import ProcessServer


def fake_server(seen: list, version: int = 3, status: int = 200):
    """A transport answering /v1/rewards with rank-like rewards; records every request body."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if status != 200:
            err = {"error": {"code": "stale_weight_version", "message": "too old"}}
            return httpx.Response(status, json=err)
        groups = []
        for g in body["groups"]:
            n = len(g.get("completion_ids") or g.get("completions"))
            scores = [-float(k + 1) for k in range(n)]
            groups.append(
                {
                    "id": g.get("id"),
                    "rewards": [1.0 - 2.0 * k / max(n - 1, 1) for k in range(n)],
                    "scores": scores,
                    "grad_norms": [1.0] * n,
                    "num_tokens": [2] * n,
                    "reasons": [None] * n,
                    "signals": {s: [0.5] * n for s in body.get("signals", [])},
                }
            )
        return httpx.Response(200, json={"model": "m", "weight_version": version, "groups": groups})

    return httpx.MockTransport(handler)


PROMPTS = ["a", "a", "b", "b", "a", "a"]  # three groups: contiguous runs of one prompt
COMPLETION_IDS = [[1, 2], [3], [4, 5, 6], [7], [8], [9, 9]]


def test_reward_function_groups_pins_and_logs():
    seen, metrics, extra = [], {}, {}
    client = VigorClient("http://vigor", transport=fake_server(seen))
    fn = VigorRewardFunction(client, signals=["entropy_mean"])
    state = SimpleNamespace(global_step=3)
    out = fn(
        prompts=PROMPTS,
        completions=["x"] * 6,
        completion_ids=COMPLETION_IDS,
        trainer_state=state,
        log_metric=lambda k, v: metrics.__setitem__(k, v),
        log_extra=lambda k, v: extra.__setitem__(k, v),
        answer=["1"] * 6,  # a dataset column
    )
    body = seen[0]
    assert [g["prompt"] for g in body["groups"]] == ["a", "b", "a"]
    sent = [g["completion_ids"] for g in body["groups"]]
    assert sent == [[[1, 2], [3]], [[4, 5, 6], [7]], [[8], [9, 9]]]
    assert body["min_weight_version"] == 3 and body["wait_s"] == 120.0
    assert out == [1.0, -1.0] * 3
    assert metrics["vigor/entropy_mean"] == 0.5 and metrics["vigor/weight_version"] == 3.0
    assert metrics["vigor/version_lag"] == 0.0 and len(extra["vigor_score"]) == 6
    assert fn.__name__ == "vigor" and fn.calls[0].weight_version == 3


@pytest.mark.slow
def test_conversational_prompts_go_as_messages_or_exact_ids(default_tokenizer):
    seen = []
    prompt = [{"role": "user", "content": "2+2?"}]
    fn = VigorRewardFunction(VigorClient("http://v", transport=fake_server(seen)))
    fn([prompt, prompt], [[{"role": "assistant", "content": "4"}]] * 2, [[19], [20]])
    assert seen[0]["groups"][0]["messages"] == prompt and "min_weight_version" not in seen[0]
    fn = VigorRewardFunction(
        VigorClient("http://v", transport=fake_server(seen)), tokenizer=default_tokenizer
    )
    fn([prompt, prompt], ["4", "5"], [[19], [20]])
    want = default_tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert seen[1]["groups"][0]["prompt_ids"] == list(want)
    fn(["Q: 1+1?", "Q: 1+1?"], ["2", "3"], [[19], [20]])
    assert seen[2]["groups"][0]["prompt_ids"] == default_tokenizer("Q: 1+1?")["input_ids"]


def test_num_generations_checks_the_groups():
    fn = VigorRewardFunction(VigorClient("http://v", transport=fake_server([])), num_generations=2)
    with pytest.raises(ValueError, match="share one prompt"):
        fn(["a", "b"], ["x", "y"], [[1], [2]])


def test_failures_raise_or_become_none_with_a_logged_reason(caplog):
    client = VigorClient("http://v", transport=fake_server([], status=409))
    with pytest.raises(VigorServerError, match="too old"):
        VigorRewardFunction(client)(["a"], ["x"], [[1]])
    metrics = {}
    fn = VigorRewardFunction(client, on_error="none")
    with caplog.at_level(logging.ERROR):
        out = fn(["a", "a"], ["x", "y"], [[1], [2]], log_metric=metrics.__setitem__)
    assert out == [None, None] and metrics == {"vigor/failed_calls": 1.0}
    assert "too old" in caplog.text and "stale_weight_version" in fn.calls[0].error


def test_async_reward_function_is_awaited():
    seen = []
    fn = AsyncVigorRewardFunction(AsyncVigorClient("http://v", transport=fake_server(seen)))
    out = asyncio.run(fn(PROMPTS, ["x"] * 6, COMPLETION_IDS))
    assert out == [1.0, -1.0] * 3 and len(seen) == 1
    from trl.trainer.utils import is_async_callable

    assert is_async_callable(fn) and not is_async_callable(VigorRewardFunction("http://v"))


# --- a real GRPO run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_server(default_model_dir, tmp_path_factory):
    """A server of its own: the run moves its weights."""
    server = ProcessServer("--engine", "batched")
    server.start(tmp_path_factory.mktemp("trl-server") / "server.log")
    yield server
    server.stop()


@pytest.mark.slow
def test_grpo_trainer_two_steps_with_weight_sync(fresh_server, default_model_dir, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": f"Q: {a} + {a} = ? A:"} for a in range(2, 10)])
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-5,
        beta=0.0,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )

    # What a user adds: two lines.
    reward_fn, sync = vigor_for_trl(fresh_server.url, tokenizer=tokenizer)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[sync],
    )
    trainer.train()

    steps = trainer.state.global_step
    assert steps == 2
    # Generations at steps 0 and 1: step 1's weights were sent before its batch was scored;
    # step 2's weights sampled nothing and stayed home.
    assert [(s, v) for s, v, _ in sync.synced] == [(1, 1)]
    with VigorClient(fresh_server.url) as client:
        assert client.model_info().weight_version == 1
    # Every reward was computed on the weights that generated its completions, none stale.
    assert [c.step for c in reward_fn.calls] == [0, 1]
    for call in reward_fn.calls:
        assert call.error is None
        assert call.required_version == call.step == call.weight_version
        assert all(r is not None and -1.0 <= r <= 1.0 for r in call.rewards)
        assert sorted(call.rewards) == [-1.0, 1.0]
    logged = [h for h in trainer.state.log_history if "vigor/weight_version" in h]
    assert len(logged) == 2 and "vigor/entropy_mean" in logged[0]
    assert all(-1.0 <= h["rewards/vigor/mean"] <= 1.0 for h in logged)


# --- the weight-sync callback on its own, against a tiny real server -------------------------
PROMPT, COMPLETION = [1, 2, 3, 4], [5, 6, 7]


def served_norm(url: str, version: int) -> float:
    with VigorClient(url) as client:
        res = client.score(
            [{"prompt_ids": PROMPT, "completion_ids": [COMPLETION]}], min_weight_version=version
        )
    assert res.weight_version == version
    return res.groups[0].grad_norms[0]


def nudge(model, names=None, scale=0.05):
    import torch

    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and (names is None or names in n):
                p.add_(scale * torch.randn_like(p))


@pytest.fixture()
def tiny_server(tiny_checkpoint, tmp_path):
    server = ProcessServer("--model", str(tiny_checkpoint), "--engine", "loop")
    server.start(tmp_path / "server.log")
    yield server
    server.stop()


@pytest.mark.slow
def test_callback_pushes_then_reloads_from_disk_exactly(tiny_server, tiny_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from vigor_client import VigorError
    from vigor_client.integrations.trl import VigorWeightSyncCallback

    from ...naive import naive_grad_norm

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    model.model.embed_tokens.weight.requires_grad_(False)  # frozen: never sent
    push = VigorWeightSyncCallback(tiny_server.url)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    push.on_train_begin(None, state, None, model=model)  # fresh server at v0 = step 0: no send
    assert push.synced == [] and push.clock.offset == 0
    for step in (1, 2):
        nudge(model)
        state.global_step = step
        push.weights_for(step)
        want = naive_grad_norm(model, PROMPT, COMPLETION)
        assert served_norm(tiny_server.url, step) == pytest.approx(want, rel=1e-4)
    assert [(s, v) for s, v, _ in push.synced] == [(1, 1), (2, 2)]

    disk = VigorWeightSyncCallback(tiny_server.url, checkpoints_dir=str(tmp_path / "ckpt"))
    for step in (3, 4, 5):
        nudge(model)
        state.global_step = step
        disk.weights_for(step, model=model)
        want = naive_grad_norm(model, PROMPT, COMPLETION)
        assert served_norm(tiny_server.url, step) == pytest.approx(want, rel=1e-4)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-4", "step-5"]

    state.global_step = 0  # a new run from step 0 against a server at version 5
    with pytest.raises(VigorError, match="newer than this run's step 0"):
        VigorWeightSyncCallback(tiny_server.url).on_train_begin(None, state, None, model=model)
    late = VigorWeightSyncCallback(tiny_server.url, push_on_train_begin=True)
    late.on_train_begin(None, state, None, model=model)
    assert late.clock.offset == 6 and late.clock.version_for(2) == 8


@pytest.mark.slow
def test_callback_sends_only_the_lora_adapter_of_a_peft_model(
    tiny_server, tiny_checkpoint, tmp_path
):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from vigor_client.integrations.trl import VigorWeightSyncCallback

    from ...naive import naive_grad_norm

    torch.manual_seed(2)
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    nudge(model, names="lora_B")  # LoRA B starts at zero: make the adapter do something
    sync = VigorWeightSyncCallback(tiny_server.url)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    sync.on_train_begin(None, state, None, model=model)  # no adapter served yet: sent first
    assert sync.clock.offset == 1
    with VigorClient(tiny_server.url) as client:
        info = client.model_info()
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora" in n)
    assert info.adapter is not None and info.num_scored_parameters == lora
    want = naive_grad_norm(model, PROMPT, COMPLETION)
    assert served_norm(tiny_server.url, 1) == pytest.approx(want, rel=1e-4)

    disk = VigorWeightSyncCallback(
        tiny_server.url, checkpoints_dir=str(tmp_path / "lora"), clock=sync.clock
    )
    nudge(model, names="lora_")
    state.global_step = 1
    disk.weights_for(1, model=model)
    assert (tmp_path / "lora" / "step-2" / "adapter_config.json").is_file()
    want = naive_grad_norm(model, PROMPT, COMPLETION)
    assert served_norm(tiny_server.url, 2) == pytest.approx(want, rel=1e-4)


def test_an_async_reward_given_a_sync_client_keeps_its_tokens_and_policies():
    from vigor_client import AsyncVigorReplicas, RetryPolicy, VigorReplicas
    from vigor_client.integrations.trl.clients import async_client

    from ...weights.helpers import tiny_server

    policy = RetryPolicy(max_retries=7)
    with tiny_server(api_token="read-1", admin_token="adm-1") as srv:
        sync = VigorClient(srv.url, api_token="read-1", admin_token="adm-1", timeout=17.0,
                           timeout_margin_s=3.0, retry=policy)  # fmt: skip
        twin = async_client(sync)
        assert isinstance(twin, AsyncVigorClient) and twin.options() == sync.options()

        async def use():
            async with twin:
                return (await twin.model_info()).model, await twin.reload_weights("/nowhere")

        with pytest.raises(VigorServerError) as info:  # past auth: the token travelled
            asyncio.run(use())
        assert info.value.status == 422 and info.value.code == "weights_rejected"
        many = VigorReplicas([srv.url, srv.url], api_token="read-1", cooldown_s=9.0, retry=policy)
        twins = async_client(many)
        assert isinstance(twins, AsyncVigorReplicas) and twins.options() == many.options()
        assert twins.options()["cooldown_s"] == 9.0 and twins.options()["api_token"] == "read-1"
        with pytest.raises(ValueError, match="client_options"):
            async_client(sync, retry=2)
