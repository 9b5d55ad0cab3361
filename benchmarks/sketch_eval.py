"""The sketched estimator against exact, on labelled GSM8K groups and at the paper's shapes.

In one process, no HTTP, the default model in float32 on this machine's device:

1. Rank agreement. For every group of examples/data/gsm8k_eval.jsonl (token ids built by the
   server's own Tokenization, as vigor-eval's requests are), the fraction of within-group pairs
   that each estimator orders as exact orders them: the sketch at each k, and "exact computed
   the reference's way" (per-sample gradient materialized in a bfloat16 copy of the model, the
   squares summed in bfloat16, VIGOR.md "Reference details").
2. AUROC of the score −‖g‖·√T against `correct`, within groups, pooled (client/eval/metrics.py,
   as vigor-eval computes it), for exact, the bf16 reference and each k.
3. Speed of sketch against exact at G=8 × T ∈ {1024, 2048} after a 200-token prompt (synthetic
   ids, as benchmarks/engine_speed.py builds them), one after the other in this process.

    python benchmarks/sketch_eval.py                       # everything, one process
    # or in parallel processes (each scores its parts), then the summary:
    python benchmarks/sketch_eval.py --parts exact --speed-configs "" --json exact.json
    python benchmarks/sketch_eval.py --parts k=32,k=128 --speed-configs "" --json k.json
    python benchmarks/sketch_eval.py --merge exact.json k.json --out report.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "gsm8k_eval.jsonl"


def _load():
    from vigor_service.models.loader import load_model
    from vigor_service.settings import default_cache_dir

    return load_model("default", cache_dir=default_cache_dir(), device="cpu", dtype="float32")


def eval_groups(loaded, n: int | None):
    """(token sequences, labels) per group, tokenized the way the server tokenizes vigor-eval's."""
    from vigor_client.eval.data import load_groups
    from vigor_client.schema import Group
    from vigor_service.scoring.inputs import Tokenization

    groups = load_groups(DATA).groups[:n]
    config = loaded.model.config
    tok = Tokenization(loaded.tokenizer, config.vocab_size, config.max_position_embeddings)
    seqs = tok.sequences([Group(**g.request()) for g in groups])
    return seqs, [list(g.labels) for g in groups]


def bf16_reference(model, sequences) -> list[float]:
    """The reference's way: one sample at a time, bf16 weights, gradients and sum of squares."""
    import copy

    import torch
    import torch.nn.functional as F

    from vigor_service.engine.reference import completion_logits

    m = copy.deepcopy(model).to(torch.bfloat16)
    params = [p for p in m.parameters() if p.requires_grad]
    out = []
    with torch.enable_grad():
        for seq in sequences:
            logits = completion_logits(m, seq, torch.device("cpu"))
            targets = torch.tensor(seq.completion_ids)
            loss = F.cross_entropy(logits, targets)  # bf16 logits, bf16 loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = torch.zeros((), dtype=torch.bfloat16)
            for g in grads:
                if g is not None:
                    sq = sq + g.pow(2).sum()  # each sum and the running total rounded to bf16
            out.append(float(sq.float().sqrt()))
    del m
    return out


def agreement(est: list[list[float]], exact: list[list[float]]) -> float:
    """Share of within-group pairs with the same strict order as exact (a tie on one side: no)."""
    same = total = 0
    for e, x in zip(est, exact, strict=True):
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                total += 1
                same += (e[i] > e[j]) == (x[i] > x[j]) and (e[i] == e[j]) == (x[i] == x[j])
    return same / total


def auroc(scores: list[list[float]], labels: list[list[float]]) -> float:
    from vigor_client.eval.metrics import count_pairs, pooled_auroc

    return pooled_auroc([count_pairs(s, y) for s, y in zip(scores, labels, strict=True)])


def auroc_interval(scores: list[list[float]], labels: list[list[float]]) -> tuple[float, float]:
    """95% bootstrap interval over groups, seeded: every estimator gets the same resamples."""
    from vigor_client.eval.metrics import bootstrap_interval, count_pairs, pooled_auroc

    counts = [count_pairs(s, y) for s, y in zip(scores, labels, strict=True)]
    return bootstrap_interval(counts, pooled_auroc, samples=2000, seed=0)


def _split(flat: list, groups) -> list[list]:
    out, k = [], 0
    for g in groups:
        out.append(flat[k : k + len(g)])
        k += len(g)
    return out


def score_parts(loaded, args) -> dict:
    """Each estimator's gradient norms over the groups, with its wall and CPU seconds."""
    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.params import scored_parameters
    from vigor_service.engine.types import Sketch

    model = loaded.model
    params = [p for _, p in scored_parameters(model)]
    groups, labels = eval_groups(loaded, args.groups)
    flat = [s for g in groups for s in g]
    engine = BatchedEngine(args.max_batch_tokens)
    out = {
        "sizes": [len(g) for g in groups],
        "labels": labels,
        "num_tokens": [s.num_tokens for s in flat],
        "norms": {},
    }
    for part in args.parts:
        t0, c0 = time.perf_counter(), time.process_time()
        if part == "exact":
            norms = [s.grad_norm for s in engine.score(model, params, flat)]
        elif part == "bf16":
            norms = bf16_reference(model, flat)
        else:  # "k=K" or "k=K/seed=S"
            k, _, seed = part.removeprefix("k=").partition("/seed=")
            sk = Sketch(int(k), int(seed or 0))
            norms = [s.grad_norm for s in engine.score(model, params, flat, estimator=sk)]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out["norms"][part] = {"norms": norms, "wall_s": wall, "cpu_s": cpu}
        print(part, f"wall {wall:.0f} s, CPU {cpu:.0f} s", flush=True)
    return out


def summarize(parts: list[dict]) -> dict:
    """Rank agreement with exact and AUROC per estimator, from score_parts outputs."""
    first = parts[0]
    found = {}
    for p in parts:
        if p["sizes"] != first["sizes"] or p["num_tokens"] != first["num_tokens"]:
            raise SystemExit("the parts were scored on different groups")
        found |= p["norms"]
    if "exact" not in found:
        raise SystemExit("no part holds the exact norms")
    sizes, tokens = first["sizes"], first["num_tokens"]
    groups = [[None] * n for n in sizes]

    def scores(norms):
        # The VIGOR score −‖g‖·√T: what is ranked and what the AUROC reads.
        return _split([-n * t**0.5 for n, t in zip(norms, tokens, strict=True)], groups)

    exact = found["exact"]["norms"]
    ex = scores(exact)
    rows = {}
    order = sorted(found, key=lambda n: (n != "exact", n == "bf16", _k_of(n)))
    for name in order:
        r = found[name]
        sc = scores(r["norms"])
        rel = sorted(abs(g - e) / e for g, e in zip(r["norms"], exact, strict=True))
        rows[name] = {
            "agree": agreement(sc, ex),
            "auroc": auroc(sc, first["labels"]),
            "auroc_95": auroc_interval(sc, first["labels"]),
            "median_rel_err": rel[len(rel) // 2],
            "wall_s": r["wall_s"],
            "cpu_s": r["cpu_s"],
        }
    pairs = sum(n * (n - 1) // 2 for n in sizes)
    return {"groups": len(sizes), "sequences": len(tokens), "pairs": pairs, "rows": rows}


def _k_of(name: str) -> int:
    return int(name.removeprefix("k=").partition("/")[0]) if name.startswith("k=") else 0


def run_speed(loaded, args) -> list[dict]:
    from engine_speed import _sequences

    from vigor_service.engine.batched import BatchedEngine
    from vigor_service.engine.params import scored_parameters
    from vigor_service.engine.types import Sketch

    model = loaded.model
    params = [p for _, p in scored_parameters(model)]
    engine = BatchedEngine(args.max_batch_tokens)
    vocab = model.config.vocab_size
    engine.score(model, params, _sequences(vocab, 2, 8, 8, seed=1))  # warm-up: kernels
    for k in args.speed_ks:  # draw the projections once, as a running server would have
        engine.score(model, params, _sequences(vocab, 1, 8, 8, seed=1), estimator=Sketch(k, 0))
    out = []
    for spec in args.speed_configs:
        g, t = (int(x) for x in spec.split("x"))
        seqs = _sequences(vocab, g, args.prompt, t, seed=0)
        row = {"config": f"G={g} × T={t}, P={args.prompt}", "tokens": sum(s.length for s in seqs)}
        for name, est in [("exact", None), *((f"k={k}", Sketch(k, 0)) for k in args.speed_ks)]:
            t0, c0 = time.perf_counter(), time.process_time()
            engine.score(model, params, seqs, estimator=est)
            row[name] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
            print(spec, name, row[name], flush=True)
        out.append(row)
    return out


def norm_work(model, n: int, ks: list[int], rounds: int) -> dict:
    """The per-sample Linear-weight norm work alone, exact (the cheaper of the ghost and direct
    forms, as the engine picks) against the sketch, on random operands of the model's real
    shapes: one sample of n tokens through every Linear layer. Best of `rounds`, interleaved."""
    import torch

    from vigor_service.engine.norms.gram import GramCache, gram_inner, masked_gram
    from vigor_service.engine.norms.linear import choose_form, direct_sq
    from vigor_service.engine.norms.sketch import draw

    shapes = [
        (m.in_features, m.out_features)
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()
    ]
    gen = torch.Generator().manual_seed(0)
    ops = {d: torch.randn(1, n, d, generator=gen) for d in {x for s in shapes for x in s}}

    def exact():
        for d_in, d_out in shapes:
            a, b = ops[d_in], ops[d_out]
            if choose_form(n, d_in, d_out, False, "auto") == "direct":
                direct_sq(a, b)
            else:
                cache = GramCache()
                gram_inner(masked_gram(a, None, a.dtype, cache, fold=True),
                           masked_gram(b, None, b.dtype, cache))  # fmt: skip

    def sketch(k, projections):
        for (d_in, d_out), (p_in, p_out) in zip(shapes, projections, strict=True):
            pa, pb = ops[d_in] @ p_in.T, ops[d_out] @ p_out.T
            torch.bmm(pb.transpose(1, 2), pa).square().sum()

    drawn = {
        k: [(draw(0, str(i), "in", k, a).float(), draw(0, str(i), "out", k, b).float())
            for i, (a, b) in enumerate(shapes)]
        for k in ks
    }  # fmt: skip
    best = {"exact": float("inf"), **{f"k={k}": float("inf") for k in ks}}
    for _ in range(rounds):
        for name in best:
            t0 = time.process_time()
            exact() if name == "exact" else sketch(int(name[2:]), drawn[int(name[2:])])
            best[name] = min(best[name], time.process_time() - t0)
    return {"tokens": n, "layers": len(shapes), "cpu_s": best}


def report(
    ev: dict | None,
    speed: list[dict],
    args,
    started: str,
    load: tuple,
    work: list | None = None,
    merged: int = 0,
) -> str:
    from engine_speed import machine

    where = (
        f"Merged from {merged} part files (`--json` outputs): each row's times are its own "
        "part run's, on the machine and at the load that run recorded (`run` in its file)."
        if merged
        else f"Machine: {machine()}. Started {started} UTC; load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min), shared with other work: "
        "wall seconds are noisy, CPU seconds of this process less so."
    )
    lines = [
        "# Sketched gradient-norm estimator vs exact (benchmarks/sketch_eval.py)",
        "",
        f"Command: `python benchmarks/sketch_eval.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        where,
        "",
        f"Default model (SmolLM2-135M-Instruct), float32, batched engine, "
        f"max_batch_tokens={args.max_batch_tokens}.",
        "",
    ]
    if ev:
        lines += [
            f"## Rank agreement and AUROC: {ev['groups']} GSM8K groups × G=4 "
            f"({ev['sequences']} completions, {ev['pairs']} within-group pairs)",
            "",
            "| estimator | pairs ordered as exact | pairs flipped | AUROC (score vs `correct`) "
            "| AUROC 95% (bootstrap over groups) | median rel. error of ‖g‖ | wall s | CPU s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in ev["rows"].items():
            label = {"exact": "exact", "bf16": "exact, the reference's way (bf16 sums)"}.get(
                name, f"sketch {name}"
            )
            err = f"{r['median_rel_err']:.2e}"
            flipped = round((1 - r["agree"]) * ev["pairs"])
            lo, hi = r["auroc_95"]
            lines.append(
                f"| {label} | {r['agree']:.3f} | {flipped} | {r['auroc']:.3f} | {lo:.3f}–{hi:.3f} "
                f"| {err} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
            )
        lines.append("")
    if speed:
        names = ["exact", *(f"k={k}" for k in args.speed_ks)]
        lines += [
            "## Speed: sketch vs exact, synthetic ids, one call each, same process",
            "",
            *_against_exact_header("config", names, "wall s (CPU s)"),
        ]
        for row in speed:
            cells = [f"{row[n]['wall_s']:.1f} ({row[n]['cpu_s']:.1f})" for n in names]
            ratios = [
                f"{row['exact']['wall_s'] / row[n]['wall_s']:.2f}× "
                f"({row['exact']['cpu_s'] / row[n]['cpu_s']:.2f}× CPU)"
                for n in names[1:]
            ]
            lines.append(f"| {row['config']} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    if work:
        names = list(work[0]["cpu_s"])
        lines += [
            "## Norm work alone: every Linear layer's per-sample weight norm, one sample",
            "",
            "Random operands of the model's shapes, CPU seconds, best of the rounds (interleaved);",
            "exact is the cheaper of the ghost and direct forms, as the engine picks.",
            "",
            *_against_exact_header("tokens", names, "CPU s"),
        ]
        for row in work:
            c = row["cpu_s"]
            cells = [f"{c[n]:.2f}" for n in names]
            ratios = [f"{c['exact'] / c[n]:.1f}×" for n in names[1:]]
            lines.append(f"| {row['tokens']} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def _against_exact_header(first: str, names: list[str], unit: str) -> list[str]:
    """A table's two header lines: `first`, each estimator's figure, then exact / each other."""
    cells = [first, *(f"{n} {unit}" for n in names), *(f"exact / {n}" for n in names[1:])]
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    words = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--groups", type=int, default=None, help="first N groups (default: all 60)")
    ap.add_argument(
        "--parts",
        type=words,
        default=["exact", "bf16", "k=8", "k=32", "k=128", "k=512"],
        help="what to score: exact, bf16 (the reference's way), k=K[/seed=S]; '' for none",
    )
    ap.add_argument("--merge", nargs="+", help="summarize these --json outputs of --parts runs")
    ap.add_argument("--speed-ks", type=ints, default=[32, 128, 512])
    ap.add_argument("--speed-configs", type=words, default=["8x1024", "8x2048"])
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--max-batch-tokens", type=int, default=1024, help="the CPU default budget")
    ap.add_argument("--norm-work", type=ints, default=[], help="token counts for the norm-work "
                    "comparison (e.g. 1224,2248: P=200 + T=1024, 2048)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--out", help="write the markdown report here")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    load = os.getloadavg()
    if args.merge:
        ev = summarize([json.loads(Path(p).read_text()) for p in args.merge])
        text = report(ev, [], args, started, load, merged=len(args.merge))
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        loaded = _load()
        parts = score_parts(loaded, args) if args.parts else None
        speed = run_speed(loaded, args) if args.speed_configs else []
        ks = args.speed_ks
        work = [norm_work(loaded.model, n, ks, args.rounds) for n in args.norm_work]
        if args.json:
            from engine_speed import machine

            run = {"machine": machine(), "started": started, "load": load, "argv": sys.argv[1:]}
            Path(args.json).write_text(
                json.dumps({**(parts or {}), "speed": speed, "norm_work": work, "run": run})
            )
        ev = summarize([parts]) if parts and "exact" in parts["norms"] else None
        text = report(ev, speed, args, started, load, work)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
