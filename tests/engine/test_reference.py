"""The per-completion reference engine against the naive float64 oracle."""

import pytest
import torch

from vigor_service.engine.params import scored_parameters
from vigor_service.engine.reference import ReferenceEngine
from vigor_service.engine.types import TokenSequence

from ..naive import naive_grad_norm
from ..tiny_models import TINY_MODELS, random_groups, tiny_gpt2

MODELS = {**TINY_MODELS, "gpt2": lambda **kw: tiny_gpt2(**kw)}


def _score(model, seqs):
    params = [p for _, p in scored_parameters(model)]
    return ReferenceEngine().score(model, params, seqs)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_reference_matches_naive(name, dtype, tol):
    model = MODELS[name](dtype=dtype)
    for prompt, completions in random_groups(seed=1):
        seqs = [TokenSequence(tuple(prompt), tuple(c)) for c in completions]
        got = _score(model, seqs)
        for seq, res in zip(seqs, got, strict=True):
            want = naive_grad_norm(model, seq.prompt_ids, seq.completion_ids)
            assert res.num_tokens == len(seq.completion_ids)
            if want is None:
                assert res.grad_norm is None
            else:
                assert res.grad_norm == pytest.approx(want, rel=tol)


def test_requires_grad_flags_restored():
    model = TINY_MODELS["llama-tied"]()
    model.model.norm.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    _score(model, [TokenSequence((1, 2), (3, 4))])
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())
