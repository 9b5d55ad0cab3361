"""The weight-sync callback under real FSDP2 on two CPU processes, for test_trl_distributed.py.

    torchrun --nproc_per_node 2 fsdp_two_processes.py --server URL --model DIR --out DIR

Both processes shard the checkpoint's model with `fully_shard` over Gloo (each holds half of
every parameter, as DTensors) and call the callback as TRL's processes would: `on_train_begin`,
then `weights_for(step)` on every process after each change of the weights (every parameter
scaled by 1.1, on each process's shard). Phase A sends over HTTP (steps 1, 2), phase B over a
Gloo group with the server (steps 3, 4). After each send process 0 scores one group at that
version. Records go to `<out>/rank<r>.json`; the test checks them, this script checks nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

PROMPT, COMPLETION = [1, 2, 3, 4], [5, 6, 7]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    from vigor_client import VigorClient
    from vigor_client.integrations.trl import VigorWeightSyncCallback

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    record: dict = {"rank": rank, "phases": []}
    state = SimpleNamespace(global_step=0)
    for phase, distributed, steps in (("http", False, (1, 2)), ("gloo", True, (3, 4))):
        sync = VigorWeightSyncCallback(args.server, distributed=distributed)
        sync.on_train_begin(None, state, None, model=model)
        scored = []
        for step in steps:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.1)
            state.global_step = step
            sync.weights_for(step)
            if rank == 0:
                with VigorClient(args.server) as client:
                    res = client.score(
                        [{"prompt_ids": PROMPT, "completion_ids": [COMPLETION]}],
                        min_weight_version=step,
                        wait_s=5.0,
                    )
                scored.append([step, res.weight_version, res.groups[0].grad_norms[0]])
        sync.on_train_end(None, state, None)
        record["phases"].append(
            {
                "phase": phase,
                "sharded": sync._sharded,
                "synced": [[s, v] for s, v, _ in sync.synced],
                "routes": sync.routes,
                "scored": scored,
            }
        )
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
