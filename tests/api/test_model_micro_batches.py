"""/v1/model reports the micro-batch policy and the memory the engine measured, on a real server."""

from __future__ import annotations

import httpx
import torch

from vigor_service.settings import CPU_BATCH_TOKENS, CUDA_BATCH_TOKENS

from ..weights.helpers import scores, tiny_server


def micro_batches(url: str) -> dict:
    return httpx.get(url + "/v1/model", timeout=30).json()["micro_batches"]


def test_default_is_the_loops_memory_with_the_measured_bytes():
    ceiling = CUDA_BATCH_TOKENS if torch.cuda.is_available() else CPU_BATCH_TOKENS
    with tiny_server() as srv:
        info = micro_batches(srv.url)
        assert info["policy"] == "loop_memory" and info["max_batch_tokens"] == ceiling
        # Measured at warm-up on 128-token probe rows (the tiny model's whole context).
        assert info["measured"] is True and info["probe_tokens"] == 128
        assert info["bytes_per_token"] > 0 and info["logit_bytes_per_token"] > 0
        assert scores(srv.url)[1]


def test_an_explicit_budget_is_reported_as_such():
    with tiny_server(max_batch_tokens=300) as srv:
        info = micro_batches(srv.url)
        assert info["policy"] == "max_batch_tokens" and info["max_batch_tokens"] == 300
        assert info["measured"] is True


def test_the_loop_engine_has_no_micro_batches():
    with tiny_server(engine="loop") as srv:
        assert micro_batches(srv.url) is None
