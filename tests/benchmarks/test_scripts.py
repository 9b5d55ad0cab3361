"""The benchmark scripts are not run by the tests (their figures are committed), but they must
still start: an import or argument error would only surface when someone reruns them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def test_every_script_is_listed():
    assert {"engine_speed.py", "engine_profile.py", "load.py", "fuzz_api.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts_and_explains_itself(script):
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage:") and "python benchmarks/" in run.stdout
