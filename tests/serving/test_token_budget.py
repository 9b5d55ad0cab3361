"""CPU token limits from memory (issue 26, finding 5): one 3072-token sequence of the default model
peaked at 6.6 GB RSS, yet the defaults admitted 8 × 8192 tokens from any client."""

from __future__ import annotations

import httpx
import pytest
import torch

from vigor_service.serving.token_budget import cpu_token_budget, per_token_bytes

from ..tiny_models import tiny_llama

GiB = 1 << 30


def test_per_token_cost_of_the_default_model_matches_its_measured_peaks(default_model):
    # Measured: one sequence of 1024 / 2048 / 3072 tokens peaked at 2.7 / 4.7 / 6.6 GB RSS,
    # ~1.95 GB per 1024 tokens; the config formula must land within 10 % of that slope.
    measured = (6.6e9 - 2.7e9) / 2048
    assert per_token_bytes(default_model) == pytest.approx(measured, rel=0.1)


def test_the_budget_follows_memory_and_stays_within_the_context():
    model = tiny_llama(tied=True, dtype=torch.float32)
    per_token = per_token_bytes(model)
    weights = sum(p.numel() * 4 for p in model.parameters())
    memory = 2 * (2 * weights + 300 * per_token)  # half of it holds the weights twice + 300
    small = cpu_token_budget(model, context=4096, memory_bytes=memory)
    assert small.max_sequence_tokens == 300 and small.max_request_tokens == 8 * 300
    big = cpu_token_budget(model, context=4096, memory_bytes=1 << 40)
    assert big.max_sequence_tokens == 4096 and big.max_request_tokens == 65536
    # A short context caps each sequence, not the request: a group of many short sequences
    # must still fit (a 256-token model once refused 5 GSM8K groups in one request).
    short = cpu_token_budget(model, context=256, memory_bytes=1 << 40)
    assert short.max_sequence_tokens == 256 and short.max_request_tokens == 65536
    huge_context = cpu_token_budget(model, context=1 << 20, memory_bytes=1 << 44)
    assert huge_context.max_request_tokens == 65536  # never above the CUDA default
    tiny = cpu_token_budget(model, context=4096, memory_bytes=1)
    assert tiny.max_sequence_tokens == 256  # a floor, not zero


@pytest.mark.slow
def test_the_default_server_reports_and_enforces_its_cpu_limits(served_default, default_model):
    info = httpx.get(served_default.url + "/v1/model", timeout=30).json()
    if info["device"] != "cpu":
        pytest.skip("the CPU defaults apply on CPU")
    limits = info["limits"]
    want = cpu_token_budget(default_model, context=default_model.config.max_position_embeddings)
    assert limits["max_sequence_tokens"] == want.max_sequence_tokens
    assert limits["max_request_tokens"] == want.max_request_tokens
    if want.memory_bytes < 30 * GiB:  # on this size of machine the context is out of reach
        assert limits["max_sequence_tokens"] < default_model.config.max_position_embeddings
        assert limits["max_request_tokens"] < 65536
    n = limits["max_sequence_tokens"]
    body = {"groups": [{"prompt_ids": [1] * n, "completion_ids": [[2]]}]}
    r = httpx.post(served_default.url + "/v1/rewards", json=body, timeout=30)
    assert r.status_code == 422 and f"max_sequence_tokens={n}" in r.text, r.text
