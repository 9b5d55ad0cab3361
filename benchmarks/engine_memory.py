"""Peak memory of the batched engine, chunked and unchunked lm_head, against the loop.

    python benchmarks/engine_memory.py --configs 8x128 8x512 \
        --output benchmarks/results/engine_memory_cpu.md

Each figure is one fresh process on the default model: a small warm-up call, then the first
full-size call, whose peak RSS above the level right before it is reported (VmHWM after a reset
through /proc/self/clear_refs, glibc's mmap threshold at 64 KiB so that RSS follows live tensors),
or max_memory_allocated on CUDA. RSS does not depend on the machine's load; time is not measured
here (benchmarks/engine_speed.py does that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# name → BatchedEngine head_chunk_elements (None: the loop).
VARIANTS = {"loop": None, "batched unchunked": 0, "batched chunked": -1}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(args) -> None:
    import torch

    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.head import DEFAULT_CHUNK_ELEMENTS
    from vigor_service.engine.params import scored_parameters
    from vigor_service.engine.reference import ReferenceEngine
    from vigor_service.engine.types import TokenSequence
    from vigor_service.models.loader import load_model
    from vigor_service.settings import Settings, default_cache_dir

    model = load_model(
        "default", cache_dir=default_cache_dir(), device=args.device, dtype="auto"
    ).model
    params = [p for _, p in scored_parameters(model)]
    g, t = (int(x) for x in args.config.split("x"))
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompt = tuple(torch.randint(3, vocab, (args.prompt,), generator=gen).tolist())
    # Ragged like sampled rollouts: lengths in [3T/4, T], the longest exactly T.
    lengths = [t, *torch.randint(3 * t // 4, t + 1, (g - 1,), generator=gen).tolist()]
    seqs = [
        TokenSequence(prompt, tuple(torch.randint(3, vocab, (n,), generator=gen).tolist()))
        for n in lengths
    ]
    budget = Settings().batch_tokens_on(model.device.type)
    chunk = VARIANTS[args.variant]
    if chunk is None:
        engine = ReferenceEngine()
    else:
        engine = BatchedEngine(
            budget, head_chunk_elements=DEFAULT_CHUNK_ELEMENTS if chunk < 0 else 0
        )
    engine.score(model, params, [TokenSequence((5, 6, 7), (8, 9))] * 2)  # warm-up
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        base = _status_kb("VmRSS") * 1024
    norms = [s.grad_norm for s in engine.score(model, params, seqs)]
    top = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
    out = {"peak_bytes": top - base, "norms": norms, "budget": budget, "dtype": str(model.dtype)}
    print("RESULT " + json.dumps(out))


def _spawn(variant: str, config: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--config", config]
    cmd += ["--prompt", str(args.prompt), "--device", args.device]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{variant} {config} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["8x128", "8x512"], help="GxT pairs")
    ap.add_argument("--prompt", type=int, default=70, help="prompt tokens")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--output", type=Path, default=None, help="markdown file to write")
    ap.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.variant = args.worker
        worker(args)
        return
    rows = []
    for config in args.configs:
        got = {v: _spawn(v, config, args) for v in VARIANTS}
        ref = got["loop"]["norms"]
        diff = max(
            abs(a - b) / b
            for v in VARIANTS
            if v != "loop"
            for a, b in zip(got[v]["norms"], ref, strict=True)
        )
        mib = {v: got[v]["peak_bytes"] / 2**20 for v in VARIANTS}
        print(config, {v: f"{m:,.0f} MiB" for v, m in mib.items()}, f"max rel diff {diff:.1e}")
        rows.append(
            f"| {config} | {args.prompt} | {got['loop']['budget']} | {mib['loop']:,.0f} "
            f"| {mib['batched unchunked']:,.0f} | {mib['batched chunked']:,.0f} "
            f"| {mib['batched chunked'] / mib['loop']:.2f} | {diff:.1e} |"
        )
    if args.output:
        header = (
            "| G×T | prompt | batch tokens | loop MiB | batched unchunked MiB "
            "| batched chunked MiB "
            "| chunked / loop | max rel diff vs loop |\n|---|---|---|---|---|---|---|---|\n"
        )
        args.output.write_text(header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
