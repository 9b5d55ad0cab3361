"""Bounded load on loopback with weight pushes during the run.

    python benchmarks/load.py                       # starts its own vigor-serve (default model)
    python benchmarks/load.py --clients 16 --requests 50 --push-every 2

C concurrent clients each send R requests (one GSM8K-style group of G completions each) while a
pusher commits a new weight version every few seconds (a partial push of one perturbed tensor).
It reports throughput, p50/p99 latency and the error count, and checks every response's
weight_version: it must be a committed version, no older than the newest version committed before
the request was sent, and no newer than the newest whose commit had started when the answer came.
Traffic goes to 127.0.0.1 only; the run is bounded by C × R requests and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine_speed import machine  # noqa: E402  (benchmarks/ is sys.path[0])

from tests.servers import ProcessServer  # noqa: E402
from vigor_client import AsyncVigorClient, VigorError  # noqa: E402

ADMIN_TOKEN = "load-test-admin-token"
QUESTIONS = HERE.parent / "examples" / "data" / "gsm8k_subset.jsonl"


def groups_pool(g: int) -> list[dict]:
    questions = []
    if QUESTIONS.is_file():
        questions = [json.loads(x)["question"] for x in QUESTIONS.read_text().splitlines() if x]
    questions = questions or [f"What is {a} + {a * 3}?" for a in range(2, 30)]
    answers = ["The answer is 12.", "Let me think: 3 * 4 = 12.", "42", "I am not sure."]
    return [
        {"messages": [{"role": "user", "content": q}], "completions": (answers * g)[:g]}
        for q in questions
    ]


async def client_loop(url, pool, n, log, versions_committed):
    async with AsyncVigorClient(url, timeout=300) as client:
        for _ in range(n):
            group = random.choice(pool)
            t_sent = time.monotonic()
            floor = max(versions_committed["done"])
            try:
                res = await client.score([group])
                log.append(("ok", t_sent, time.monotonic(), res.weight_version, floor))
            except VigorError as exc:
                log.append(("error", t_sent, time.monotonic(), repr(exc), floor))


async def pusher(url, every, stop, commits, versions_committed):
    import torch

    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    path = prepare_default_model(default_cache_dir())
    from safetensors.torch import load_file

    base = load_file(str(path / "model.safetensors"))["model.norm.weight"]
    version = 0
    async with AsyncVigorClient(url, admin_token=ADMIN_TOKEN, timeout=120) as client:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
                break
            except TimeoutError:
                pass
            version += 1
            tensor = base * (1 + 0.01 * version)
            versions_committed["started"].append((time.monotonic(), version))
            t0 = time.monotonic()
            await client.push_weights(
                {"model.norm.weight": tensor.to(torch.float32)}, version=version, progress=False
            )
            commits.append((version, t0, time.monotonic()))
            versions_committed["done"].append(version)


def check_versions(log, commits, started):
    committed = {0} | {v for v, _, _ in commits}
    bad = []
    for kind, _, t_recv, version, floor in log:
        if kind != "ok":
            continue
        ceiling = max([0] + [v for t, v in started if t <= t_recv])
        if version not in committed or version < floor or version > ceiling:
            bad.append((version, floor, ceiling))
    return bad


def _span(versions: list[int]) -> str:
    return f"{len(versions)} distinct, {versions[0]}–{versions[-1]}" if versions else "none"


async def main_async(args) -> dict:
    server = None
    url = args.url
    if url is None:
        server = ProcessServer("--admin-token", ADMIN_TOKEN, *args.server_args)
        server.start(Path(tempfile.mkdtemp()) / "server.log")
        url = server.url
    try:
        pool = groups_pool(args.group_size)
        log, commits = [], []
        versions = {"done": [0], "started": []}
        stop = asyncio.Event()
        push_task = asyncio.create_task(pusher(url, args.push_every, stop, commits, versions))
        t0 = time.monotonic()
        await asyncio.gather(
            *(client_loop(url, pool, args.requests, log, versions) for _ in range(args.clients))
        )
        wall = time.monotonic() - t0
        stop.set()
        await push_task
    finally:
        if server is not None:
            server.stop()
    lat = sorted(t_recv - t_sent for kind, t_sent, t_recv, _, _ in log if kind == "ok")
    errors = [entry for entry in log if entry[0] == "error"]
    bad = check_versions(log, commits, versions["started"])
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    return {
        "clients": args.clients,
        "requests": len(log),
        "group_size": args.group_size,
        "wall_s": wall,
        "throughput_rps": len(log) / wall,
        "completions_per_s": len(log) * args.group_size / wall,
        "p50_s": q[49],
        "p99_s": q[98],
        "errors": len(errors),
        "first_errors": [e[3] for e in errors[:3]],
        "pushes_committed": len(commits),
        "versions_seen": _span(sorted({e[3] for e in log if e[0] == "ok"})),
        "version_violations": len(bad),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--url", help="an already running server (its admin token must be the one below)"
    )
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--push-every", type=float, default=2.0, help="seconds between weight pushes")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[])
    p.add_argument("--out", type=Path, default=HERE / "results" / "load_cpu.md")
    args = p.parse_args()
    r = asyncio.run(main_async(args))
    print(json.dumps(r, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Load with weight pushes (loopback)\n\n"
        f"Machine: {machine()}\n\n"
        f"Command: `python benchmarks/load.py --clients {args.clients} --requests {args.requests}"
        f" --group-size {args.group_size} --push-every {args.push_every}`\n\n"
        "| metric | value |\n|---|---|\n"
        + "".join(
            f"| {k} | {v:.3f} |\n" if isinstance(v, float) else f"| {k} | {v} |\n"
            for k, v in r.items()
        )
    )
    return 0 if r["errors"] == 0 and r["version_violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
