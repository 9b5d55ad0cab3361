"""Fuzz the public routes from the service's own OpenAPI schema: no input may produce a 5xx.

    python benchmarks/fuzz_api.py [--max-examples 40]

Starts `vigor-serve` on the default model (loopback, free port), runs schemathesis with the
`not_a_server_error` check over /v1/rewards, /v1/model, /get_reward, /health and /ready, and
writes the summary to benchmarks/results/fuzz.md. Needs `pip install schemathesis` (not a
dependency of the package). Bounded: a fixed example count per operation and a time budget.

schemathesis gets the service's own schema with two changes, both for answers that are the
specified behaviour rather than failures (each has its own test in tests/api/):
- `wait_s` is capped at WAIT_CAP_S: a valid request may wait up to 600 s for a weight version
  that never comes (then 409), which would outlast the client's 10 s request timeout;
- `deadline_s` is at least DEADLINE_FLOOR_S: a deadline that passes before scoring starts is
  answered 504 by design, which the not_a_server_error check would count as a server error.
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
DEADLINE_FLOOR_S = 60.0


def fuzz_schema(url: str, path: Path) -> Path:
    """The served OpenAPI schema, `wait_s` ≤ WAIT_CAP_S and `deadline_s` ≥ DEADLINE_FLOOR_S."""
    import httpx

    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    found = set()
    for model in schema.get("components", {}).get("schemas", {}).values():
        props = model.get("properties", {})
        if "wait_s" in props:
            props["wait_s"]["maximum"] = WAIT_CAP_S
            found.add("wait_s")
        if "deadline_s" in props:
            # Optional number: {"anyOf": [{"type": "number", ...}, {"type": "null"}]}
            for option in props["deadline_s"].get("anyOf", [props["deadline_s"]]):
                if option.get("type") == "number":
                    option.pop("exclusiveMinimum", None)
                    option["minimum"] = DEADLINE_FLOOR_S
                    found.add("deadline_s")
    if found != {"wait_s", "deadline_s"}:
        raise SystemExit(f"schema fields changed (found {sorted(found)}): update fuzz_schema()")
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
        f"served schema with wait_s ≤ {WAIT_CAP_S:g} s and deadline_s ≥ {DEADLINE_FLOOR_S:g} s)"
        "\n\n"
        f"Exit code: {run.returncode} ({'no 5xx found' if run.returncode == 0 else 'FAILURES'}), "
        f"{wall:.0f} s\n\n```\n{output[-6000:]}\n```\n"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
