"""A trainer process for the transfer tests: loads a checkpoint, changes its weights, sends them.

    python -m tests.weights.transfer_trainer --urls URL[,URL] --checkpoint DIR --version V \
        [--seed S] [--save DIR] [--break name|shape|dtype] [--stall-after K [--resume-when F]]
        [--stall-after-init [--resume-when F]]

Prints one JSON object per line: {"bucket": k} after each bucket, {"stalled": k} when it stops
sending (or {"stalled": "init"} right after joining, with --stall-after-init; and waits until
killed, or until file F exists), then {"updates": [...]} or
{"error": "..."} (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from vigor_client.distributed import WeightSender

from .helpers import perturbed, state

BROKEN = {
    "name": "model.norm.weight",
    "shape": "model.layers.0.mlp.down_proj.weight",
    "dtype": "model.layers.1.input_layernorm.weight",
}


def say(**event) -> None:
    print(json.dumps(event), flush=True)


def broken(sd: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    sd, name = dict(sd), BROKEN[how]
    tensor = sd.pop(name)
    if how == "name":
        sd[name.replace("weight", "wieght")] = tensor
    elif how == "shape":
        sd[name] = tensor.t().contiguous()
    else:
        sd[name] = tensor.double()
    return sd


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--token", default=None)
    ap.add_argument("--save", default=None, help="save the weights sent, as a checkpoint")
    ap.add_argument("--break", dest="breakage", choices=sorted(BROKEN), default=None)
    ap.add_argument("--stall-after", type=int, default=None, help="stop after K buckets")
    ap.add_argument("--stall-after-init", action="store_true", help="stop once joined")
    ap.add_argument("--resume-when", default=None, help="after stalling, go on once this exists")
    ap.add_argument("--bucket-bytes", type=int, default=16 << 10)
    ap.add_argument("--timeout-s", type=float, default=30.0)
    args = ap.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    model.load_state_dict(perturbed(state(model), seed=args.seed))
    if args.save:
        model.save_pretrained(args.save)
    source = model if args.breakage is None else broken(model.state_dict(), args.breakage)

    def stall(where: int | str) -> None:
        say(stalled=where)
        end = time.monotonic() + 3600  # until the test kills this process, or lets it go on
        while time.monotonic() < end and not (args.resume_when and Path(args.resume_when).exists()):
            time.sleep(0.05)

    def on_bucket(k: int, nbytes: int) -> None:
        say(bucket=k, nbytes=nbytes)
        if args.stall_after is not None and k + 1 == args.stall_after:
            stall(k + 1)

    sender = WeightSender(args.urls, admin_token=args.token, timeout_s=args.timeout_s)
    try:
        sender.init()
        if args.stall_after_init:
            stall("init")  # a trainer's long step between init and its first send
        updates = sender.send(
            source,
            version=args.version,
            cast=args.breakage != "dtype",
            bucket_bytes=args.bucket_bytes,
            on_bucket=on_bucket,
        )
    except Exception as exc:
        say(error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        sender.close()
    say(updates=[u.model_dump() for u in updates])
    return 0


if __name__ == "__main__":
    sys.exit(main())
