"""The Ray Serve path against a plain vigor-serve: the same requests, latency and throughput ratios.

    python benchmarks/ray_vs_plain.py                          # tiny chat model, 2 replicas
    python benchmarks/ray_vs_plain.py --model default --requests 10

Both serve the same model on this machine: a plain `vigor-serve` process, then the Ray Serve
application (`--replicas` scoring replicas behind one ingress, on a local Ray). C concurrent
clients send the same list of requests (one group of G completions each) to each in turn. It
prints, and writes as markdown, p50/p99 latency and throughput of each and the ratios Ray/plain.
On a machine whose cores one plain server already uses, expect overhead, not speed-up: the Ray
path adds an HTTP proxy hop, an ingress and a replica call, and replicas share the same cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine_speed import machine  # noqa: E402  (benchmarks/ is sys.path[0])

from tests.servers import ProcessServer, free_port, shared_cache_dir, wait_ready  # noqa: E402

WORDS = ["the", "answer", "is", "four", "five", "seven", "because", "we", "add", "so", "equals"]


def requests_for(n: int, group_size: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        completions = [
            " ".join(rng.choices(WORDS, k=rng.randint(8, 40))) for _ in range(group_size)
        ]
        out.append({"groups": [{"prompt": f"Question {i}: what is {i} + {i}?",
                                "completions": completions}]})  # fmt: skip
    return out


def tiny_model_dir(root: Path) -> Path:
    import torch
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_llama_for
    from vigor_service.models.default_model import prepare_default_model

    tok = AutoTokenizer.from_pretrained(prepare_default_model(shared_cache_dir()))
    path = root / "tiny-chat"
    tiny_llama_for(tok, dtype=torch.float32).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def drive(url: str, bodies: list[dict], clients: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []

    def one(body: dict) -> None:
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/rewards", json=body, timeout=600)
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors.append(f"{r.status_code}: {r.text[:200]}")

    for body in bodies[:clients]:  # warm-up, not counted
        one(body)
    latencies.clear()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(bodies) / wall, 3),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 4),
        "errors": len(errors),
    }


def run_ray(args, model: str, bodies: list[dict]) -> dict:
    import ray

    from vigor_service.rayserve import app
    from vigor_service.settings import Settings

    settings = Settings(
        model=model, dtype=args.dtype, port=free_port(), ray=True, replicas=args.replicas,
        replica_num_cpus=args.replica_num_cpus, cache_dir=shared_cache_dir(),
    )  # fmt: skip
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        app.launch(settings)
        url = f"http://127.0.0.1:{settings.port}"
        wait_ready(url, 600)
        return drive(url, bodies, args.clients)
    finally:
        app.shutdown()
        ray.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' (built here), 'default', or a dir")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--replica-num-cpus", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ray_vs_plain_cpu.md")
    args = p.parse_args(argv)

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(tiny_model_dir(Path(tmp))) if args.model == "tiny" else args.model
        bodies = requests_for(args.requests, args.group_size)
        plain = ProcessServer("--model", model, "--dtype", args.dtype)
        plain.start(Path(tmp) / "plain.log")
        try:
            plain_result = drive(plain.url, bodies, args.clients)
        finally:
            plain.stop()
        ray_result = run_ray(args, model, bodies)

    ratios = {
        "p50 latency (Ray / plain)": ray_result["p50_s"] / plain_result["p50_s"],
        "p99 latency (Ray / plain)": ray_result["p99_s"] / plain_result["p99_s"],
        "throughput (Ray / plain)": ray_result["throughput_rps"] / plain_result["throughput_rps"],
    }
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/ray_vs_plain.py " + " ".join(given)
    lines = [
        "# Ray Serve path vs plain vigor-serve (loopback, same requests)",
        "",
        f"Machine: {machine()}; load average before the run {load:.2f}",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Model: {args.model} ({args.dtype}); {args.requests} requests of one group of "
        f"{args.group_size} completions, {args.clients} concurrent clients; Ray: "
        f"{args.replicas} replicas at num_cpus={args.replica_num_cpus} on a local Ray.",
        "",
        "| metric | plain | Ray |",
        "|---|---|---|",
        *[f"| {k} | {plain_result[k]} | {ray_result[k]} |" for k in plain_result],
        "",
        "| ratio | value |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in ratios.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    return 0 if plain_result["errors"] == ray_result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
