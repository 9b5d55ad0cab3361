"""Fuzz the routes from the service's own OpenAPI schema: no input may produce a 5xx.

    python benchmarks/fuzz_api.py [--max-examples 40] [--max-time 120]

Starts `vigor-serve` on the default model (loopback, free port, an admin token, a temporary
--allowed-weights-dir) and runs schemathesis with the `not_a_server_error` check three times:
- public: /v1/rewards, /v1/model, /get_reward, /health, /ready;
- admin, with the token: every /admin route and the weight-transfer calls after the first
  (start/update/finish/abort/close), in the examples, coverage, fuzzing and stateful phases;
- admin, without the token: every admin operation must answer 401, whatever the body.
`/init_weight_transfer_engine` is left out: it joins a torch.distributed group at the address
its body names, and a fuzzer must not make the server dial random hosts (its own tests drive it,
tests/weights/test_transfer*.py). The summary goes to benchmarks/results/fuzz.md. Needs
`pip install schemathesis` (not a dependency of the package). Bounded: a fixed example count per
operation and a time budget per run. benchmarks/fuzz_weights_stateful.py is the stateful check
of the weight plane's invariants (versions, scores after a refusal).

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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.servers import ProcessServer  # noqa: E402

PUBLIC = r"^/(v1/rewards|v1/model|get_reward|health|ready)$"
ADMIN = (
    r"^/(admin/.*|start_weight_update|update_weights|finish_weight_update|abort_weight_update"
    r"|close_weight_transfer_engine)$"
)
TOKEN = "fuzz-admin-token"
WAIT_CAP_S = 5.0
DEADLINE_FLOOR_S = 60.0
# Two workers share 2 cores with the server: a valid 16-completion group can queue behind the
# other worker's for longer than schemathesis's default 10 s, which it reports as a network error.
REQUEST_TIMEOUT_S = 120


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


def schemathesis_run(
    exe: str, schema: Path, url: str, args, paths: str, phases: str, headers: list[str]
) -> tuple[list[str], subprocess.CompletedProcess]:
    cmd = [
        exe, "run", str(schema), "--url", url,
        "--checks", "not_a_server_error",
        "--include-path-regex", paths,
        "--max-examples", str(args.max_examples),
        "--max-time", str(args.max_time),
        "--phases", phases,
        "--workers", "2",
        "--suppress-health-check", "all",
        "--request-timeout", str(REQUEST_TIMEOUT_S),
    ]  # fmt: skip
    for header in headers:
        cmd += ["--header", header]
    return cmd, subprocess.run(cmd, capture_output=True, text=True)


def admin_without_token(url: str, schema: Path) -> tuple[int, list[str]]:
    """Every admin operation, sent with no token and a junk body: each must answer 401."""

    import httpx

    operations = json.loads(schema.read_text())["paths"]
    checked, wrong = 0, []
    for path, methods in operations.items():
        if not re.fullmatch(ADMIN, path):
            continue
        for method in methods:
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            r = httpx.request(method.upper(), url + concrete, content=b'{"junk": [1, 2',
                              headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
            checked += 1
            if r.status_code != 401:
                wrong.append(f"{method.upper()} {path}: {r.status_code} {r.text[:120]}")
    return checked, wrong


def five_kinds(lines: list[str]) -> list[str]:
    """`METHOD /path STATUS` of each 5xx access-log line (query strings dropped)."""
    kinds = []
    for line in lines:
        m = re.search(r'"([A-Z]+) ([^ ?"]+)[^"]*" (5\d\d)', line)
        kinds.append(" ".join(m.groups()) if m else line[-120:])
    return kinds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-examples", type=int, default=40)
    p.add_argument("--max-time", type=int, default=120, help="seconds for each schemathesis run")
    p.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.md")
    args = p.parse_args()
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(exe).exists():
        print("schemathesis is not installed: pip install schemathesis", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp())
    (work / "weights").mkdir()
    server = ProcessServer(
        "--max-sequence-tokens", "512", "--admin-token", TOKEN,
        "--allowed-weights-dir", str(work / "weights"),
    )  # fmt: skip
    server.start(work / "server.log")
    # /ready answers 503 while the model loads, by design: count from the first fuzzed request.
    loading = len(server.log_path.read_text(errors="replace").splitlines())
    runs = []
    try:
        schema = fuzz_schema(server.url, work / "openapi.json")
        for name, paths, phases, headers in [
            ("public routes", PUBLIC, "examples,coverage,fuzzing", []),
            ("admin routes, with the token", ADMIN, "examples,coverage,fuzzing,stateful",
             [f"Authorization: Bearer {TOKEN}"]),
        ]:  # fmt: skip
            t0 = time.monotonic()
            cmd, run = schemathesis_run(exe, schema, server.url, args, paths, phases, headers)
            runs.append((name, cmd, run, time.monotonic() - t0))
            print(f"== {name}: exit {run.returncode}\n{(run.stdout + run.stderr).strip()}")
        checked, wrong = admin_without_token(server.url, schema)
    finally:
        server.stop()
    access = server.log_path.read_text(errors="replace").splitlines()[loading:]
    fives = [line for line in access if '" 5' in line and "HTTP/1.1" in line]
    print(f"== admin routes, without the token: {checked} operations, {len(wrong)} not 401")
    print("\n".join(wrong))
    names = {server.url: "http://127.0.0.1:PORT", str(schema): "openapi.json", TOKEN: "TOKEN"}
    sections = []
    for name, cmd, run, wall in runs:
        shown = " ".join(names.get(c, c) for c in ["schemathesis", *cmd[1:]])
        shown = shown.replace(TOKEN, "TOKEN")
        output = (run.stdout + run.stderr).strip().replace(server.url, "http://127.0.0.1:PORT")
        verdict = "no 5xx found" if run.returncode == 0 else "FAILURES"
        sections.append(
            f"## {name}\n\n`{shown}`\n\nExit code: {run.returncode} ({verdict}), "
            f"{wall:.0f} s\n\n```\n{output[-5000:]}\n```\n"
        )
    sections.append(
        f"## admin routes, without the token\n\n{checked} operations sent with no token and a "
        f"junk JSON body: {checked - len(wrong)} answered 401"
        + ("" if not wrong else ": FAILURES\n\n" + "\n".join(f"- {w}" for w in wrong))
        + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Fuzzing the routes (schemathesis, not_a_server_error)\n\n"
        f"Command: `python benchmarks/fuzz_api.py --max-examples {args.max_examples} "
        f"--max-time {args.max_time}` against vigor-serve on the default model with an admin "
        f"token; openapi.json is the served schema with wait_s ≤ {WAIT_CAP_S:g} s and "
        f"deadline_s ≥ {DEADLINE_FLOOR_S:g} s. Machine: 2 cores, 24 GiB, no GPU "
        f"({time.strftime('%Y-%m-%d')}).\n\n"
        "5xx answers in the server's access log over all runs (from the first fuzzed request): "
        f"{len(fives)}\n\n"
        + "".join(f"- {n} × `{k}`\n" for k, n in Counter(five_kinds(fives)).most_common())
        + ("\n" if fives else "")
        + "\n".join(sections)
    )
    failed = any(run.returncode for _, _, run, _ in runs) or bool(wrong) or bool(fives)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
