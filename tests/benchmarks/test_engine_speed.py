"""engine_speed.py's exact floor: the norm GEMMs it times must be the work they claim to be.

Each linear layer's operands are random, but the sum it returns is checked against a naive
float64 Σ‖BᵀA‖² over the same operands, in both the ghost and the direct branch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ..tiny_models import VOCAB, tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import engine_speed


def _naive(model, sequences, budget) -> float:
    from vigor_service.engine.microbatch import pack

    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = 0.0
    for group in pack(sequences, budget):
        rows = len(group)
        length = max(sequences[i].length for i in group)
        span = max(sequences[i].num_tokens for i in group)
        for m in linears:
            d_out, d_in = m.weight.shape
            n = span if m is head else length
            key = (rows, n, d_in, torch.float64, "cpu")
            a = engine_speed.GEMM_INPUTS[(*key, "a")]
            b = engine_speed.GEMM_INPUTS[(rows, n, d_out, torch.float64, "cpu", "b")]
            for r in range(rows):
                total += float((b[r].T @ a[r]).pow(2).sum())
    return total


@pytest.mark.parametrize(
    ("prompt", "completion", "form"),
    [(4, 6, "ghost"), (4, 60, "direct")],  # N·(d_in + d_out) below / above d_in·d_out
)
def test_norm_gemms_sum_is_the_per_sample_weight_gradient_norms(prompt, completion, form):
    model = tiny_llama(tied=False, dtype=torch.float64)
    seqs = engine_speed._sequences(VOCAB, 3, prompt, completion, seed=0)
    n = max(s.length for s in seqs)
    chosen = "ghost" if n * (32 + 48) < 32 * 48 else "direct"
    assert chosen == form  # the case covers the branch it names
    engine_speed.GEMM_INPUTS.clear()
    got = engine_speed.norm_gemms(model, seqs, max_batch_tokens=2 * n)  # two micro-batches
    assert got == pytest.approx(_naive(model, seqs, 2 * n), rel=1e-12)
    engine_speed.GEMM_INPUTS.clear()
