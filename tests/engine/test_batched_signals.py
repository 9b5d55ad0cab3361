"""Each signal of the batched engine against a direct, naive computation from a plain forward."""

from __future__ import annotations

import math

import pytest
import torch

from vigor_service.engine.batched import BatchedEngine

from ..tiny_models import TINY_MODELS, random_groups
from .helpers import flatten, score

SEQS = flatten(random_groups(seed=13))
TEMPERATURE = 0.7


def _direct(model, seq, name):
    """Straight from the definitions, one position at a time, in float64."""
    ids = torch.tensor([seq.prompt_ids + seq.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits[0]
    values = []
    for t, tok in enumerate(seq.completion_ids):
        row = logits[len(seq.prompt_ids) - 1 + t].double() / TEMPERATURE
        logp = row - torch.logsumexp(row, 0)
        values.append(
            {
                "logprob": logp[tok].item(),
                "entropy": -(logp.exp() * logp).sum().item(),
                "kl_uniform": (torch.logsumexp(row, 0) - row.mean() - math.log(row.numel())).item(),
            }
        )
    mean = lambda key: sum(v[key] for v in values) / len(values)  # noqa: E731
    return {
        "logprob_sum": sum(v["logprob"] for v in values),
        "logprob_mean": mean("logprob"),
        "entropy_mean": mean("entropy"),
        "self_certainty": mean("kl_uniform"),
        "perplexity": math.exp(-mean("logprob")),
        "prob_mean": sum(math.exp(v["logprob"]) for v in values) / len(values),
    }[name]


@pytest.mark.parametrize(
    "name",
    ["logprob_sum", "logprob_mean", "entropy_mean", "self_certainty", "perplexity", "prob_mean"],
)
def test_signal_matches_direct_computation(name):
    model = TINY_MODELS["qwen2-tied"]()
    got = score(
        model, SEQS, BatchedEngine(max_batch_tokens=20), signals=(name,), temperature=TEMPERATURE
    )
    for seq, res in zip(SEQS, got, strict=True):
        assert set(res.signals) == {name}
        if seq.num_tokens == 0:
            assert res.signals[name] is None
        else:
            assert res.signals[name] == pytest.approx(_direct(model, seq, name), rel=1e-9)


def test_no_signals_asked_none_computed(monkeypatch):
    import vigor_service.engine.batched as batched

    def fail(*args, **kwargs):
        raise AssertionError("signal maths ran although none was asked for")

    monkeypatch.setattr(
        batched, "compute_signals", lambda lg, tg, names, t: fail() if names else {}
    )
    got = score(TINY_MODELS["llama-tied"](), SEQS)
    assert all(r.signals == {} for r in got if r.num_tokens)
