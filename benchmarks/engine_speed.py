"""Speed and peak memory of the batched engine against the per-completion loop and two floors.

    python benchmarks/engine_speed.py --quick          # G=8 × T=1024 after a 200-token prompt
    python benchmarks/engine_speed.py                  # G=8 × T ∈ {128, 512, 1024, 2048}, P=200
    python benchmarks/engine_speed.py --configs 8x128 16x1024 --skip-loop-above 8000

The rows are the paper's workload: groups of G=8, a prompt of about 200 tokens, completions of
up to 2048 tokens (VIGOR's recipes go to 1024 for 3B and 3072 for 7B).

The floor is the same micro-batched forward + backward with respect to the input embeddings only
(frozen weights, completion-only lm_head) without any norm capture. The exact floor adds the
least norm work any exact method must do: per micro-batch and linear layer, the cheaper in FLOPs
of the ghost form (N²·(d_in + d_out)) and the direct form (N·d_in·d_out), measured by running
those GEMMs alone on random inputs of the real shapes (embeddings, norms and biases are left out:
their work is linear in N·d). Every measurement runs in a fresh subprocess on the default model:
one per engine for peak memory (its first full-size call), and interleaved rounds for time (warm
calls), so that a burst of load from elsewhere hits all engines alike. Results are printed and
written as markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ("floor", "gemms", "batched", "loop")
PROMPT = 200
TARGET = (8, PROMPT, 1024)  # G completions of T tokens after a P-token prompt
SWEEP = [(8, PROMPT, t) for t in (128, 512, 2048)]
RESULTS = Path(__file__).parent / "results"
DEFAULT_POLICY = (
    " (the server default on this device: the batched engine plans micro-batches under the"
    " loop's modelled peak memory, at most this many tokens; the floor packs greedily under it)"
)


def _rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _sequences(vocab: int, g: int, p: int, t: int, seed: int):
    import torch

    from vigor_service.engine.types import TokenSequence

    gen = torch.Generator().manual_seed(seed)
    prompt = tuple(torch.randint(3, vocab, (p,), generator=gen).tolist())
    # Somewhat ragged, like sampled rollouts: lengths in [3T/4, T], the longest exactly T.
    lengths = [t, *torch.randint(3 * t // 4, t + 1, (g - 1,), generator=gen).tolist()]
    return [
        TokenSequence(prompt, tuple(torch.randint(3, vocab, (n,), generator=gen).tolist()))
        for n in lengths
    ]


def _floor(model, sequences, max_batch_tokens):
    import torch

    from vigor_service.engine.microbatch import (
        build_batch,
        completion_head,
        completion_logits_and_loss,
        embeddings_require_grad,
        pack,
    )
    from vigor_service.engine.reference import only_these_require_grad

    device = next(model.parameters()).device
    ref = []
    with (
        only_these_require_grad(model, []),
        torch.enable_grad(),
        embeddings_require_grad(model),
        completion_head(model, ref) as hooked,
    ):
        for group in pack(sequences, max_batch_tokens):
            ref[:] = [build_batch([sequences[i] for i in group], device)]
            _, loss = completion_logits_and_loss(model, ref[0], hooked)
            loss.backward()
    return None


GEMM_INPUTS: dict = {}  # random operands by shape, made in the untimed warm-up call


def _operand(rows: int, n: int, d: int, dtype, device, slot: str):
    import torch

    key = (rows, n, d, dtype, str(device), slot)
    if key not in GEMM_INPUTS:
        GEMM_INPUTS[key] = torch.randn(rows, n, d, dtype=dtype, device=device)
    return GEMM_INPUTS[key]


def norm_gemms(model, sequences, max_batch_tokens) -> float:
    """The least exact norm work: per micro-batch and linear layer, the cheaper-in-FLOPs form alone.

    Ghost ⟨AAᵀ, BBᵀ⟩ when N·(d_in + d_out) < d_in·d_out, else the direct ‖BᵀA‖² through the
    engine's own chunked `direct_sq`; in the engine's accumulation dtype, on the padded length
    (the lm_head on the completion span). Returns the sum of the squares so nothing is skipped.
    """
    import torch
    from torch import nn

    from vigor_service.engine.microbatch import pack
    from vigor_service.engine.norms.linear import direct_sq
    from vigor_service.engine.signals import accumulation_dtype

    first = next(model.parameters())
    acc, device = accumulation_dtype(first.dtype), first.device
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if head is not None and not any(m is head for m in linears):
        linears.append(head)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for group in pack(sequences, max_batch_tokens):
        rows = len(group)
        length = max(sequences[i].length for i in group)
        span = max(sequences[i].num_tokens for i in group)
        for m in linears:
            d_in, d_out = m.weight.shape[1], m.weight.shape[0]
            n = span if m is head else length
            a = _operand(rows, n, d_in, acc, device, "a")
            b = _operand(rows, n, d_out, acc, device, "b")
            if n * (d_in + d_out) < d_in * d_out:
                sq = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(b, b.transpose(1, 2))).sum((1, 2))
            else:
                sq = direct_sq(a, b)
            total += sq.sum()
    return total.item()


def worker(args) -> None:
    import torch

    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.params import scored_parameters
    from vigor_service.engine.reference import ReferenceEngine
    from vigor_service.models.loader import load_model
    from vigor_service.settings import Settings, default_cache_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("default", cache_dir=default_cache_dir(), device=args.device, dtype="auto")
    model = loaded.model
    params = [p for _, p in scored_parameters(model)]
    vocab = model.config.vocab_size
    g, p, t = args.config
    seqs = _sequences(vocab, g, p, t, seed=0)
    budget = args.max_batch_tokens or Settings().batch_tokens_on(model.device.type)
    # As the server builds it: without --max-batch-tokens, micro-batches under the loop's memory.
    policy = "tokens" if args.max_batch_tokens else "loop"
    batched = BatchedEngine(budget, gradient_checkpointing=args.checkpointing, budget=policy)

    def run(sequences):
        if args.engine == "floor":
            return _floor(model, sequences, budget)
        if args.engine == "gemms":
            return norm_gemms(model, sequences, budget)
        engine = batched if args.engine == "batched" else ReferenceEngine()
        return [s.grad_norm for s in engine.score(model, params, sequences)]

    run(_sequences(vocab, 2, 8, 8, seed=1))  # warm-up: kernels
    cuda = model.device.type == "cuda"
    out = {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
    out["max_batch_tokens"] = budget
    out["tokens"] = sum(s.length for s in seqs)
    if args.measure == "memory":
        # The first full-size call: peak above the level right before it.
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _rss_reset()
            base = _status_kb("VmRSS") * 1024
        out["norms"] = run(seqs)
        top = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
        out["peak_bytes"] = top - base
        print("RESULT " + json.dumps(out))
        return
    run(seqs)  # warm, like a long-running server
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        run(seqs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    out |= {"seconds": min(times), "cpu_seconds": min(cpu_times)}
    print("RESULT " + json.dumps(out))


def _spawn(engine: str, config, args, measure: str) -> dict:
    g, p, t = config
    cmd = [sys.executable, __file__, "--worker", engine, "--config", f"{g}x{t}", "--prompt", str(p)]
    cmd += ["--measure", measure]
    cmd += ["--max-batch-tokens", str(args.max_batch_tokens), "--repeats", str(args.repeats)]
    cmd += ["--device", args.device, "--threads", str(args.threads)]
    cmd += ["--checkpointing"] if args.checkpointing else []
    env = dict(os.environ)
    if measure == "memory":
        # Every allocation from 64 KiB up gets its own mapping, returned on free: RSS then
        # follows live tensors instead of what glibc's heap keeps after fragmentation.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{engine} {config} failed:\n{proc.stderr[-3000:]}")


def measure(config, args) -> dict:
    """Peak memory and the fastest warm time of each engine on one config."""
    g, p, t = config
    engines = [
        e
        for e in ENGINES
        if not (e == "loop" and args.skip_loop_above and g * (p + t) > args.skip_loop_above)
    ]
    best = {}
    for engine in engines:
        if engine == "gemms":  # not an engine: its memory is its random operands
            best[engine] = {}
            continue
        best[engine] = _spawn(engine, config, args, "memory")
        print(f"G={g} P={p} T={t} {engine:8s} peak {_fmt_mb(best[engine]['peak_bytes'])} MiB")
    for _ in range(args.rounds):
        for engine in engines:
            r = _spawn(engine, config, args, "time")
            print(
                f"G={g} P={p} T={t} {engine:8s} {r['seconds']:8.2f} s wall "
                f"{r['cpu_seconds']:8.2f} s cpu",
                flush=True,
            )
            best[engine] = {**r, **best[engine]}
            for key in ("seconds", "cpu_seconds"):
                best[engine][key] = min(best[engine].get(key, math.inf), r[key])
    return best


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {cores} cores available, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}{gpu}"
    )


def _fmt_mb(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="G=8 × T=1024 only")
    ap.add_argument("--configs", nargs="*", help="GxT pairs, e.g. 8x128 16x1024")
    ap.add_argument("--prompt", type=int, default=PROMPT, help="prompt tokens")
    ap.add_argument(
        "--max-batch-tokens", type=int, default=0, help="0: the server's default for the device"
    )
    ap.add_argument("--checkpointing", action="store_true", help="batched engine checkpoints")
    ap.add_argument("--repeats", type=int, default=1, help="timed warm runs per process")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per engine, interleaved")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--skip-loop-above", type=int, default=0, help="skip the loop above N tokens")
    ap.add_argument("--output", type=Path, default=None, help="markdown file to write")
    ap.add_argument("--append", action="store_true", help="append to the markdown file")
    ap.add_argument("--title", default="Measurements", help="heading of this run's section")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--measure", choices=["memory", "time"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        g, t = map(int, args.config.split("x"))
        args.engine, args.config = args.worker, (g, args.prompt, t)
        worker(args)
        return

    if args.configs:
        configs = [(int(c.split("x")[0]), args.prompt, int(c.split("x")[1])) for c in args.configs]
    else:
        configs = [TARGET] if args.quick else sorted([TARGET, *SWEEP], key=lambda c: c[2])
    rows = [(config, measure(config, args)) for config in configs]
    text = report(rows, args)
    print(text)
    device = next(iter(rows[0][1].values()))["device"].split(":")[0]
    out = args.output or RESULTS / f"engine_speed_{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a" if args.append else "w") as f:
        f.write(text)
    print(f"written to {out}")


def report(rows, args) -> str:
    first = next(iter(rows[0][1].values()))
    lines = [
        f"## {args.title}",
        "",
        f"Machine: {machine()}.",
        f"Model: default SmolLM2-135M-Instruct, {first['dtype']} on {first['device']}; "
        f"max_batch_tokens={first['max_batch_tokens']}"
        f"{'' if args.max_batch_tokens else DEFAULT_POLICY}, "
        f"checkpointing={'on' if args.checkpointing else 'off'}, torch threads="
        f"{args.threads or 'default'}. Time: {args.rounds} interleaved round(s) of fresh "
        f"processes, each timing {args.repeats} warm call(s) after an untimed one; the fastest "
        "is kept (wall and CPU time separately). Peak memory: a separate process per engine, "
        "its first full-size call; peak RSS above the level right before it, with glibc's mmap "
        "threshold at 64 KiB so that RSS follows live tensors (CPU), or max_memory_allocated "
        "above the allocated level (CUDA).",
        "",
        "| G | P | T | tokens | floor s | exact floor s | batched s | loop s "
        "| batched / exact floor | batched / loop | batched / floor | batched tok/s "
        "| peak MiB floor / batched / loop | max rel diff vs loop |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (g, p, t), res in rows:
        fl, gm, ba, lo = res["floor"], res["gemms"], res["batched"], res.get("loop")
        # The exact floor: the floor plus the norm GEMMs alone, each at its best.
        ex = {k: fl[k] + gm[k] for k in ("seconds", "cpu_seconds")}

        def secs(r):
            return f"{r['seconds']:.2f} ({r['cpu_seconds']:.2f})" if r else "—"

        def ratio(a, b):
            if not (a and b):
                return "—"
            return (
                f"{a['seconds'] / b['seconds']:.2f}× ({a['cpu_seconds'] / b['cpu_seconds']:.2f}×)"
            )

        diff = "—"
        if lo:
            pairs = zip(ba["norms"], lo["norms"], strict=True)
            diff = f"{max(abs(a - b) / b for a, b in pairs):.1e}"
        peaks = " / ".join(_fmt_mb(r["peak_bytes"]) if r else "—" for r in (fl, ba, lo))
        lines.append(
            f"| {g} | {p} | {t} | {ba['tokens']} | {secs(fl)} | {secs(ex)} | {secs(ba)} "
            f"| {secs(lo)} | {ratio(ba, ex)} | {ratio(ba, lo)} | {ratio(ba, fl)} "
            f"| {ba['tokens'] / ba['seconds']:,.0f} | {peaks} | {diff} |"
        )
    lines += [
        "",
        "Times: wall seconds (process CPU seconds in parentheses); ratios likewise. Exact floor: "
        "floor + the norm GEMMs alone (both at their fastest); batched / exact floor is what "
        "the engine spends above the least exact work, batched / loop below 1 means faster.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
