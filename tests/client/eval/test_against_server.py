"""`vigor-eval` on a real server: its AUROC equals a naive pairwise count of the server's scores."""

from __future__ import annotations

import json

import httpx
import pytest

from vigor_client.eval.cli import main

pytestmark = pytest.mark.slow

SHIPPED = "examples/data/gsm8k_eval.jsonl"


def naive_auroc(groups: list[dict], scores: list[list[float]]) -> float:
    """Every (correct, incorrect) pair inside a group, correct higher = 1, tie = ½, pooled."""
    total = pairs = 0.0
    for group, values in zip(groups, scores, strict=True):
        labels = [c["correct"] for c in group["completions"]]
        for i, good in enumerate(labels):
            for j, bad in enumerate(labels):
                if good and not bad:
                    pairs += 1
                    total += 1.0 if values[i] > values[j] else 0.5 if values[i] == values[j] else 0
    return total / pairs


def short_groups(tokenizer, n: int, limit: int = 256) -> list[dict]:
    """The first n shipped groups whose every sequence fits the tiny model's positions."""
    out = []
    with open(SHIPPED) as f:
        for line in f:
            g = json.loads(line)
            prompt = tokenizer.apply_chat_template(
                g["messages"], add_generation_prompt=True, tokenize=False
            )
            p = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            c = max(len(tokenizer(x["text"])["input_ids"]) for x in g["completions"])
            if p + c + 8 <= limit:
                out.append(g)
            if len(out) == n:
                return out
    raise AssertionError(f"only {len(out)} shipped groups fit {limit} tokens")


def test_auroc_equals_a_naive_pairwise_count(served_tiny_chat, default_tokenizer, tmp_path):
    groups = short_groups(default_tokenizer, 5)
    data = tmp_path / "five.jsonl"
    data.write_text("".join(json.dumps(g) + "\n" for g in groups))
    report_path = tmp_path / "report.json"
    argv = [str(data), "--url", served_tiny_chat.url, "--json", str(report_path)]
    rc = main([*argv, "--scores", str(tmp_path / "s.jsonl"), "--no-progress", "--bootstrap", "50"])
    assert rc == 0
    report = json.loads(report_path.read_text())
    # The same groups scored directly, one request, raw VIGOR scores (higher = better).
    body = {
        "groups": [
            {"messages": g["messages"], "completions": [c["text"] for c in g["completions"]]}
            for g in groups
        ],
        "shaping": "none",
    }
    r = httpx.post(served_tiny_chat.url + "/v1/rewards", json=body, timeout=120)
    assert r.status_code == 200, r.text
    scores = [g["scores"] for g in r.json()["groups"]]
    assert report["signals"]["vigor"]["auroc"] == pytest.approx(naive_auroc(groups, scores))
    assert report["signals"]["vigor"]["pairs"] == sum(
        sum(c["correct"] for c in g["completions"])
        * sum(not c["correct"] for c in g["completions"])
        for g in groups
    )
