"""Fuzz the public routes from the service's own OpenAPI schema: no input may produce a 5xx.

    python benchmarks/fuzz_api.py [--max-examples 40]

Starts `vigor-serve` on the default model (loopback, free port), runs schemathesis with the
`not_a_server_error` check over /v1/rewards, /v1/model, /get_reward, /health and /ready, and
writes the summary to benchmarks/results/fuzz.md. Needs `pip install schemathesis` (not a
dependency of the package). Bounded: a fixed example count per operation and a time budget.

schemathesis gets the service's own schema with one change: `wait_s` is capped at WAIT_CAP_S.
A valid request may wait up to 600 s for a weight version that never comes (then 409); that is
a long poll, not a failure, but it would outlast the client's 10 s request timeout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.servers import ProcessServer  # noqa: E402

PUBLIC = r"^/(v1/rewards|v1/model|get_reward|health|ready)$"
WAIT_CAP_S = 5.0


def fuzz_schema(url: str, path: Path) -> Path:
    """The served OpenAPI schema with every `wait_s` capped at WAIT_CAP_S."""
    import httpx

    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    capped = 0
    for model in schema.get("components", {}).get("schemas", {}).values():
        wait = model.get("properties", {}).get("wait_s")
        if wait is not None:
            wait["maximum"] = min(wait.get("maximum", WAIT_CAP_S), WAIT_CAP_S)
            capped += 1
    if not capped:
        raise SystemExit("no wait_s field in the schema: update fuzz_schema()")
    path.write_text(json.dumps(schema))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-examples", type=int, default=40)
    p.add_argument("--max-time", type=int, default=600, help="seconds for the whole run")
    p.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.md")
    args = p.parse_args()
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(exe).exists():
        print("schemathesis is not installed: pip install schemathesis", file=sys.stderr)
        return 2
    server = ProcessServer("--max-sequence-tokens", "512")
    work = Path(tempfile.mkdtemp())
    server.start(work / "server.log")
    t0 = time.monotonic()
    try:
        schema = fuzz_schema(server.url, work / "openapi.json")
        cmd = [
            exe, "run", str(schema), "--url", server.url,
            "--checks", "not_a_server_error",
            "--include-path-regex", PUBLIC,
            "--max-examples", str(args.max_examples),
            "--max-time", str(args.max_time),
            "--phases", "examples,coverage,fuzzing",
            "--workers", "2",
            "--suppress-health-check", "all",
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        server.stop()
    wall = time.monotonic() - t0
    output = (run.stdout + run.stderr).strip()
    print(output)
    names = {server.url: "http://127.0.0.1:PORT", str(schema): "openapi.json"}
    shown = " ".join(names.get(c, c) for c in ["schemathesis", *cmd[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Fuzzing the public routes (schemathesis, not_a_server_error)\n\n"
        f"Command: `python benchmarks/fuzz_api.py --max-examples {args.max_examples}` "
        f"(runs `{shown}` against vigor-serve on the default model; openapi.json is the "
        f"served schema with wait_s capped at {WAIT_CAP_S:g} s)\n\n"
        f"Exit code: {run.returncode} ({'no 5xx found' if run.returncode == 0 else 'FAILURES'}), "
        f"{wall:.0f} s\n\n```\n{output[-6000:]}\n```\n"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
