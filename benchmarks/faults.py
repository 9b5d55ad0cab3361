"""Faults the service must survive, each run against a real server and its outcome printed.

    python benchmarks/faults.py

1. a client killed mid-push (after one bucket)     4. SIGTERM while a request is running
2. a corrupt bucket pushed                          5. out-of-memory in the engine (simulated)
3. a truncated checkpoint reloaded

After every fault the same probe request must return exactly the scores it returned before, on
the same weight version. Traffic goes to 127.0.0.1 only. Results: benchmarks/results/faults.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.servers import ProcessServer  # noqa: E402

TOKEN = "faults-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBE = {"groups": [{"prompt": "Q: 2 + 2 = ?\nA:", "completions": [" 4", " 5", " four"]}]}
LONG = {"groups": [{"prompt_ids": [1] * 64, "completion_ids": [[5] * 300] * 4}]}


def probe(url):
    r = httpx.post(url + "/v1/rewards", json=PROBE, timeout=300)
    r.raise_for_status()
    body = r.json()
    return body["weight_version"], body["groups"][0]["scores"]


def staged_bytes(url) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("vigor_weight_staged_bytes "):
            return float(line.split()[1])
    return float("nan")


KILLED_PUSHER = """
import sys, httpx, torch
from safetensors.torch import save
url, token = sys.argv[1], sys.argv[2]
h = {"Authorization": "Bearer " + token}
up = httpx.post(url + "/admin/weights/uploads", headers=h, timeout=30).json()["upload_id"]
body = save({"model.norm.weight": torch.ones(576)})
httpx.post(f"{url}/admin/weights/uploads/{up}/buckets", content=body, headers=h, timeout=30)
print("bucket sent", flush=True)
import time; time.sleep(600)
"""


def fault_killed_client(url, baseline):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUSHER, url, TOKEN], stdout=subprocess.PIPE, text=True
    )
    proc.stdout.readline()
    held = staged_bytes(url)
    proc.kill()
    proc.wait()
    after_kill = probe(url)
    time.sleep(4.5)  # the server runs with --upload-ttl-s 3
    return {
        "staged bytes while the client lived": held,
        "scores right after the kill unchanged": after_kill == baseline,
        "staged bytes after the TTL": staged_bytes(url),
    }


def fault_corrupt_bucket(url, baseline):
    up = httpx.post(url + "/admin/weights/uploads", headers=AUTH, timeout=30).json()["upload_id"]
    r = httpx.post(
        f"{url}/admin/weights/uploads/{up}/buckets",
        content=b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
        headers=AUTH,
        timeout=30,
    )
    httpx.delete(f"{url}/admin/weights/uploads/{up}", headers=AUTH, timeout=30)
    return {
        "status": r.status_code,
        "message": r.json()["error"]["message"][:160],
        "scores unchanged": probe(url) == baseline,
    }


def fault_truncated_reload(url, baseline, model_dir: Path):
    bad = Path(tempfile.mkdtemp()) / "truncated"
    shutil.copytree(model_dir, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    r = httpx.post(
        url + "/admin/weights/reload", json={"path": str(bad)}, headers=AUTH, timeout=300
    )
    shutil.rmtree(bad.parent)
    return {
        "status": r.status_code,
        "message": r.json()["error"]["message"][:160],
        "scores unchanged": probe(url) == baseline,
    }


def fault_sigterm(log_dir: Path):
    server = ProcessServer("--drain-timeout-s", "120")
    server.start(log_dir / "sigterm.log")
    out = {}
    t = threading.Thread(
        target=lambda: out.setdefault(
            "r", httpx.post(server.url + "/v1/rewards", json=LONG, timeout=300)
        )
    )
    t.start()
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(server.url + "/ready", timeout=10).status_code
    t.join(300)
    code = server.proc.wait(120)
    return {
        "/ready after SIGTERM": ready,
        "in-flight request": out["r"].status_code,
        "exit code": code,
    }


def fault_oom(model_dir: Path):
    """The real engine and scheduler in-process, the engine raising OOM above 2 sequences."""
    import asyncio

    import torch

    from vigor_service.engine.factory import make_engine
    from vigor_service.models.loader import load_model
    from vigor_service.scoring.scheduler import Scheduler
    from vigor_service.serving import EngineWorker, ServedModel

    served = ServedModel(
        load_model(str(model_dir), cache_dir=model_dir, device="cpu", dtype="float32"),
        make_engine("batched", max_batch_tokens=8192, gradient_checkpointing=False),
    )
    from vigor_service.engine.types import TokenSequence

    seqs = [TokenSequence((1, 2, 3), tuple(range(10, 10 + n))) for n in (5, 9, 7, 3, 11)]
    calls = []

    def flaky(s, signals, temperature):
        calls.append(len(s))
        if len(s) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return served.score(s, signals, temperature), 0

    async def go():
        worker = EngineWorker()
        sched = Scheduler(worker, flaky, batch_window_s=0.0)
        sched.start()
        try:
            return await sched.submit(seqs)
        finally:
            await sched.stop()
            worker.shutdown()

    split = asyncio.run(go())
    whole = served.score(seqs, (), 1.0)
    # float32: another batch composition changes BLAS blocking, so equal means within 1e-4.
    rel = max(
        abs(a.grad_norm - b.grad_norm) / b.grad_norm
        for a, b in zip(split.scores, whole, strict=True)
    )
    return {
        "engine calls (sequences per call)": calls,
        "max relative difference to an unsplit pass (float32)": rel,
        "results equal an unsplit pass within 1e-4": rel <= 1e-4,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--output", type=Path, default=HERE / "results" / "faults.md")
    out = ap.parse_args().output
    from vigor_service.models.default_model import prepare_default_model
    from vigor_service.settings import default_cache_dir

    model_dir = prepare_default_model(default_cache_dir())
    log_dir = Path(tempfile.mkdtemp())
    server = ProcessServer("--admin-token", TOKEN, "--upload-ttl-s", "3")
    server.start(log_dir / "server.log")
    results = {}
    try:
        baseline = probe(server.url)
        results["1. client killed mid-push"] = fault_killed_client(server.url, baseline)
        results["2. corrupt bucket"] = fault_corrupt_bucket(server.url, baseline)
        results["3. truncated checkpoint reload"] = fault_truncated_reload(
            server.url, baseline, model_dir
        )
    finally:
        server.stop()
    results["4. SIGTERM mid-request"] = fault_sigterm(log_dir)
    results["5. out of memory (simulated)"] = fault_oom(model_dir)
    text = json.dumps(results, indent=2)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Faults survived\n\nCommand: `python benchmarks/faults.py`\n\n```json\n"
        + text
        + "\n```\n"
    )
    # Every yes/no check (scores unchanged, ...) must hold; the rest are observations.
    checks = [v for r in results.values() for v in r.values() if isinstance(v, bool)]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
