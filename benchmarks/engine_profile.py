"""Where the batched engine's time goes, against the floor and the per-completion loop.

    python benchmarks/engine_profile.py                 # the target config, G=8, P=70, T=128
    python benchmarks/engine_profile.py --config 16x64 --output benchmarks/results/x.md

One process, one model, the same sequences for all three; --repeats rounds of one warm call
of each, interleaved, the fastest kept (every call is printed too). The batched engine is split
by timers around its own pieces (torch runs synchronously on the CPU, so wall time inside a hook
is the hook's compute):

- forward: the model's forward at all positions plus the completion-only lm_head and loss;
- capture: the forward hooks (kept inputs, the activation Grams of the ghost form);
- backward: the model's backward with respect to its inputs only (weights frozen);
- norm rules: the backward hooks turning output gradients into per-sample squared norms.

The floor is the same forward and backward with no hooks; the loop also computes the
weight-gradient GEMMs, the full-vocabulary logits and the norm of the materialized gradient, so
loop / floor bounds the speed-up any exact engine built on this backward can reach here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine_speed import TARGET, _floor, _sequences, machine  # noqa: E402

import vigor_service.engine.batched as batched_module  # noqa: E402
from vigor_service.engine.batched import BatchedEngine  # noqa: E402
from vigor_service.engine.norms.capture import NormCapture  # noqa: E402
from vigor_service.engine.params import scored_parameters  # noqa: E402
from vigor_service.engine.reference import ReferenceEngine  # noqa: E402
from vigor_service.models.loader import load_model  # noqa: E402
from vigor_service.settings import Settings, default_cache_dir  # noqa: E402


class Timers:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed


@contextlib.contextmanager
def instrumented(timers: Timers):
    """Timers around the batched engine's forward, capture hooks and norm rules."""
    saved = (
        batched_module.completion_logits_and_loss,
        batched_module.chunked_loss,
        NormCapture.forward_hook,
        NormCapture._on_grad,
    )
    # A micro-batch runs its head unchunked or chunked (the planner decides): either is "forward".
    batched_module.completion_logits_and_loss = timers.wrap("forward", saved[0])
    batched_module.chunked_loss = timers.wrap("forward", saved[1])
    NormCapture.forward_hook = timers.wrap("capture", saved[2])
    NormCapture._on_grad = timers.wrap("norm rules", saved[3])
    try:
        yield
    finally:
        (
            batched_module.completion_logits_and_loss,
            batched_module.chunked_loss,
            NormCapture.forward_hook,
            NormCapture._on_grad,
        ) = saved


def timed_once(fn) -> tuple[float, dict[str, float]]:
    timers = Timers()
    with instrumented(timers):
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    return total, dict(timers.totals)


def interleaved(repeats: int, runs: dict) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Every engine once per round, round after round: a slow spell on a shared machine lands
    on all of them alike instead of on whichever ran then."""
    calls: dict[str, list] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            calls[name].append(timed_once(fn))
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default=f"{TARGET[0]}x{TARGET[2]}", help="GxT")
    ap.add_argument("--prompt", type=int, default=TARGET[1])
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="0: the server default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=None, help="markdown file to append to")
    args = ap.parse_args()
    g, t = map(int, args.config.split("x"))

    loaded = load_model("default", cache_dir=default_cache_dir(), device="auto", dtype="auto")
    model = loaded.model
    if model.device.type != "cpu":
        raise SystemExit("the timers assume synchronous execution: run this on the CPU")
    params = [p for _, p in scored_parameters(model)]
    budget = args.max_batch_tokens or Settings().batch_tokens_on(model.device.type)
    seqs = _sequences(model.config.vocab_size, g, args.prompt, t, seed=0)
    # As the server builds it: without --max-batch-tokens, micro-batches under the loop's memory.
    engine = BatchedEngine(budget, budget="tokens" if args.max_batch_tokens else "loop")

    runs = {
        "batched": lambda: engine.score(model, params, seqs),
        "floor": lambda: _floor(model, seqs, budget),
        "loop": lambda: ReferenceEngine().score(model, params, seqs),
    }
    for run in runs.values():
        run()  # warm
    calls = interleaved(args.repeats, runs)
    timed = {name: min(c, key=lambda x: x[0]) for name, c in calls.items()}
    rounds = [" / ".join(f"{calls[n][r][0]:.2f}" for n in runs) for r in range(args.repeats)]
    per_round_ratio = [calls["batched"][r][0] / calls["loop"][r][0] for r in range(args.repeats)]

    total, parts = timed["batched"]
    fwd, cap, rules = parts["forward"], parts["capture"], parts["norm rules"]
    rows = [
        ("forward (model + completion-only lm_head + loss)", fwd - cap),
        ("capture hooks in the forward (kept inputs, activation Grams)", cap),
        ("backward w.r.t. inputs (model, weights frozen)", total - fwd - rules),
        ("norm rules in the backward hooks", rules),
    ]
    floor, loop = timed["floor"][0], timed["loop"][0]
    tokens = sum(s.length for s in seqs)
    lines = [
        f"## Where the time goes: G={g}, P={args.prompt}, T={t} ({tokens} tokens)",
        "",
        f"Machine: {machine()}. Default model, {str(model.dtype).removeprefix('torch.')} on "
        f"{model.device}, max_batch_tokens={budget}; fastest of {args.repeats} warm calls each, "
        "interleaved, one process. Command: `python benchmarks/engine_profile.py "
        f"--config {args.config} --prompt {args.prompt}`.",
        "",
        "| batched engine, part | seconds | share |",
        "|---|---|---|",
        *(f"| {name} | {sec:.2f} | {sec / total:.0%} |" for name, sec in rows),
        f"| **total** | **{total:.2f}** | |",
        "",
        "| engine | seconds | vs floor |",
        "|---|---|---|",
        f"| floor (same forward + backward, no hooks) | {floor:.2f} | 1.00× |",
        f"| batched | {total:.2f} | {total / floor:.2f}× |",
        f"| loop (reference) | {loop:.2f} | {loop / floor:.2f}× |",
        "",
        f"loop / batched = {loop / total:.2f}×; loop / floor = {loop / floor:.2f}× is the most "
        "any exact engine built on this forward and input backward could reach here.",
        "",
        f"Every call, round by round ({' / '.join(runs)} s): " + "; ".join(rounds) + ". "
        "Batched / loop per round: " + ", ".join(f"{x:.3f}" for x in per_round_ratio) + ".",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        with args.output.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
