"""Fuzz the public routes from the service's own OpenAPI schema: no input may produce a 5xx.

    python benchmarks/fuzz_api.py [--max-examples 40]

Starts `vigor-serve` on the default model (loopback, free port), runs schemathesis with the
`not_a_server_error` check over /v1/rewards, /v1/model, /get_reward, /health and /ready, and
writes the summary to benchmarks/results/fuzz.md. Needs `pip install schemathesis` (not a
dependency of the package). Bounded: a fixed example count per operation and a time budget.
"""

from __future__ import annotations

import argparse
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
    server.start(Path(tempfile.mkdtemp()) / "server.log")
    t0 = time.monotonic()
    try:
        cmd = [
            exe, "run", f"{server.url}/openapi.json",
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
    shown = " ".join(
        c if not c.startswith("http") else "http://127.0.0.1:PORT/openapi.json"
        for c in ["schemathesis", *cmd[1:]]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Fuzzing the public routes (schemathesis, not_a_server_error)\n\n"
        f"Command: `python benchmarks/fuzz_api.py --max-examples {args.max_examples}` "
        f"(runs `{shown}` against vigor-serve on the default model)\n\n"
        f"Exit code: {run.returncode} ({'no 5xx found' if run.returncode == 0 else 'FAILURES'}), "
        f"{wall:.0f} s\n\n```\n{output[-6000:]}\n```\n"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
