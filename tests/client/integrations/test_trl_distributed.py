"""The TRL weight-sync callback sending over a Gloo process group, driven by a real GRPOTrainer.

A real `vigor-serve` process (tiny chat model, float64) and TRL 1.16's GRPOTrainer on CPU: the
callback joins the server into a Gloo group (vigor_client.distributed.WeightSender, vLLM's
four calls) and broadcasts the trainable parameters before each batch at new weights is scored.
Each call's samples are scored at version = step, and their scores equal those of a fresh server
started on that step's weights (one process, unsharded; NCCL needs GPUs). Then the fallback: a
group that cannot form (NCCL asked of a CPU server) is logged and the weights go over HTTP,
exactly. Last, real FSDP2 on two CPU processes: each holds half of every parameter; both gather
and process 0 sends, over HTTP and over Gloo.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vigor_client import VigorClient
from vigor_client.integrations.trl import VigorRewardFunction, vigor_for_trl

from ...naive import naive_grad_norm
from ...servers import ProcessServer

FSDP_SCRIPT = Path(__file__).with_name("fsdp_two_processes.py")


def served(model_dir, tmp_path, name: str) -> ProcessServer:
    server = ProcessServer("--model", str(model_dir), "--dtype", "float64", "--engine", "loop")
    return server.start(tmp_path / f"{name}.log")


def scored_as_sent(url: str, model, prompt, completion, step: int, rel: float) -> None:
    """The server scores at the step's version with the naive norm of the weights just sent."""
    with VigorClient(url) as client:
        res = client.score(
            [{"prompt_ids": prompt, "completion_ids": [completion]}],
            min_weight_version=step,
            wait_s=5.0,
        )
    assert res.weight_version == step
    want = naive_grad_norm(model, prompt, completion)
    assert res.groups[0].grad_norms[0] == pytest.approx(want, rel=rel)


@pytest.mark.slow
def test_grpo_trainer_sends_weights_over_gloo_and_each_step_scores_as_a_fresh_server(
    tiny_chat_model_dir, tmp_path
):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": f"Q: {a} + {a} = ? A:"} for a in range(2, 10)])
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=3,
        learning_rate=1e-2,
        beta=0.0,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )

    snapshots = {0: {k: v.detach().clone() for k, v in model.state_dict().items()}}

    class Snapshots(TrainerCallback):  # the weights after each optimizer step, for the check
        def on_step_end(self, args, state, control, model=None, **kw):
            snapshots[state.global_step] = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }

    server = served(tiny_chat_model_dir, tmp_path, "server")
    calls = []
    try:
        reward_fn, sync = vigor_for_trl(server.url, tokenizer=tokenizer, distributed=True)

        def vigor(prompts, completions, completion_ids, log_extra=None, **kw):
            extra = {}
            out = reward_fn(prompts, completions, completion_ids, log_extra=extra.__setitem__,
                            **kw)  # fmt: skip
            calls.append((prompts, completions, completion_ids, extra["vigor_score"], out))
            return out

        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[vigor],
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[sync, Snapshots()],
        )
        trainer.train()
    finally:
        server.stop()

    assert trainer.state.global_step == 3
    # Generations at steps 0, 1, 2: steps 1 and 2 went over the Gloo group before scoring.
    assert [(s, v) for s, v, _ in sync.synced] == [(1, 1), (2, 2)]
    assert sync.routes == ["gloo", "gloo"] and sync.group.fallback_reason is None
    assert [(c.step, c.weight_version) for c in reward_fn.calls] == [(0, 0), (1, 1), (2, 2)]
    moved = [
        max((snapshots[k][n] - snapshots[0][n]).abs().max().item() for n in snapshots[0])
        for k in (1, 2)
    ]
    assert min(moved) > 0  # the optimizer changed the weights that were sent

    for step, (prompts, completions, completion_ids, scores, rewards) in enumerate(calls):
        model.load_state_dict(snapshots[step])
        step_dir = tmp_path / f"step-{step}"
        model.save_pretrained(step_dir)
        tokenizer.save_pretrained(step_dir)
        fresh = served(step_dir, tmp_path, f"fresh-{step}")
        try:
            alone = VigorRewardFunction(fresh.url, tokenizer=tokenizer, pin_weights=False)
            extra = {}
            again = alone(prompts, completions, completion_ids, log_extra=extra.__setitem__)
        finally:
            fresh.stop()
        assert again == rewards
        assert extra["vigor_score"] == pytest.approx(scores, rel=1e-12)


@pytest.mark.slow
def test_a_group_that_cannot_form_is_logged_and_the_weights_go_over_http(
    tiny_checkpoint, tmp_path, caplog
):
    import torch
    from transformers import AutoModelForCausalLM

    from vigor_client.integrations.trl import VigorWeightSyncCallback

    prompt, completion = [1, 2, 3, 4], [5, 6, 7]
    server = served(tiny_checkpoint, tmp_path, "server")
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
        sync = VigorWeightSyncCallback(server.url, distributed={"backend": "nccl", "timeout_s": 20})
        state = SimpleNamespace(global_step=0, is_world_process_zero=True)
        sync.on_train_begin(None, state, None, model=model)
        torch.manual_seed(4)
        for step in (1, 2):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            with caplog.at_level(logging.WARNING):
                sync.weights_for(step)
            scored_as_sent(server.url, model, prompt, completion, step, rel=1e-9)
        assert sync.routes == ["http", "http"]
        assert "nccl" in sync.group.fallback_reason
        warned = [r for r in caplog.records if "could not form" in r.getMessage()]
        assert len(warned) == 1 and "over HTTP for the rest of this run" in warned[0].getMessage()
        sync.on_train_end(None, state, None)
    finally:
        server.stop()


@pytest.mark.slow
def test_fsdp2_sharded_parameters_are_gathered_on_both_processes_and_sent(
    tiny_checkpoint, tmp_path
):
    import torch
    from transformers import AutoModelForCausalLM

    server = served(tiny_checkpoint, tmp_path, "server")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        str(FSDP_SCRIPT), "--server", server.url, "--model", str(tiny_checkpoint),
        "--out", str(tmp_path),
    ]  # fmt: skip
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    assert [p["routes"] for p in first["phases"]] == [["http", "http"], ["gloo", "gloo"]]
    assert [p["synced"] for p in first["phases"]] == [[[1, 1], [2, 2]], [[3, 3], [4, 4]]]
    assert all(p["sharded"] == "FSDP2" and p["synced"] == [] for p in second["phases"])
    # The whole model, scaled as the shards were: what the server must have differentiated.
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    for step, version, grad_norm in [s for p in first["phases"] for s in p["scored"]]:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.1)
        assert version == step
        want = naive_grad_norm(model, [1, 2, 3, 4], [5, 6, 7])
        assert grad_norm == pytest.approx(want, rel=1e-9)


def test_a_group_lost_mid_run_sends_that_step_over_http_then_forms_a_new_one(caplog):
    import copy

    import torch

    from vigor_client.integrations.trl import VigorWeightSyncCallback

    from ...tiny_models import tiny_llama
    from ...weights.helpers import admin, tiny_server

    prompt, completion = [1, 2, 3], [4, 5, 6]
    model = tiny_llama(tied=True, dtype=torch.float32)
    with tiny_server(copy.deepcopy(model)) as srv:
        sync = VigorWeightSyncCallback(srv.url, distributed={"timeout_s": 20})
        state = SimpleNamespace(global_step=0)
        sync.on_train_begin(None, state, None, model=model)
        torch.manual_seed(5)
        for step in (1, 2, 3):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            if step == 2:  # the server leaves the group behind the trainer's back
                assert admin(srv.url, "POST", "/close_weight_transfer_engine").status_code == 200
            with caplog.at_level(logging.WARNING):
                sync.weights_for(step)
            scored_as_sent(srv.url, model, prompt, completion, step, rel=1e-4)  # float32 server
        sync.on_train_end(None, state, None)
    assert sync.routes == ["gloo", "http", "gloo"] and sync.group.fallback_reason is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("v2 over the process group failed" in m for m in warned)
