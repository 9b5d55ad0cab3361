"""The demo's pieces that run without training: arguments, data, plot (the run itself is the
GRPO test in tests/client/integrations/test_trl.py and the recorded docs/demo_run.log)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "trl_grpo_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("trl_grpo_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_cpu_friendly(demo, monkeypatch):
    monkeypatch.setenv("VIGOR_URL", "http://10.0.0.1:9000")
    args = demo.parse_args([])
    assert args.server_url == "http://10.0.0.1:9000" and args.checkpoints_dir is None
    assert args.steps * args.prompts_per_step * args.num_generations <= 64
    assert args.max_completion_length <= 64


def test_data_ships_with_its_licence(demo):
    data = ROOT / "examples" / "data"
    assert "MIT License" in (data / "GSM8K_LICENSE").read_text()
    rows = [json.loads(line) for line in (data / "gsm8k_subset.jsonl").read_text().splitlines()]
    assert len(rows) >= 32 and all(r["question"] for r in rows)
    prompts = demo.load_prompts(str(data / "gsm8k_subset.jsonl"), seed=0)
    assert len(prompts) == len(rows)
    first = prompts[0]["prompt"][0]
    assert first["role"] == "user" and "####" in first["content"]


def test_plot_writes_a_png(demo, tmp_path):
    pytest.importorskip("matplotlib")
    rows = [
        {
            "step": s,
            "reward": 0.0,
            "score": -70.0 + s,
            "self_certainty": 10.0,
            "entropy": 2.0 - 0.1 * s,
            "length": 30.0,
            "scored_version": s - 1,
            "served_version": s,
            "step_seconds": 60.0,
            "score_seconds": 10.0,
            "sync_seconds": 2.0,
        }
        for s in (1, 2, 3)
    ]
    out = tmp_path / "plot.png"
    demo.plot(rows, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
