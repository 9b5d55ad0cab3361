"""Weights GPU to GPU: HTTP push vs Gloo vs NCCL transfer to a CUDA server, MB/s each.

    python benchmarks/weights_transfer_nccl.py                    # default model, bfloat16
    python benchmarks/weights_transfer_nccl.py --model /path/to/hf-model --repeats 5

Needs CUDA. NCCL cannot put two ranks on one GPU, so the NCCL row needs two: the trainer (this
process) sends from cuda:0 and the server runs on the second GPU (CUDA_VISIBLE_DEVICES=1); with
one GPU the server shares cuda:0 and only HTTP push and Gloo (through host memory) are measured.
The trainer's weights live on its GPU, as a trainer's do, in the served dtype. After each path
a fixed group is scored: every path must deliver the same weights, so the same scores.
Results are printed and written as markdown.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from engine_speed import machine  # benchmarks/ is sys.path[0] when run as a script

RESULTS = Path(__file__).parent / "results"
TOKEN = "benchmark-admin-token"
GROUP = [{"prompt_ids": [1, 2, 3, 4], "completion_ids": [[5, 6, 7], [8, 9]]}]


def start_server(model: str, dtype: str, gpu: int) -> tuple[subprocess.Popen, str]:
    from vigor_client import VigorClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "vigor_service.cli", "--port", str(port), "--model", model,
            "--device", "cuda", "--dtype", dtype, "--admin-token", TOKEN,
            "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
    proc = subprocess.Popen(args, env=env)
    url = f"http://127.0.0.1:{port}"
    with VigorClient(url) as client:
        client.wait_until_ready(timeout=900)
    return proc, url


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="default", help="a local HF model dir, or 'default'")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket-mb", type=int, default=1024)
    ap.add_argument("--output", type=Path, default=RESULTS / "weights_transfer_nccl.md")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from vigor_client import VigorClient
    from vigor_client.distributed import WeightSender

    if not torch.cuda.is_available():
        sys.exit("this benchmark needs CUDA (benchmarks/weights_transfer.py measures CPU/Gloo)")
    model_dir = args.model
    if model_dir == "default":
        from vigor_service.models.default_model import prepare_default_model
        from vigor_service.settings import default_cache_dir

        model_dir = str(prepare_default_model(default_cache_dir()))
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to("cuda:0").eval()
    with torch.no_grad():  # a visible change, so a path that delivered nothing would show
        for p in model.parameters():
            p.mul_(1.001)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    mb = sum(t.nbytes for t in {id(t): t for t in state.values()}.values()) / 1e6
    two_gpus = torch.cuda.device_count() >= 2
    proc, url = start_server(model_dir, args.dtype, gpu=1 if two_gpus else 0)
    bucket = args.bucket_mb << 20
    rows, scores = [], {}
    try:
        with VigorClient(url, admin_token=TOKEN, timeout=900) as client:

            def push() -> None:
                client.push_weights(state, full=False, bucket_bytes=bucket, progress=False)

            rows.append(("HTTP push_weights", best(push, args.repeats)))
            scores["HTTP push"] = client.score(GROUP, shaping="none").groups[0].scores
            backends = ["gloo", "nccl"] if two_gpus else ["gloo"]
            for backend in backends:
                with WeightSender(url, admin_token=TOKEN, backend=backend,
                                  master_address="127.0.0.1") as sender:  # fmt: skip
                    start = time.perf_counter()
                    sender.init()
                    join = time.perf_counter() - start
                    seconds = best(lambda s=sender: s.send(state, full=False, bucket_bytes=bucket),
                                   args.repeats)  # fmt: skip
                rows.append((f"{backend} transfer (join {join:.2f} s, once)", seconds))
                scores[backend] = client.score(GROUP, shaping="none").groups[0].scores
    finally:
        proc.terminate()
        proc.wait(120)

    same = all(s == scores["HTTP push"] for s in scores.values())
    lines = [
        "# Weights GPU to GPU: HTTP push, Gloo and NCCL transfer",
        "",
        f"Model {args.model} ({args.dtype}, {mb:.0f} MB of weights), trainer on cuda:0, one "
        f"`vigor-serve` on {'the second GPU' if two_gpus else 'the same GPU (no NCCL row)'}. "
        f"Best of {args.repeats}, wall-clock on the trainer's side until the new version is "
        f"served; {args.bucket_mb} MiB buckets.",
        "",
        f"Machine: {machine()}, {torch.cuda.device_count()} GPU(s).",
        "",
        f"Command: `python benchmarks/weights_transfer_nccl.py --model {args.model} --dtype "
        f"{args.dtype} --repeats {args.repeats} --bucket-mb {args.bucket_mb}`",
        "",
        "| path | seconds | MB/s |",
        "|---|---:|---:|",
        *[f"| {label} | {s:.3f} | {mb / s:.0f} |" for label, s in rows],
        "",
        f"Scores after each path {'agree' if same else 'DIFFER'}: {scores}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    if not same:
        sys.exit("the paths delivered different weights")


if __name__ == "__main__":
    main()
