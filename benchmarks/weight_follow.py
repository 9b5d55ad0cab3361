"""Seconds per training step for the server to follow the policy, through the trainer integrations.

    python benchmarks/weight_follow.py                  # 5 steps per path
    python benchmarks/weight_follow.py --steps 8 --output benchmarks/results/weight_follow_cpu.md

One `vigor-serve` process serves the default model (SmolLM2-135M-Instruct, float32) on
127.0.0.1; this process holds the same model as a trainer would and drives the integrations'
own code, one path after the other, each step at a new version:
- HTTP push: TRL's `VigorWeightSyncCallback.weights_for(step)` (the trainable parameters in
  256 MiB buckets, then one commit);
- Gloo transfer: the same callback with `distributed=True` (a Gloo group with the server; its
  first send forms the group, reported apart);
- verl checkpoint reload: `VigorCheckpointCallback.on_save` on `global_step_N/actor/huggingface`,
  written as verl writes it (fp32 `save_pretrained`; that write is verl's cost, reported apart).
Each step's weights differ a little (one parameter nudged), so the server never sees a repeat.
Per path: median and best seconds per step, wall-clock on the trainer's side until the server
serves the new version. Results are printed and written as markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from engine_speed import machine  # benchmarks/ is sys.path[0] when run as a script
from weights_throughput import TOKEN, start_server

RESULTS = Path(__file__).parent / "results"


def nudge(model, step: int) -> None:
    import torch

    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3 * step


def trl_steps(url: str, model, steps: range, distributed: bool) -> list[float]:
    from types import SimpleNamespace

    from vigor_client.integrations.trl import VigorWeightSyncCallback

    sync = VigorWeightSyncCallback(
        url, client_options={"admin_token": TOKEN}, distributed=distributed,
        push_on_train_begin=False,
    )  # fmt: skip
    state = SimpleNamespace(global_step=steps.start - 1)
    sync.on_train_begin(None, state, None, model=model)
    for step in steps:
        nudge(model, step)
        sync.weights_for(step)
    sync.on_train_end(None, state, None)
    assert sync.routes == (["gloo"] if distributed else ["http"]) * len(steps), sync.routes
    return [seconds for _, _, seconds in sync.synced]


def verl_steps(url: str, model, steps: range, root: Path) -> tuple[list[float], list[float]]:
    from omegaconf import OmegaConf

    from vigor_client.integrations.verl_checkpoint import VigorCheckpointCallback

    config = OmegaConf.create(
        {
            "trainer": {"save_freq": 1, "default_local_dir": str(root),
                        "vigor": {"server_url": url, "admin_token": TOKEN}},
            "actor_rollout_ref": {"actor": {"checkpoint": {"save_contents": ["hf_model"]}}},
        }
    )  # fmt: skip
    callback = VigorCheckpointCallback(config)
    writes = []
    for step in steps:
        nudge(model, step)
        step_dir = root / f"global_step_{step}"
        t0 = time.perf_counter()
        model.save_pretrained(step_dir / "actor" / "huggingface")  # fp32, as verl's FSDP saves
        writes.append(time.perf_counter() - t0)
        callback.on_save(trainer=None, global_step=step, checkpoint_dir=str(step_dir))
    return [seconds for _, _, seconds in callback.loaded], writes


def row(label: str, seconds: list[float], mb: float) -> str:
    median = statistics.median(seconds)
    return f"| {label} | {len(seconds)} | {median:.3f} | {min(seconds):.3f} | {mb / median:.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=RESULTS / "weight_follow_cpu.md")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    model_dir = prepare_default_model(args.cache_dir or default_cache_dir())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = {id(p): p for p in model.parameters()}.values()  # tied weights once
    mb = sum(p.numel() * p.element_size() for p in params) / 1e6
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    load_before = os.getloadavg()[0]
    n = args.steps
    proc, url = start_server(args.cache_dir)
    try:
        http = trl_steps(url, model, range(1, n + 1), distributed=False)
        gloo = trl_steps(url, model, range(n + 1, 2 * n + 2), distributed=True)
        join_and_first, gloo = gloo[0], gloo[1:]
        with tempfile.TemporaryDirectory() as tmp:
            reloads, writes = verl_steps(url, model, range(2 * n + 2, 3 * n + 2), Path(tmp))
    finally:
        proc.terminate()
        proc.wait(60)

    header = [
        "| path | steps | median s/step | best s/step | MB/s (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines = [
        "# Following the policy: seconds per training step, default model, CPU",
        "",
        f"Default model (SmolLM2-135M-Instruct, float32, {mb:.0f} MB of trainable weights), one "
        "`vigor-serve` process on 127.0.0.1, the trainer (this process) driving the "
        "integrations' own code; wall-clock on the trainer's side until the server serves the "
        "new version. The machine is shared with other engineers' jobs (2 cores): figures vary "
        "by ±20% between runs.",
        "",
        f"Command: `python benchmarks/weight_follow.py --steps {n}`",
        "",
        f"Machine: {machine()}. 1-minute load average before {load_before:.1f}, after "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "```",
        "$ lscpu | head",
        *lscpu,
        "```",
        "",
        "## HTTP push",
        "",
        "TRL `VigorWeightSyncCallback` (default), `weights_for(step)`: the trainable parameters "
        "in 256 MiB buckets over HTTP, then one commit.",
        "",
        *header,
        row("HTTP push (TRL callback)", http, mb),
        "",
        "## Gloo transfer",
        "",
        "TRL `VigorWeightSyncCallback(distributed=True)`: the same parameters broadcast over a "
        "Gloo group with the server (vLLM's start → update_weights → finish). The first send, "
        f"which also forms the group (once per run), took {join_and_first:.3f} s; not counted "
        "below.",
        "",
        *header,
        row("Gloo transfer (TRL callback)", gloo, mb),
        "",
        "## verl checkpoint reload",
        "",
        "`VigorCheckpointCallback.on_save`: the server reads `global_step_N/actor/huggingface` "
        "(fp32 safetensors, page cache warm) and swaps. Writing that directory is verl's own "
        f"save (`hf_model` in save_contents): median {statistics.median(writes):.3f} s here.",
        "",
        *header,
        row("verl reload (checkpoint callback)", reloads, mb),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
