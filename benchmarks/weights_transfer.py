"""The same weights by HTTP push and by torch.distributed (Gloo) transfer, MB/s each, in one run.

    python benchmarks/weights_transfer.py                          # 1 server, 3 repeats
    python benchmarks/weights_transfer.py --servers 1 2 --repeats 5 --bucket-mb 256 1024

For each N of `--servers`, N `vigor-serve` processes serve the default model
(SmolLM2-135M-Instruct, float32: 538 MB of weights) on 127.0.0.1; this process sends the whole
state dict to each of them, first with `VigorClient.push_weights` (one server after the other:
safetensors buckets over HTTP, then a commit), then with `vigor_client.distributed.WeightSender`
(one Gloo broadcast reaches all servers; start → update_weights → finish). Both paths validate
every tensor and swap atomically, so each figure is wall-clock from the trainer's side until the
new version is served everywhere; best of the repeats. Joining the group happens once per
training run and is reported apart. MB/s counts the payload once per server. Results are
printed and written as markdown.

For NCCL between GPUs, see benchmarks/weights_transfer_nccl.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from engine_speed import machine  # benchmarks/ is sys.path[0] when run as a script
from weights_throughput import TOKEN, start_server, timed

RESULTS = Path(__file__).parent / "results"


def measure(urls, state, mb, bucket_mbs, repeats, joins) -> list[tuple[int, str, float, float]]:
    from vigor_client import VigorClient
    from vigor_client.distributed import WeightSender

    n, rows = len(urls), []
    clients = [VigorClient(u, admin_token=TOKEN, timeout=600) for u in urls]
    for bucket_mb in bucket_mbs:

        def push(b=bucket_mb) -> None:
            for c in clients:  # one server after the other: each gets the whole payload
                c.push_weights(state, full=True, bucket_bytes=b << 20, progress=False)

        seconds, _ = timed(push, repeats)
        rows.append((n, f"HTTP push_weights, {bucket_mb} MiB buckets", seconds, mb * n / seconds))
    for c in clients:
        c.close()
    with WeightSender(urls, admin_token=TOKEN, master_address="127.0.0.1") as sender:
        start = time.perf_counter()
        sender.init()
        joins[n] = time.perf_counter() - start
        for bucket_mb in bucket_mbs:
            seconds, _ = timed(
                lambda b=bucket_mb: sender.send(state, full=True, bucket_bytes=b << 20), repeats
            )
            rows.append((n, f"Gloo transfer, {bucket_mb} MiB buckets", seconds, mb * n / seconds))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket-mb", type=int, nargs="+", default=[256])
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=RESULTS / "weights_transfer.md")
    args = ap.parse_args()

    from safetensors.torch import load_file

    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    model_dir = prepare_default_model(args.cache_dir or default_cache_dir())
    state = load_file(str(model_dir / "model.safetensors"))
    state.pop("lm_head.weight", None)  # tied to the embedding: sent once
    mb = sum(t.nbytes for t in state.values()) / 1e6
    load_before = os.getloadavg()[0]
    started = [start_server(args.cache_dir) for _ in range(max(args.servers))]
    rows: list[tuple[int, str, float, float]] = []
    joins: dict[int, float] = {}
    try:
        for n in args.servers:
            urls = [url for _, url in started[:n]]
            rows += measure(urls, state, mb, args.bucket_mb, args.repeats, joins)
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(60)

    lines = [
        "# Weights by HTTP push and by torch.distributed (Gloo) transfer",
        "",
        f"Default model (SmolLM2-135M-Instruct, float32, {mb:.0f} MB of weights, {len(state)} "
        f"tensors) to N `vigor-serve` processes on 127.0.0.1, the trainer in another "
        f"process. Best of {args.repeats}, wall-clock on the trainer's side until the new version "
        "is served by every server; MB/s counts the payload once per server.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `python benchmarks/weights_transfer.py --servers "
        f"{' '.join(map(str, args.servers))} --repeats "
        f"{args.repeats} --bucket-mb {' '.join(map(str, args.bucket_mb))}`",
        "",
        "| servers | path | seconds | MB/s |",
        "|---:|---|---:|---:|",
        *[f"| {n} | {label} | {seconds:.3f} | {rate:.0f} |" for n, label, seconds, rate in rows],
        "",
        "Joining the Gloo group (init_weight_transfer_engine, once per training run): "
        + ", ".join(f"{s:.3f} s with {n} server(s)" for n, s in joins.items())
        + ".",
        "",
        f"1-minute load average before the run {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
        f"(on {os.cpu_count()} CPUs; other jobs count too).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
