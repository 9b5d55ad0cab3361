"""A real RL run: TRL's GRPOTrainer trains the default model on GSM8K questions with VIGOR rewards
from a running vigor-reward server, the policy's weights synced to it before each batch is scored.

    make serve                                          # terminal 1: the server, default model
    .venv/bin/python examples/trl_grpo_demo.py          # terminal 2: 4 steps, minutes on CPU

Writes to --output-dir: `demo_run.png` (redrawn after every step: mean reward and raw VIGOR score,
self-certainty, entropy, completion length, weight versions, time per step) and `demo_run.log`.
The integration itself is the two lines marked "the integration" below.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTRUCTION = "Solve the problem step by step, then give the final answer after '####'."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--server-url",
        default=os.environ.get("VIGOR_URL", "http://127.0.0.1:8000"),
        help="vigor-reward base URL; several, comma-separated, spread groups over replicas "
        "(env VIGOR_URL)",
    )
    p.add_argument("--output-dir", default="runs/trl_grpo_demo", help="plot, log, trainer output")
    p.add_argument(
        "--checkpoints-dir",
        default=None,
        help="save each step's weights here and have the server reload them from disk "
        "(it must see this path) instead of pushing them over HTTP",
    )
    p.add_argument("--steps", type=int, default=4, help="optimizer steps")
    p.add_argument(
        "--model",
        default=None,
        help="policy checkpoint directory (default: the server package's converted default "
        "model); the server must serve the same checkpoint",
    )
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--max-completion-length", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--push-on-start",
        action="store_true",
        help="send the policy's weights before the first step (needed when the server is not "
        "fresh on the same checkpoint); versions then run ahead of steps by the server's offset",
    )
    p.add_argument("--data", default=str(HERE / "data" / "gsm8k_subset.jsonl"))
    return p.parse_args(argv)


def default_model() -> str:
    try:
        from vigor_service.models.default_model import prepare_default_model
        from vigor_service.settings import default_cache_dir
    except ImportError:
        raise SystemExit("vigor_service is not installed: pass --model <checkpoint dir>") from None
    return str(prepare_default_model(default_cache_dir()))


def load_prompts(path: str, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    return [
        {"prompt": [{"role": "user", "content": f"{r['question']}\n{INSTRUCTION}"}]} for r in rows
    ]


# --- recording and plotting ---------------------------------------------------------------------
PANELS = [
    ("reward", "mean rank reward (left; 0 by construction) / raw VIGOR score"),
    ("self_certainty", "self-certainty (mean KL(U‖p))"),
    ("entropy", "mean token entropy (nats)"),
    ("length", "mean completion length (tokens)"),
    ("version", "weight version"),
    ("seconds", "seconds per step"),
]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, label) in zip(axes.flat, PANELS, strict=True):
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if key == "reward":
            ax.plot(steps, [r["reward"] for r in rows], "o-", color="tab:blue", label="rank")
            ax.set_ylim(-1.05, 1.05)
            twin = ax.twinx()
            twin.plot(steps, [r["score"] for r in rows], "s--", color="tab:red", label="score")
            twin.tick_params(axis="y", colors="tab:red")
            ax.legend(handles=[*ax.get_lines(), *twin.get_lines()], fontsize=8, loc="lower right")
        elif key == "version":
            ax.plot(steps, [r["scored_version"] for r in rows], "o-", label="scored at")
            ax.plot(steps, [r["served_version"] for r in rows], "s--", label="served after step")
            ax.legend(fontsize=8)
        elif key == "seconds":
            ax.plot(steps, [r["step_seconds"] for r in rows], "o-", label="whole step")
            ax.plot(steps, [r["score_seconds"] for r in rows], "s--", label="reward call")
            ax.plot(steps, [r["sync_seconds"] for r in rows], "^:", label="weight sync")
            ax.legend(fontsize=8)
        else:
            ax.plot(steps, [r[key] for r in rows], "o-")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path, png_path = out / "demo_run.log", out / "demo_run.png"
    log_file = log_path.open("w")

    def log(line: str) -> None:
        stamp = f"[{time.perf_counter() - started:7.1f}s] {line}"
        print(stamp, flush=True)
        log_file.write(stamp + "\n")
        log_file.flush()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from vigor_client.integrations.trl import vigor_for_trl

    model_dir = args.model or default_model()
    cuda = torch.cuda.is_available()
    log(f"command: {shlex.join([sys.executable, *sys.argv])}")
    log(f"policy: {model_dir} on {'cuda' if cuda else 'cpu'}; server: {args.server_url}")
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = Dataset.from_list(load_prompts(args.data, args.seed))
    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        temperature=args.temperature,
        beta=0.0,  # no reference model: VIGOR's recipe, and half the memory
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=args.seed,
    )

    # --- the integration: a reward function and a weight-sync callback ------------------------
    reward_fn, sync = vigor_for_trl(
        args.server_url,
        tokenizer=tokenizer,
        checkpoints_dir=args.checkpoints_dir,
        push_on_train_begin=args.push_on_start,
        num_generations=args.num_generations,
        signals=["entropy_mean", "self_certainty"],
    )

    info = sync.client.model_info()
    log(
        f"server: {info.model} ({info.device}, {info.dtype}, {info.engine}), "
        f"weight version {info.weight_version}"
    )
    rows: list[dict] = []

    class Recorder(TrainerCallback):
        step_started = time.perf_counter()

        def on_step_begin(self, args_, state, control, **kw):
            self.step_started = time.perf_counter()

        def on_log(self, args_, state, control, logs=None, **kw):
            logs = logs or {}
            if "vigor/weight_version" not in logs:
                return
            call = reward_fn.calls[-1]
            _, version, sync_s = sync.synced[-1] if sync.synced else (state.global_step, 0, 0)
            row = {
                "step": state.global_step,
                "reward": logs.get("rewards/vigor/mean", float("nan")),
                "score": logs.get("vigor/score_mean", float("nan")),
                "self_certainty": logs.get("vigor/self_certainty", float("nan")),
                "entropy": logs.get("vigor/entropy_mean", float("nan")),
                "length": logs.get("completions/mean_length", float("nan")),
                "scored_version": int(logs["vigor/weight_version"]),
                "served_version": version,
                "step_seconds": time.perf_counter() - self.step_started,
                "score_seconds": call.seconds,
                "sync_seconds": sync_s,
            }
            rows.append(row)
            log(
                f"step {row['step']}: {call.num_samples} completions in {call.num_groups} groups "
                f"scored at weights v{row['scored_version']} in {row['score_seconds']:.1f} s; "
                f"mean rank reward {row['reward']:+.3f}, raw VIGOR score {row['score']:.1f}, "
                f"self-certainty {row['self_certainty']:.3f}, entropy {row['entropy']:.3f}, "
                f"length {row['length']:.1f}; pushed weights v{version} in {sync_s:.1f} s; "
                f"step took {row['step_seconds']:.1f} s"
            )
            plot(rows, png_path, f"GRPO + VIGOR rewards from {info.model} ({len(rows)} steps)")

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward_fn],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[sync, Recorder()],
    )
    trainer.train()

    final = sync.client.model_info().weight_version
    stale = [c for c in reward_fn.calls if c.weight_version != c.required_version]
    log(
        f"done: {trainer.state.global_step} steps in {time.perf_counter() - started:.0f} s; "
        f"server at weight version {final}; {len(reward_fn.calls)} reward calls, "
        f"{len(stale)} scored on other weights than the ones that sampled them"
    )
    log(f"plot: {png_path}; log: {log_path}")
    log_file.close()
    return 0 if not stale else 1


if __name__ == "__main__":
    sys.exit(main())
