"""The TRL integration on two processes: a real GRPOTrainer under torchrun (gloo, CPU) against a
real server, with groups that span the processes; then the pieces of that layout on their own,
and the refusal of a sharded LoRA adapter (real FSDP2 on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigor_client.integrations.trl import GroupIncompleteError, TrainerRun, VigorRewardFunction
from vigor_client.integrations.trl import request as trl_request
from vigor_client.integrations.trl.pieces import plan_pieces

from ...servers import ProcessServer

SCRIPT = Path(__file__).with_name("trl_two_processes.py")
G = 4  # num_generations in the script
# (steps_per_generation, num_iterations, asynchronous): 2 × 3 samples per process, so group 1 of
# 3 spans both processes and the others do not; then 2 × 1, every group split in two halves.
LAYOUTS = {"spg3-sync": (3, 1, False), "iter2-async": (1, 2, True)}
MAX_STEPS = 6


@pytest.fixture(scope="module")
def tokenizer_model(tiny_chat_model_dir):
    return tiny_chat_model_dir


@pytest.fixture(scope="module")
def server(tokenizer_model, tmp_path_factory):
    server = ProcessServer("--model", str(tokenizer_model), "--engine", "loop")
    server.start(tmp_path_factory.mktemp("trl-2proc-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=list(LAYOUTS))
def two_process_run(request, server, tokenizer_model, tmp_path_factory):
    """Both processes' records of one `torchrun --nproc_per_node 2` training run."""
    spg, iterations, asynchronous = LAYOUTS[request.param]
    tmp = tmp_path_factory.mktemp("trl-2proc")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        str(SCRIPT), "--server", server.url, "--model", str(tokenizer_model), "--out", str(tmp),
        "--steps-per-generation", str(spg), "--num-iterations", str(iterations),
        "--max-steps", str(MAX_STEPS), *(["--asynchronous"] if asynchronous else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    print(f"two-process GRPO run {request.param}: {took:.1f} s (torchrun start included)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]
    return records, spg * iterations  # optimizer steps per generation (one micro-step each)


@pytest.mark.slow
def test_two_processes_rank_whole_groups_at_the_sampling_weights(two_process_run):
    import torch

    (first, second), every = two_process_run
    assert [r["world_size"] for r in (first, second)] == [2, 2]
    assert first["distributed_type"] == "DistributedType.MULTI_CPU"
    # One clock and one run key everywhere: the offset process 0 set (it sent the start weights
    # as version served + 1 at step 0: 1 on a fresh server) reached process 1.
    offset = first["offset"]
    assert offset >= 1 and second["offset"] == offset
    assert first["sent"][0]["version"] == offset
    assert first["run_id"] == second["run_id"] is not None
    gens = first["generations"]
    steps = list(range(0, MAX_STEPS, every))  # TRL generates every spg × num_iterations steps
    assert [g["step"] for g in gens] == [g["step"] for g in second["generations"]] == steps
    for mine, theirs in zip(gens, second["generations"], strict=True):
        assert mine["gathered_rewards"] == theirs["gathered_rewards"]
        assert mine["checksum"] == theirs["checksum"]  # DDP: the same weights sampled both halves

    for gen in gens:
        # TRL's gathered rewards (every process's samples): each equals the rank /v1/rewards
        # gives the same groups sent whole, at the same weight version.
        ref = gen["reference"]
        assert gen["gathered_rewards"] == pytest.approx(ref["rewards"], abs=1e-6)  # float32 in TRL
        for k in range(0, len(ref["rewards"]), G):  # whole-group ranks of 4, not halves' ±1
            assert sorted(ref["rewards"][k : k + G]) == pytest.approx([-1, -1 / 3, 1 / 3, 1])
        # ... and TRL's advantages are those ranks normalized within the whole group.
        r = torch.tensor(ref["rewards"], dtype=torch.float64).view(-1, G)
        want = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
        assert gen["advantages"] == pytest.approx(want.flatten().tolist(), rel=1e-5)

    # Every call on both processes held a piece of a group and was scored at the version of the
    # weights that sampled it: the send with that version carried the generation's checksum.
    sent = {s["version"]: s["checksum"] for s in first["sent"]}
    for rank in (first, second):
        assert [c["number"] for c in rank["calls"]] == list(range(1, len(steps) + 1))
        for call, gen in zip(rank["calls"], gens, strict=True):
            assert call["held"] and call["error"] is None and call["rank"] == rank["rank"]
            assert call["step"] == gen["step"]
            assert call["required_version"] == call["step"] + offset == call["weight_version"]
            assert sent[call["weight_version"]] == pytest.approx(gen["checksum"], rel=1e-12)
            assert gen["reference"]["weight_version"] == call["weight_version"]

    # Pushes: the start weights, then one per generation that used new weights, not one per
    # optimizer step: the steps in between sampled nothing.
    want = [(s, s + offset) for s in steps]
    assert [(s, v) for s, v, _ in first["synced"]] == want and len(want) < MAX_STEPS
    assert second["synced"] == [] and second["sent"] == []
    assert first["global_step"] == MAX_STEPS


@pytest.mark.slow
def test_a_group_whose_other_piece_never_comes_is_refused(server, default_tokenizer, monkeypatch):
    """Process 0 of 2 alone: the other process never calls (the layout is patched, since one
    test process cannot be two; the two-process run above is the real one)."""
    monkeypatch.setattr(trl_request, "process_layout", lambda: (0, 2))
    prompts, ids = ["Q: 1?"] * 4 + ["Q: 2?"] * 2, [[5, 6], [7], [8, 9], [10], [11], [12]]
    alone = VigorRewardFunction(server.url, tokenizer=default_tokenizer, pin_weights=False)
    with pytest.raises(ValueError, match="before the weight-sync callback's on_train_begin"):
        alone(prompts, [""] * 6, ids)
    run = TrainerRun(run_id="lonely", agreed=True, num_generations=4)
    fn = VigorRewardFunction(
        server.url, tokenizer=default_tokenizer, run=run, pin_weights=False, hold_s=0.5
    )
    with pytest.raises(GroupIncompleteError, match=r"'lonely/vigor/1/1'.* 2 of its 4 samples"):
        fn(prompts, [""] * 6, ids)
    assert fn.calls[-1].held and "GroupIncompleteError" in fn.calls[-1].error
    fn.on_error = "none"
    assert fn(prompts, [""] * 6, ids) == [None] * 6  # logged at ERROR, never a made-up 0


def test_pieces_of_groups_that_span_processes():
    keys = ["a"] * 4 + ["b"] * 2  # process 0 of 2: group 0 whole, the first half of group 1
    first = plan_pieces(keys, 4, rank=0, world_size=2)
    assert [(p.group, p.samples, p.positions, p.whole) for p in first] == [
        (0, [0, 1, 2, 3], [0, 1, 2, 3], True),
        (1, [4, 5], [0, 1], False),
    ]
    second = plan_pieces(["b"] * 2 + ["c"] * 4, 4, rank=1, world_size=2)
    assert [(p.group, p.samples, p.positions) for p in second] == [
        (1, [0, 1], [2, 3]),
        (2, [2, 3, 4, 5], [0, 1, 2, 3]),
    ]
    with pytest.raises(ValueError, match=r"2 process.* × 3 samples = 6 do not split"):
        plan_pieces(["a"] * 3, 4, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"samples 4\.\.5 of process 0 should share one prompt"):
        plan_pieces(["a"] * 4 + ["b", "c"], 4, rank=0, world_size=2)


@pytest.mark.slow
def test_an_fsdp_sharded_lora_adapter_is_refused_naming_the_fix(tmp_path):
    # Sharded full models are gathered and sent (test_trl_distributed.py); a sharded adapter
    # is not gathered, so it is refused rather than sent as a shard.
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from vigor_client.integrations.trl import VigorWeightSyncCallback

    from ...tiny_models import tiny_llama

    sync = VigorWeightSyncCallback("http://127.0.0.1:9")  # refused before any request
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = get_peft_model(
            tiny_llama(dtype=torch.float32), LoraConfig(r=2, target_modules=["q_proj"])
        )
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))  # parameters become DTensors
        state = type("State", (), {"global_step": 0})()
        with pytest.raises(NotImplementedError, match=r"FSDP2-sharded LoRA adapter.*Fix: train"):
            sync.on_train_begin(None, state, None, model=model)
    finally:
        dist.destroy_process_group()
    assert sync.synced == [] and not sync.run.agreed
