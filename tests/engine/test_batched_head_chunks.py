"""The chunked completion head + loss against the unchunked one and the naive float64 oracle.

Chunk sizes are in logits elements: the forward takes elements // vocab rows at a time (so 3·V
splits every completion longer than 3 tokens mid-way), the backward elements // tokens vocabulary
columns at a time (so small budgets cut the vocabulary, and the target and tied-id columns, into
many slices).
"""

from __future__ import annotations

import pytest
import torch

from vigor_service.engine import head as head_module
from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.signals import SIGNALS

from ..tiny_models import TINY_MODELS, VOCAB, random_groups
from .helpers import GPT2, flatten, max_rel_err, naive, score

MODELS = {**TINY_MODELS, **GPT2}
SEQS = flatten(
    random_groups(seed=5, prompt_lens=(5, 3, 2), completion_lens=((4, 9, 0, 1), (6,), (11, 2)))
)
NAMES = tuple(sorted(SIGNALS))


def _chunks_taken(monkeypatch) -> list[int]:
    """Record the forward's row-chunk count per pass, proving the chunked path ran."""
    seen: list[int] = []
    real = head_module.ChunkedHeadNLL.forward

    def forward(ctx, h, targets, weights, run):
        rows = max(1, run.elements // run.head.out_features)
        seen.append(-(-h.shape[0] * h.shape[1] // rows))
        return real(ctx, h, targets, weights, run)

    monkeypatch.setattr(head_module.ChunkedHeadNLL, "forward", staticmethod(forward))
    return seen


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("form", ["auto", "ghost", "direct"])
@pytest.mark.parametrize("elements", [3 * VOCAB, 5 * VOCAB + 7, 64])
def test_chunked_equals_unchunked_and_naive_in_float64(name, form, elements, monkeypatch):
    model = MODELS[name]()
    kw = {"signals": NAMES, "temperature": 0.8}
    plain = score(model, SEQS, BatchedEngine(force_form=form, head_chunk_elements=0), **kw)
    seen = _chunks_taken(monkeypatch)
    chunked = score(model, SEQS, BatchedEngine(force_form=form, head_chunk_elements=elements), **kw)
    assert seen and all(n > 1 for n in seen)
    assert max_rel_err(chunked, [p.grad_norm for p in plain]) <= 1e-12
    assert max_rel_err(chunked, naive(model, SEQS)) <= 1e-9
    for c, p in zip(chunked, plain, strict=True):
        assert c.num_tokens == p.num_tokens
        assert set(c.signals) == set(NAMES)
        for n in NAMES:
            if p.signals[n] is None:
                assert c.signals[n] is None  # the empty completion
            else:
                assert c.signals[n] == pytest.approx(p.signals[n], rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", ["llama-tied", "qwen2-untied"])
def test_chunked_float32_matches_unchunked(name):
    model = MODELS[name](dtype=torch.float32)
    plain = score(model, SEQS, BatchedEngine(head_chunk_elements=0))
    chunked = score(model, SEQS, BatchedEngine(head_chunk_elements=2 * VOCAB))
    assert max_rel_err(chunked, [p.grad_norm for p in plain]) <= 1e-5


def test_softcapped_head_falls_back_to_unchunked(monkeypatch):
    """A model that transforms the head's output is scored unchunked, and still exactly."""
    model = MODELS["llama-tied"]()
    real = type(model).forward

    def capped(self, *a, **kw):
        out = real(self, *a, **kw)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    monkeypatch.setattr(type(model), "forward", capped)
    engine = BatchedEngine(head_chunk_elements=3 * VOCAB)
    got = score(model, SEQS, engine)
    assert type(model) in engine._unchunkable
    want = score(model, SEQS, BatchedEngine(head_chunk_elements=0))
    assert max_rel_err(got, [w.grad_norm for w in want]) <= 1e-12
    assert "forward" not in model.get_output_embeddings().__dict__


def test_negative_chunk_size_is_refused():
    with pytest.raises(ValueError, match="head_chunk_elements"):
        BatchedEngine(head_chunk_elements=-1)
