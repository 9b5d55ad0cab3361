"""Checkpoint watcher speed on the default model: seconds from a step directory written to served.

    python benchmarks/watch_follow.py                 # 3 steps of each kind
    python benchmarks/watch_follow.py --steps 5

A `vigor-serve` process serves the default model (SmolLM2-135M-Instruct, float32) with
`--watch-dir`; this process writes step directories next to it as the trainers do (config.json,
then model.safetensors in place; bf16 as OpenRLHF's save_hf writes, float32 as verl's
hf_model does) and times, per step:

- write: writing the directory (the trainer's cost, on this disk);
- served (poll): from the last byte written until /v1/model shows version = step, with no
  scoring traffic (the watcher's own poll, --watch-interval-s 1, finds it);
- served (request): the same, with a scoring request sent at the moment the last byte is
  written (the request looks at the directory itself, so no poll wait; it is answered at
  version = step);
- server load: the server's own time for the load (read, validate, cast, swap), from
  /metrics (vigor_weight_update_duration_seconds, operation "reload").

Each figure is the median over the steps. The results replace the "watcher" section of
benchmarks/results/weight_follow_cpu.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from engine_speed import machine  # benchmarks/ is sys.path[0] when run as a script

RESULTS = Path(__file__).parent / "results" / "weight_follow_cpu.md"
HEADING = "## watcher"
GROUPS = [{"prompt_ids": [1, 2, 3, 4], "completion_ids": [[5, 6, 7], [8, 9]]}]


def start_server(watch: Path, cache_dir: Path | None) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "vigor_service.cli", "--port", str(port), "--log-level"]
    args += ["warning", "--watch-dir", str(watch), "--watch-interval-s", "1"]
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(args)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 600
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def lscpu() -> str:
    """`lscpu | head -15`, or what /proc says where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return machine()
    return "\n".join(out.splitlines()[:15])


def write_step(root: Path, step: int, data: bytes, config: dict) -> float:
    """As OpenRLHF's save_model: the directory, then the weights in place, then config.json."""
    path = root / f"global_step{step}_hf"
    start = time.perf_counter()
    path.mkdir()
    with open(path / "model.safetensors", "wb") as f:
        f.write(data)
    (path / "config.json").write_text(json.dumps(config))
    return time.perf_counter() - start


def version(url: str) -> int:
    import httpx

    return httpx.get(url + "/v1/model", timeout=60).json()["weight_version"]


def score(url: str, out: list) -> None:
    import httpx

    r = httpx.post(url + "/v1/rewards", json={"groups": GROUPS}, timeout=600)
    r.raise_for_status()
    out.append(r.json()["weight_version"])


def reload_seconds(url: str) -> float:
    import re

    import httpx

    text = httpx.get(url + "/metrics", timeout=60).text
    m = re.search(
        r'^vigor_weight_update_duration_seconds_sum\{operation="reload"\} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


def served_after(url: str, step: int) -> float:
    start = time.perf_counter()
    while version(url) < step:
        time.sleep(0.01)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file, save

    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    model_dir = prepare_default_model(args.cache_dir or default_cache_dir())
    state = load_file(str(model_dir / "model.safetensors"))
    state.pop("lm_head.weight", None)  # tied
    config = json.loads((model_dir / "config.json").read_text())
    payloads = {
        dtype: save({k: v.to(dtype).contiguous() for k, v in state.items()}, {"format": "pt"})
        for dtype in (torch.bfloat16, torch.float32)
    }
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        root = Path(tmp)
        proc, url = start_server(root, args.cache_dir)
        try:
            step = 0
            for dtype, data in payloads.items():
                writes, polled, requested, loads = [], [], [], []
                for _ in range(args.steps):
                    step += 1
                    loaded = reload_seconds(url)
                    writes.append(write_step(root, step, data, config))
                    polled.append(served_after(url, step))
                    loads.append(reload_seconds(url) - loaded)
                    step += 1
                    write_step(root, step, data, config)
                    answered: list[int] = []
                    caller = threading.Thread(target=score, args=(url, answered))
                    caller.start()
                    requested.append(served_after(url, step))
                    caller.join()
                    assert answered == [step], (answered, step)
                name = str(dtype).removeprefix("torch.")
                rows.append((name, len(data), writes, polled, requested, loads))
        finally:
            proc.terminate()
            proc.wait(60)

    lines = [
        HEADING,
        "",
        "`python benchmarks/watch_follow.py --steps "
        f"{args.steps}`: the default model (SmolLM2-135M-Instruct, served float32) followed "
        "through `--watch-dir`; the step directory written by this process on the same disk "
        "(page cache warm). Median of the steps; seconds.",
        "",
        f"Machine: {machine()}. Shared with other jobs while it ran: load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} right after it; figures are upper "
        "bounds.",
        "",
        "```",
        lscpu(),
        "```",
        "",
        "| step directory | MB | write | written → served (poll, 1 s interval) | "
        "written → served (a scoring request arrives) | server load | MB/s (server load) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, size, writes, polled, requested, loads in rows:
        load = statistics.median(loads)
        lines.append(
            f"| {name} safetensors | {size / 1e6:.0f} | {statistics.median(writes):.3f} | "
            f"{statistics.median(polled):.3f} | {statistics.median(requested):.3f} | "
            f"{load:.3f} | {size / 1e6 / load:.0f} |"
        )
    lines.append("")
    section = "\n".join(lines)
    old = (
        args.output.read_text() if args.output.exists() else "# Following the trainer's weights\n\n"
    )
    if HEADING in old:
        head, _, rest = old.partition(HEADING)
        after = rest.find("\n## ")
        old = head + (rest[after + 1 :] if after >= 0 else "")
    text = old.rstrip("\n") + "\n\n" + section
    print(section)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
