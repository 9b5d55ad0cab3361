"""Weight-plane speed on the default model over loopback: HTTP push throughput and reload time.

    python benchmarks/weights_throughput.py                       # 3 repeats, 256 MiB buckets
    python benchmarks/weights_throughput.py --repeats 5 --bucket-mb 64 128 256 1024

A `vigor-serve` process serves the default model (SmolLM2-135M-Instruct, float32: 538 MB of
weights); this process pushes the whole state dict with `VigorClient.push_weights` (serialize
each bucket, send it, the server validates it; then one commit swaps everything in) and reloads
the checkpoint directory with `reload_weights` (the file is in the page cache after the first
read). Each figure is the best of the repeats, wall-clock from the client's side, so it includes
everything a trainer waits for. Results are printed and written as markdown.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from engine_speed import machine  # benchmarks/ is sys.path[0] when run as a script

RESULTS = Path(__file__).parent / "results"
TOKEN = "benchmark-admin-token"


def start_server(
    cache_dir: Path | None, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`vigor-serve` (loop engine, admin token) on a free loopback port, once it is ready."""
    from vigor_client import VigorClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "vigor_service.cli", "--port", str(port), "--engine", "loop"]
    args += ["--admin-token", TOKEN, "--log-level", "warning"]
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    proc = subprocess.Popen([*args, *extra], env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    with VigorClient(url) as client:
        client.wait_until_ready(timeout=600)
    return proc, url


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket-mb", type=int, nargs="+", default=[256])
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=RESULTS / "weights_throughput.md")
    args = ap.parse_args()

    from safetensors.torch import load_file

    from vigor_client import VigorClient
    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    model_dir = prepare_default_model(args.cache_dir or default_cache_dir())
    state = load_file(str(model_dir / "model.safetensors"))
    state.pop("lm_head.weight", None)
    total = sum(t.nbytes for t in state.values())
    mb = total / 1e6
    proc, url = start_server(args.cache_dir)
    rows = []
    try:
        with VigorClient(url, admin_token=TOKEN, timeout=600) as client:
            for bucket_mb in args.bucket_mb:
                seconds, res = timed(
                    lambda b=bucket_mb: client.push_weights(
                        state, full=True, bucket_bytes=b << 20, progress=False
                    ),
                    args.repeats,
                )
                buckets = -(-total // (bucket_mb << 20))
                label = f"push_weights, {bucket_mb} MiB buckets ({buckets} requests + commit)"
                rows.append((label, seconds, mb / seconds))
            seconds, res = timed(lambda: client.reload_weights(model_dir), args.repeats)
            rows.append(("reload_weights (checkpoint directory, page cache warm)", seconds, None))
            server_reload = res.seconds
    finally:
        proc.terminate()
        proc.wait(60)

    lines = [
        "# Weight plane: push throughput and reload time",
        "",
        f"Default model (SmolLM2-135M-Instruct, float32, {mb:.0f} MB of weights, "
        f"{len(state)} tensors), one `vigor-serve` process on 127.0.0.1, client in another "
        f"process. Best of {args.repeats}, wall-clock on the client side.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `python benchmarks/weights_throughput.py --repeats {args.repeats} "
        f"--bucket-mb {' '.join(map(str, args.bucket_mb))}`",
        "",
        "| operation | seconds | MB/s |",
        "|---|---:|---:|",
    ]
    for label, seconds, rate in rows:
        lines.append(f"| {label} | {seconds:.3f} | {f'{rate:.0f}' if rate else '—'} |")
    lines += ["", f"Server time of the last reload (read, validate, swap): {server_reload:.3f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
