"""Shared pieces of the batched-engine tests: sequences, the naive oracle over a list, errors."""

from __future__ import annotations

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.params import scored_parameters
from vigor_service.engine.types import SequenceScore, TokenSequence

from ..naive import naive_grad_norm
from ..tiny_models import tiny_gpt2

# Tied GPT-2 (Conv1D, LayerNorm, learned positions) next to the Llama/Qwen2 builders.
GPT2 = {"gpt2-tied": lambda **kw: tiny_gpt2(tied=True, **kw)}


def flatten(groups) -> list[TokenSequence]:
    return [TokenSequence(tuple(p), tuple(c)) for p, comps in groups for c in comps]


def score(model, seqs, engine=None, **kw) -> list[SequenceScore]:
    params = [p for _, p in scored_parameters(model)]
    return (engine or BatchedEngine()).score(model, params, seqs, **kw)


def naive(model, seqs, lora_only=None) -> list[float | None]:
    return [
        naive_grad_norm(model, s.prompt_ids, s.completion_ids, lora_only=lora_only) for s in seqs
    ]


def max_rel_err(got: list[SequenceScore], want: list[float | None]) -> float:
    """Largest relative error; an empty completion must come back as None on both sides."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g.grad_norm is None and g.num_tokens == 0
        else:
            worst = max(worst, abs(g.grad_norm - w) / w)
    return worst
