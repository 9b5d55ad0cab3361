"""The batched engine under the planner: exact whatever the plan, caps honoured, memory measured.

float64 tiny models, so every plan (rows grouped differently, head chunked or not) must give the
same numbers to rounding, and the naive oracle's to 1e-9.
"""

from __future__ import annotations

import pytest
import torch

from vigor_service.engine import head as head_module
from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.footprint import peak_bytes
from vigor_service.engine.params import scored_parameters
from vigor_service.engine.plan import Planner, Shapes
from vigor_service.engine.types import TokenSequence

from ..tiny_models import TINY_MODELS, VOCAB, random_groups, tiny_llama
from .helpers import GPT2, flatten, max_rel_err, naive, score

MODELS = {**TINY_MODELS, **GPT2}
SEQS = flatten(
    random_groups(
        seed=11, prompt_lens=(5, 3, 2, 7), completion_lens=((4, 9, 0, 1), (6,), (11, 2), (3, 8))
    )
)


def planned(engine: BatchedEngine, monkeypatch) -> list:
    """Record every micro-batch plan the engine asks for."""
    seen: list = []
    real = engine._batches

    def spy(*args):
        out = real(*args)
        seen.append(out)
        return out

    monkeypatch.setattr(engine, "_batches", spy)
    return seen


def chunked_passes(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = head_module.ChunkedHeadNLL.forward

    def forward(ctx, h, targets, weights, run):
        seen.append(h.shape[0])
        return real(ctx, h, targets, weights, run)

    monkeypatch.setattr(head_module.ChunkedHeadNLL, "forward", staticmethod(forward))
    return seen


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_are_the_same_under_every_plan(name):
    model = MODELS[name]()
    want = naive(model, SEQS)
    legacy = score(model, SEQS, BatchedEngine())
    assert max_rel_err(legacy, want) <= 1e-9
    reference = [s.grad_norm for s in legacy]
    engines = [BatchedEngine(budget="loop"), BatchedEngine(max_batch_tokens=8, budget="loop")]
    engines += [BatchedEngine(max_batch_tokens=b, budget="tokens") for b in (1, 12, 30, 1000)]
    engines += [BatchedEngine(max_batch_tokens=30, budget="tokens", head_chunk_elements=0)]
    for engine in engines:
        got = score(model, SEQS, engine, signals=("perplexity",))
        assert max_rel_err(got, reference) <= 1e-12, engine.describe()
        assert engine.footprint is not None and engine.footprint.measured


def test_an_explicit_budget_stays_a_hard_budget(monkeypatch):
    model = tiny_llama(tied=True)
    engine = BatchedEngine(max_batch_tokens=20, budget="tokens")
    plans = planned(engine, monkeypatch)
    score(model, SEQS, engine)
    (batches,) = plans
    todo = [s for s in SEQS if s.num_tokens]
    assert sorted(i for mb in batches for i in mb.rows) == list(range(len(todo)))
    assert any(len(mb.rows) > 1 for mb in batches)
    for mb in batches:
        longest = max(todo[i].length for i in mb.rows)
        assert len(mb.rows) == 1 or len(mb.rows) * longest <= 20


def test_the_head_is_chunked_only_when_its_logits_would_not_fit(monkeypatch):
    model = tiny_llama(tied=True)
    same = [TokenSequence((1, 2, 3), tuple(range(4 + k, 14 + k))) for k in range(4)]  # 13 tokens
    # A budget of exactly the rows' tokens: chunked they fit, the logits on top do not.
    tight = BatchedEngine(max_batch_tokens=4 * 13, budget="tokens")
    roomy = BatchedEngine(max_batch_tokens=4 * 13 * 8, budget="tokens")
    want = naive(model, same)
    passes = chunked_passes(monkeypatch)
    plans = planned(roomy, monkeypatch)
    assert max_rel_err(score(model, same, roomy), want) <= 1e-9
    assert [(len(mb.rows), mb.chunked) for mb in plans[0]] == [(4, False)]
    assert passes == []  # one GEMM for the head, no recompute in the backward
    plans = planned(tight, monkeypatch)
    assert max_rel_err(score(model, same, tight), want) <= 1e-9
    assert [(len(mb.rows), mb.chunked) for mb in plans[0]] == [(4, True)]
    assert passes == [4]


def test_a_lone_row_under_the_loop_cap_is_scored_unchunked(monkeypatch):
    model = tiny_llama(tied=True)
    long = [TokenSequence(tuple(range(1, 40)), tuple(range(2, 60)))]
    engine = BatchedEngine(max_batch_tokens=16, budget="loop")
    passes = chunked_passes(monkeypatch)
    plans = planned(engine, monkeypatch)
    assert max_rel_err(score(model, long, engine), naive(model, long)) <= 1e-9
    assert [(mb.rows, mb.chunked) for mb in plans[0]] == [((0,), False)] and passes == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_planned_micro_batch_measures_within_its_cap(dtype, monkeypatch):
    """The real peak of a planned pass ≤ the cap + one row's modelled bytes."""
    model = tiny_llama(tied=False, dtype=dtype)
    params = [p for _, p in scored_parameters(model)]
    gen = torch.Generator().manual_seed(0)
    seqs = [
        TokenSequence(
            tuple(torch.randint(VOCAB, (9,), generator=gen).tolist()),
            tuple(torch.randint(VOCAB, (int(n),), generator=gen).tolist()),
        )
        for n in torch.randint(30, 60, (12,), generator=gen)
    ]
    for budget, tokens in (("tokens", 200), ("tokens", 400), ("loop", 4096)):
        engine = BatchedEngine(max_batch_tokens=tokens, budget=budget)
        engine.score(model, params, seqs[:1])  # measures the footprint
        plans = planned(engine, monkeypatch)
        engine.score(model, params, seqs)
        fp = engine.footprint
        lengths = [s.length for s in seqs]
        cap = Planner(
            fp, Shapes(0, (), None, False), max_batch_tokens=tokens, budget=budget,
            scored_bytes=sum(p.numel() * p.element_size() for p in params), chunkable=True,
        ).cap_bytes(lengths)  # fmt: skip
        one_row = fp.bytes_per_token * max(lengths) + fp.logit_bytes_per_token * 60
        multi = [mb for mb in plans[0] if len(mb.rows) > 1]
        assert multi, budget
        for mb in multi:
            assert mb.modelled_bytes <= cap
            group = [seqs[i] for i in mb.rows]
            run = engine.score
            peak = peak_bytes(lambda g=group, run=run: run(model, params, g), torch.device("cpu"))
            assert peak <= cap + one_row, (budget, tokens, peak, cap, one_row)


def test_describe_says_the_policy_and_its_numbers():
    model = tiny_llama(tied=True)
    assert BatchedEngine(max_batch_tokens=64).describe() == {
        "policy": "max_batch_tokens_greedy",
        "max_batch_tokens": 64,
    }
    engine = BatchedEngine(max_batch_tokens=64, budget="loop")
    score(model, SEQS[:2], engine)
    info = engine.describe()
    assert info["policy"] == "loop_memory" and info["max_batch_tokens"] == 64
    assert info["measured"] is True and info["probe_tokens"] == 128
    assert info["bytes_per_token"] > 0 and info["logit_bytes_per_token"] > 0
    params = [p for _, p in scored_parameters(model)]
    assert info["scored_bytes"] == sum(p.numel() * 8 for p in params)  # float64


def test_a_bad_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        BatchedEngine(budget="memory")


def test_without_the_profiler_the_config_estimate_stands_in_and_says_so():
    from torch.profiler import ProfilerActivity, profile

    from vigor_service.engine import footprint

    model = tiny_llama(tied=True, seed=7)
    model.config.rope_theta = 12345.0  # a configuration no other test has measured
    engine = BatchedEngine(budget="loop")
    with profile(activities=[ProfilerActivity.CPU]):
        got = score(model, SEQS, engine)
    assert max_rel_err(got, naive(model, SEQS)) <= 1e-9
    assert engine.describe()["measured"] is False and engine.footprint.probe_tokens == 0
    assert engine.footprint == footprint.estimated(model)
