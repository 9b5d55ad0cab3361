"""benchmarks/gpu_check.py, the one command for a lent CUDA machine, run end to end on CPU with
tiny configs: the real script as a subprocess, its real parts (engines, a `vigor-serve` process,
a Gloo group), and the markdown it writes. A GPU is never available to CI; this keeps the check
from rotting between the rare runs on one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _run(tmp_path: Path, *args: str, timeout: float = 1000):
    out = tmp_path / "gpu_check.md"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return run, out.read_text() if out.exists() else ""


def _table(md: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`, as cells."""
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


@pytest.mark.slow
def test_tiny_check_runs_every_part_and_writes_its_tables(tmp_path):
    run, md = _run(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert md.startswith("# GPU check (tiny configs, CI)")

    parts = {r[0]: r[1] for r in _table(md, "# GPU check")}
    assert parts == {"exact": "done", "speed": "done", "transfer": "done"}, md

    exact = {r[1]: r for r in _table(md, "## Exactness")}
    assert set(exact) == {"float32", "bfloat16"}
    assert all(r[-1] == "PASS" for r in exact.values()), md
    assert float(exact["float32"][3]) <= 1e-4  # batched vs loop in float32

    speed = _table(md, "## Speed and peak memory")
    shapes = {(r[0], r[2]) for r in speed}
    assert shapes == {(s, f"4×{t} (4)") for s in ("tiny-tied", "tiny-untied") for t in (8, 24)}
    number = re.compile(r"^\d+\.\d\d$")  # seconds
    for r in speed:
        assert all(number.match(c) for c in (r[3], r[5], r[6])), r  # floor, batched, loop
        assert float(r[4]) >= float(r[3])  # the exact floor is above the floor
        assert r[7].endswith("×") and r[8].endswith("×"), r

    transfer = {r[0].split(",")[0]: r for r in _table(md, "## Weights to a server")}
    assert set(transfer) == {"HTTP push_weights", "Gloo transfer", "NCCL transfer"}
    for path in ("HTTP push_weights", "Gloo transfer"):
        r = transfer[path]
        assert float(r[3].replace(",", "")) > 0 and r[4] == "yes", r  # MB/s, scores changed
    assert transfer["NCCL transfer"][4] == "skipped: no CUDA"


def test_a_part_past_its_time_bound_is_stopped_and_reported(tmp_path):
    # One second is less than the part's process needs to import torch: it is always stopped.
    run, md = _run(tmp_path, "--parts", "exact", "--bound", "exact=1", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| exact | stopped at its time bound of 1 s |" in md
    assert "speed" not in md.split("## Exactness")[0]  # only the part asked for ran
    assert _table(md, "## Exactness") == []  # no rows were finished


def test_a_bad_bound_names_the_flag_and_the_parts(tmp_path):
    run, md = _run(tmp_path, "--bound", "warp=3", timeout=60)
    assert run.returncode == 2 and md == ""
    assert "--bound 'warp=3'" in run.stderr and "'exact', 'speed', 'transfer'" in run.stderr
