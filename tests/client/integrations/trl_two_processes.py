"""A real GRPOTrainer run on several processes, for test_trl_processes.py (run under torchrun).

    torchrun --nproc_per_node 2 trl_two_processes.py --server URL --model DIR --out DIR

Records, per process, into `<out>/rank<r>.json`: every generation's step, a checksum of the
weights that sampled it, TRL's gathered rewards and advantages (all processes' samples, in TRL's
order) and what each process's reward calls saw; process 0 adds every weight send with a
checksum of what it sent, and, for each generation, the rewards `/v1/rewards` gives the same
groups sent whole at the same weight version. The test compares these; this script checks
nothing itself.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path


def checksum(model) -> float:
    """Sum of |θ| over every trainable parameter, in float64: changes with any optimizer step."""
    import torch

    with torch.no_grad():
        return sum(
            float(p.detach().double().abs().sum()) for p in model.parameters() if p.requires_grad
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True, help="a checkpoint dir with its tokenizer")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps-per-generation", type=int, default=3)
    parser.add_argument("--num-iterations", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--asynchronous", action="store_true", help="the async reward function")
    args = parser.parse_args()

    import torch
    from accelerate.utils import gather, gather_object
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from vigor_client import VigorClient
    from vigor_client.integrations.trl import vigor_for_trl

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": f"Q: {a} + {a} = ? A:"} for a in range(2, 40)])
    out = Path(args.out)
    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=2,
        num_generations=4,  # 2 × steps_per_generation samples per process: groups span both
        steps_per_generation=args.steps_per_generation,
        num_iterations=args.num_iterations,
        max_completion_length=6,
        max_steps=args.max_steps,
        learning_rate=0.05,  # large, so that every optimizer step moves the checksum
        beta=0.0,
        use_cpu=True,
        ddp_backend="gloo",
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    # push_on_train_begin: process 0 sends the start weights as version 1, so the clock's offset
    # (1) is one that process 1 must learn from process 0.
    reward_fn, sync = vigor_for_trl(
        args.server,
        tokenizer=tokenizer,
        push_on_train_begin=True,
        asynchronous=args.asynchronous,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[sync],
    )
    rank = trainer.accelerator.process_index
    generations: list[dict] = []
    sent: list[dict] = []

    send = sync._send

    def recorded_send(m, step, version):
        sent.append({"step": step, "version": version, "checksum": checksum(m)})
        send(m, step, version)

    sync._send = recorded_send

    calculate = trainer._calculate_rewards

    def recorded_rewards(inputs, prompts, completions, completion_ids_list):
        gathered = calculate(inputs, prompts, completions, completion_ids_list)
        mine = {
            "prompts": list(prompts),
            "completion_ids": [[int(t) for t in c] for c in completion_ids_list],
        }
        everyone = gather_object([mine])  # one entry per process, in process order
        record = {
            "step": trainer.state.global_step,
            "checksum": checksum(trainer.model),
            "gathered_rewards": gathered[:, 0].tolist(),
            "prompts": [p for e in everyone for p in e["prompts"]],
            "completion_ids": [c for e in everyone for c in e["completion_ids"]],
        }
        if rank == 0:
            record["reference"] = reference(record, reward_fn.calls[-1].weight_version)
        generations.append(record)
        return gathered

    def reference(record: dict, version: int) -> dict:
        """The same groups sent whole to /v1/rewards, at the version the call was scored at."""
        g = config.num_generations
        groups = [
            {
                "prompt_ids": tokenizer(text=record["prompts"][k])["input_ids"],
                "completion_ids": record["completion_ids"][k : k + g],
            }
            for k in range(0, len(record["prompts"]), g)
        ]
        with VigorClient(args.server) as client:
            res = client.score(groups, min_weight_version=version)
        return {
            "weight_version": res.weight_version,
            "rewards": [r for grp in res.groups for r in grp.rewards],
        }

    trainer._calculate_rewards = recorded_rewards

    generate = trainer._generate_and_score_completions

    def recorded_advantages(inputs):
        batch = generate(inputs)
        generations[-1]["advantages"] = gather(batch["advantages"]).tolist()
        return batch

    trainer._generate_and_score_completions = recorded_advantages
    trainer.train()

    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "global_step": trainer.state.global_step,
        "offset": sync.clock.offset,
        "run_id": sync.run.run_id,
        "generations": generations,
        "calls": [asdict(c) for c in reward_fn.calls],
        "sent": sent,
        "synced": [list(s) for s in sync.synced],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
