"""The GPU check in one command: exactness, speed, memory and weight transfer at Qwen2.5 shapes.

    python benchmarks/gpu_check.py --output gpu_check.md      # a CUDA machine, under 8 minutes
    python benchmarks/gpu_check.py --tiny --output /tmp/x.md  # CPU, tiny configs (what CI runs)

On a lent device machine (bare: Python 3.12, PyTorch with CUDA and transformers, but no fastapi,
uvicorn or pydantic, and no network), prepare the wheels here once with `make gpu-wheels` (the
project and the server dependencies that image lacks, into .whl/, about 3.5 MB), carry `.whl`,
and run from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; \\
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --output $OUT/gpu_check.md

Models have random weights built from the configs of Qwen2.5-0.5B, 1.5B and 7B (speed does not
need trained weights, and 94 MB of the default model cannot be carried). Parts, each in its own
process stopped at its own time bound (a stopped part keeps the rows it finished):

- exact: batched vs the loop (the engine's own reference path) in float32 and bfloat16, both
  against the loop in float64 on the same device;
- speed: floor, exact floor, batched and loop time and peak memory at G=8 × T ∈ {1024, 3072}
  after a 200-token prompt, 1.5B and 7B shapes, bfloat16 (engine_speed.py's pieces);
- transfer: HTTP push and Gloo transfer of the 0.5B shape to a real `vigor-serve` on the same
  machine (weights_transfer.py's pieces), NCCL too where a second GPU can hold the server.

One markdown file is written, also when a part fails or is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_speed import GEMM_INPUTS, _floor, _sequences, machine, norm_gemms

VOCAB = 151936
# Qwen2.5 shapes (their config.json files): hidden, intermediate, layers, heads, kv heads, tied.
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}  # fmt: skip
# The same structure, small enough for CI on two CPU cores.
TINY = {
    "tiny-tied": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "tiny-untied": dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
}  # fmt: skip
TINY_VOCAB = 512


class Plan:
    """What each part runs: the real shapes on CUDA, or tiny ones (--tiny)."""

    def __init__(self, tiny: bool):
        self.tiny = tiny
        self.shapes = TINY if tiny else QWEN25
        self.vocab = TINY_VOCAB if tiny else VOCAB
        self.exact_shape = "tiny-tied" if tiny else "0.5B"
        self.exact = (8, 6, 12) if tiny else (8, 64, 128)  # G, P, T
        self.speed_shapes = list(TINY) if tiny else ["1.5B", "7B"]
        self.speed = [(4, 4, t) for t in (8, 24)] if tiny else [(8, 200, t) for t in (1024, 3072)]
        self.transfer_shape = "tiny-tied" if tiny else "0.5B"
        # On a GPU: 7.25 minutes in all, under the 8 a lent machine's check may take. Tiny runs
        # take about a minute, but CI machines are shared: their bounds only catch a hang.
        self.bounds = {"exact": 75, "speed": 240, "transfer": 120}
        if tiny:
            self.bounds = {"exact": 300, "speed": 300, "transfer": 300}


def build_model(plan: Plan, shape: str, dtype, device, *, perturb: bool = False):
    """A random-weight Qwen2 causal LM of the named shape, made directly on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=plan.vocab,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        attn_implementation="sdpa",
        **plan.shapes[shape],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if perturb:  # norm weights are exactly 1 and biases 0 at init: make every family count
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def emit(**row) -> None:
    print("ROW " + json.dumps(row), flush=True)


def part_exact(plan: Plan, device) -> None:
    import torch

    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.reference import ReferenceEngine
    from vigor_service.settings import Settings

    g, p, t = plan.exact
    seqs = _sequences(plan.vocab, g, p, t, seed=0)
    budget = Settings().batch_tokens_on(device.type)
    model = build_model(plan, plan.exact_shape, torch.float64, device, perturb=True)

    def norms(engine, m):
        return [s.grad_norm for s in engine.score(m, list(m.parameters()), seqs)]

    truth = norms(ReferenceEngine(), model)  # the loop in float64: the yardstick of both
    del model
    for dtype in (torch.float32, torch.bfloat16):
        # The same weights, rounded (built afresh: Module.to converts in place).
        m = build_model(plan, plan.exact_shape, torch.float64, device, perturb=True).to(dtype)
        batched = norms(BatchedEngine(budget, budget="loop"), m)  # the server's default plan
        loop = norms(ReferenceEngine(), m)
        emit(
            part="exact",
            shape=plan.exact_shape,
            dtype=str(dtype).removeprefix("torch."),
            G=g,
            P=p,
            T=t,
            batched_vs_loop=_max_rel(batched, loop),
            batched_vs_f64=_max_rel(batched, truth),
            loop_vs_f64=_max_rel(loop, truth),
            pairs_batched=_pairs_agree(batched, truth),
            pairs_loop=_pairs_agree(loop, truth),
        )
        del m


def _max_rel(a, b) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def _pairs_agree(a, b) -> float:
    """Fraction of pairs inside the group that `a` orders as `b` does."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    return sum((a[i] < a[j]) == (b[i] < b[j]) for i, j in pairs) / len(pairs)


def part_speed(plan: Plan, device) -> None:
    import torch

    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.reference import ReferenceEngine
    from vigor_service.settings import Settings

    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    budget = Settings().batch_tokens_on(device.type)
    engines = {
        "floor": lambda m, s: _floor(m, s, budget),
        "gemms": lambda m, s: norm_gemms(m, s, budget),
        # The server's default: micro-batches under the loop's memory (measured at the warm call).
        "batched": lambda m, s: BatchedEngine(budget, budget="loop").score(
            m, list(m.parameters()), s
        ),
        "loop": lambda m, s: ReferenceEngine().score(m, list(m.parameters()), s),
    }
    for shape in plan.speed_shapes:
        start = time.perf_counter()
        model = build_model(plan, shape, dtype, device)
        built = time.perf_counter() - start
        warm = _sequences(plan.vocab, 2, 8, 8, seed=1)
        for g, p, t in plan.speed:
            seqs = _sequences(plan.vocab, g, p, t, seed=0)
            for name, run in engines.items():
                GEMM_INPUTS.clear()  # the operands of the last row's shapes
                row = dict(part="speed", shape=shape, dtype=str(dtype).removeprefix("torch."))
                row |= dict(G=g, P=p, T=t, engine=name, budget=budget, build_s=built)
                try:
                    row |= _timed_with_peak(run, model, seqs, warm, cuda)
                except torch.cuda.OutOfMemoryError as exc:
                    row["error"] = f"out of memory: {str(exc).splitlines()[0][:160]}"
                emit(**row)
                if cuda:
                    torch.cuda.empty_cache()
        del model


def _timed_with_peak(run, model, seqs, warm, cuda: bool) -> dict:
    """Seconds and peak memory (above the level before it) of one full call after a small one.

    One full call, not two: the 7B rows must fit the part's bound. The small call has paid
    for kernel selection and library start-up; what the full one may add is the caching
    allocator's first cudaMalloc of its sizes, milliseconds against seconds.
    """
    import torch

    run(model, warm)
    out = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    run(model, seqs)
    if cuda:
        torch.cuda.synchronize()
        out["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    out["seconds"] = time.perf_counter() - start
    return out


def part_transfer(plan: Plan, device) -> None:
    import torch
    from weights_throughput import TOKEN, start_server, timed

    from vigor_client import VigorClient
    from vigor_client.distributed import WeightSender

    model = build_model(plan, plan.transfer_shape, torch.bfloat16, "cpu")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    bucket = 256 << 20
    group = [{"prompt_ids": [1, 2, 3, 4], "completion_ids": [[5, 6, 7], [8, 9]]}]

    def next_version(on: str = "cpu") -> dict:
        # 1 % up: above bfloat16's spacing, so a path that delivered nothing shows in the scores.
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        state = {k: v.detach().to(on).contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied to the embedding: sent once
        return state

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        # NCCL cannot put two ranks on one GPU: with two, the server takes the second.
        env = {"CUDA_VISIBLE_DEVICES": "1" if gpus >= 2 else "0"} if gpus else {}
        extra = ["--model", tmp, "--dtype", "bfloat16", "--device", device.type]
        proc, url = start_server(None, extra, env)
        try:
            with VigorClient(url, admin_token=TOKEN, timeout=600) as client:
                scores = [client.score(group, shaping="none").groups[0].scores]

                def row(path: str, seconds: float, state: dict) -> None:
                    mb = sum(t.nbytes for t in state.values()) / 1e6
                    scores.append(client.score(group, shaping="none").groups[0].scores)
                    emit(part="transfer", path=path, seconds=seconds, mb_s=mb / seconds, mb=mb,
                         changed=scores[-1] != scores[-2], scores=scores[-1])  # fmt: skip

                state = next_version()
                push = lambda: client.push_weights(  # noqa: E731
                    state, full=True, bucket_bytes=bucket, progress=False
                )
                row("HTTP push_weights, 256 MiB buckets", timed(push, 2)[0], state)
                for backend in ["gloo", "nccl"] if gpus >= 2 else ["gloo"]:
                    state = next_version("cuda:0" if backend == "nccl" else "cpu")
                    with WeightSender(url, admin_token=TOKEN, backend=backend,
                                      master_address="127.0.0.1") as sender:  # fmt: skip
                        start = time.perf_counter()
                        sender.init()
                        join = time.perf_counter() - start
                        send = lambda s=sender, st=state: s.send(  # noqa: E731
                            st, full=True, bucket_bytes=bucket
                        )
                        seconds = timed(send, 2)[0]
                    name = {"gloo": "Gloo", "nccl": "NCCL"}[backend]
                    row(f"{name} transfer, 256 MiB buckets (join {join:.2f} s, "
                        "once)", seconds, state)  # fmt: skip
                if gpus < 2:
                    why = "no CUDA" if not gpus else "one GPU: NCCL cannot put two ranks on it"
                    emit(part="transfer", path="NCCL transfer", skipped=why)
        finally:
            proc.terminate()
            proc.wait(60)


PARTS = {"exact": part_exact, "speed": part_speed, "transfer": part_transfer}


def run_part(name: str, bound: float, tiny: bool) -> dict:
    """The part in its own process group, killed at its bound; the rows it printed are kept."""
    cmd = [sys.executable, __file__, "--part", name] + (["--tiny"] if tiny else [])
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=bound)
        status = "done" if proc.returncode == 0 else f"failed (exit code {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server it started goes too
        out, err = proc.communicate()
        status = f"stopped at its time bound of {bound:.0f} s"
    rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
    seconds = time.perf_counter() - start
    print(f"{name}: {status} after {seconds:.1f} s, {len(rows)} row(s)", flush=True)
    return {"status": status, "seconds": seconds, "rows": rows, "stderr": err[-1500:]}


def report(results: dict, args, plan: Plan, total: float) -> str:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    lines = [
        "# GPU check" + (" (tiny configs, CI)" if plan.tiny else ""),
        "",
        f"Machine: {machine()}, {torch.cuda.device_count() if cuda else 0} GPU(s), "
        f"CUDA {torch.version.cuda or '—'}, transformers {transformers.__version__}.",
        f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}` "
        f"({total:.0f} s in all). Models: random weights, Qwen2 configs of the shapes below, "
        f"vocabulary {plan.vocab}.",
        "",
        "| part | status | seconds | rows |",
        "|---|---|---:|---:|",
        *[
            f"| {n} | {r['status']} | {r['seconds']:.1f} | {len(r['rows'])} |"
            for n, r in results.items()
        ],
        "",
    ]
    if "exact" in results:
        lines += _exact_table(results["exact"]["rows"])
    if "speed" in results:
        lines += _speed_table(results["speed"]["rows"])
    if "transfer" in results:
        lines += _transfer_table(results["transfer"]["rows"])
    for name, r in results.items():
        if r["status"] != "done" and r["stderr"].strip():
            lines += [f"### {name}: the end of its stderr", "", "```", r["stderr"], "```", ""]
    return "\n".join(lines)


def _exact_table(rows) -> list[str]:
    out = [
        "## Exactness: batched vs loop",
        "",
        "The same random weights (perturbed so norms and biases count) in each dtype; the loop "
        "in float64 on the same device is the yardstick. Pass: float32 batched within 1e-4 of "
        "the loop; bfloat16 batched no further from float64 than max(2 × the loop's own error, "
        "1e-2).",
        "",
        "| shape | dtype | G×T (P) | batched vs loop | batched vs f64 | loop vs f64 "
        "| pairs as f64: batched / loop | verdict |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r["dtype"] == "float32":
            ok = r["batched_vs_loop"] <= 1e-4
        else:
            ok = r["batched_vs_f64"] <= max(2 * r["loop_vs_f64"], 1e-2)
        out.append(
            f"| {r['shape']} | {r['dtype']} | {r['G']}×{r['T']} ({r['P']}) "
            f"| {r['batched_vs_loop']:.1e} | {r['batched_vs_f64']:.1e} | {r['loop_vs_f64']:.1e} "
            f"| {r['pairs_batched']:.2f} / {r['pairs_loop']:.2f} | {'PASS' if ok else 'FAIL'} |"
        )
    return [*out, ""]


def _speed_table(rows) -> list[str]:
    out = [
        "## Speed and peak memory",
        "",
        "Seconds of one full call after a small warm-up call; exact floor = floor + the norm "
        "GEMMs alone (engine_speed.py). Peak: max_memory_allocated during that call above "
        "the level before it (CUDA only).",
        "",
        "| shape | dtype | G×T (P) | floor s | exact floor s | batched s | loop s "
        "| batched / exact floor | batched / loop | peak MiB floor / batched / loop |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    keyed: dict = {}
    for r in rows:
        keyed.setdefault((r["shape"], r["dtype"], r["G"], r["T"], r["P"]), {})[r["engine"]] = r
    for (shape, dtype, g, t, p), e in keyed.items():

        def s(name, e=e):
            r = e.get(name)
            if r is None:
                return "—"
            return r.get("error") or f"{r['seconds']:.2f}"

        def sec(name, e=e):
            r = e.get(name)
            return r["seconds"] if r and "seconds" in r else None

        floor, gemms, batched, loop = map(sec, ("floor", "gemms", "batched", "loop"))
        exact = floor + gemms if floor is not None and gemms is not None else None
        exact_s = f"{exact:.2f}" if exact is not None else "—"
        vs_exact = f"{batched / exact:.2f}×" if batched and exact else "—"
        vs_loop = f"{batched / loop:.2f}×" if batched and loop else "—"
        peaks = " / ".join(
            f"{e[n]['peak_mib']:,.0f}" if n in e and "peak_mib" in e[n] else "—"
            for n in ("floor", "batched", "loop")
        )
        out.append(
            f"| {shape} | {dtype} | {g}×{t} ({p}) | {s('floor')} | {exact_s} | {s('batched')} "
            f"| {s('loop')} | {vs_exact} | {vs_loop} | {peaks} |"
        )
    return [*out, ""]


def _transfer_table(rows) -> list[str]:
    out = [
        "## Weights to a server on the same machine",
        "",
        "One `vigor-serve` serving the transfer shape in bfloat16; the whole state dict sent "
        "each time, best of 2, wall-clock on the sender's side until the new version is "
        "served. Scores changed: a fixed group scored after the path differs from the version "
        "before it (each path sends weights 1 % above the last), so no path is credited for "
        "weights it did not deliver.",
        "",
        "| path | MB | seconds | MB/s | scores changed |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['path']} | — | — | — | skipped: {r['skipped']} |")
            continue
        rate = _num(r["mb_s"]) if "mb_s" in r else "—"
        changed = {True: "yes", False: "NO"}.get(r.get("changed"), "—")
        out.append(f"| {r['path']} | {_num(r['mb'])} | {r['seconds']:.3f} | {rate} | {changed} |")
    return [*out, ""]


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on whatever device (CI)")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--bound", action="append", default=[], metavar="PART=SECONDS",
                    help="override a part's time bound, e.g. --bound speed=300")  # fmt: skip
    ap.add_argument("--output", type=Path, default=Path("gpu_check.md"))
    ap.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    plan = Plan(args.tiny)
    if args.part:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if args.tiny:  # tiny GEMMs gain nothing from threads, and lose much on a shared CPU
            torch.set_num_threads(1)
        PARTS[args.part](plan, device)
        return

    for item in args.bound:
        name, _, seconds = item.partition("=")
        if name not in PARTS or not seconds:
            ap.error(f"--bound {item!r}: expected PART=SECONDS with PART one of {list(PARTS)}")
        plan.bounds[name] = float(seconds)
    start = time.perf_counter()
    results = {name: run_part(name, plan.bounds[name], args.tiny) for name in args.parts}
    text = report(results, args, plan, time.perf_counter() - start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
