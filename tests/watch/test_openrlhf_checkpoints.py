"""OpenRLHF by configuration alone: `--ckpt.save_steps 1 --ckpt.save_hf --ckpt.disable_ds
--ckpt.path DIR` and a server started with `--watch-dir DIR`.

OpenRLHF 0.11.2's own checkpoint code (openrlhf_cpu.py says which part, and what stands in for
CUDA) writes `global_step{k}_hf` next to a running `vigor-serve`; then, as in sync mode, the
samples of the next rollout are scored through OpenRLHF's own reward client
(`SingleTurnAgentExecutor`, as tests/api/test_openrlhf_executor.py does). They must be scored at
version k, with no wait for a poll, and equal what a fresh server started on step k's
directory gives.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ..api.test_openrlhf_executor import (
    N,
    check_whole_group_rewards,
    run_executors,
    whole_group_answers,
)
from ..servers import ProcessServer, free_port
from .openrlhf_cpu import openrlhf_writer, save_hf_checkpoint, their_naming_is_what_we_follow
from .test_watcher import metric, model_info

pytestmark = pytest.mark.slow


@pytest.fixture
def gloo_group():
    """A real one-process Gloo group: their save_model ends on a barrier."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def optimizer_step(actor, step: int) -> None:
    """Stands in for a PPO update: every weight moves (bf16, as OpenRLHF's actor holds them)."""
    gen = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_((0.02 * torch.randn(p.shape, generator=gen)).to(p.dtype))


def test_each_step_openrlhf_saves_is_what_the_next_rollout_is_scored_with(
    tiny_chat_model_dir,
    default_tokenizer,
    rollout,
    tmp_path,
    gloo_group,
):
    their_naming_is_what_we_follow()
    strategy, Actor = openrlhf_writer()
    actor = Actor(str(tiny_chat_model_dir), attn_implementation="sdpa", param_dtype="bf16")
    assert next(actor.parameters()).dtype == torch.bfloat16
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    server = ProcessServer(
        "--model", str(tiny_chat_model_dir), "--dtype", "float64",
        "--allowed-weights-dir", str(tmp_path), "--watch-dir", str(ckpt),
        "--watch-interval-s", "30",  # no poll in time: the scoring calls find the steps
    )  # fmt: skip
    server.start(tmp_path / "server.log")
    try:
        url = f"{server.url}/get_reward?group_size={N}"
        outputs = run_executors(url, default_tokenizer, rollout, lambda g, j: 0.01 * j)
        assert {o["extra_logs"]["vigor_weight_version"][0] for o in outputs} == {0.0}
        for step in (1, 2):
            optimizer_step(actor, step)
            path = save_hf_checkpoint(strategy, actor, default_tokenizer, ckpt, step)
            assert path.name == f"global_step{step}_hf"
            outputs = run_executors(url, default_tokenizer, rollout, lambda g, j: 0.01 * j)
            versions = {o["extra_logs"]["vigor_weight_version"][0] for o in outputs}
            assert versions == {float(step)}, server.log()
            assert all(o["reward"] is not None for o in outputs)
            fresh = ProcessServer("--model", str(path), "--dtype", "float64")
            fresh.start(tmp_path / f"fresh{step}.log")
            try:
                want = whole_group_answers(fresh.url, rollout)
            finally:
                fresh.stop()
            check_whole_group_rewards(outputs, rollout, want)
        info = model_info(server.url)
        assert info["weight_version"] == 2 and info["watch"]["loaded_step"] == 2
        assert info["watch"]["failures"] == 0
        assert metric(server.url, "vigor_watch_loads_total") == 2
    finally:
        server.stop()
