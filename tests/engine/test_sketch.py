"""The opt-in sketched estimator, end to end through the batched engine on tiny float64 models.

Against the naive float64 oracle (tests/naive.py: per-sample gradients materialized one sample at
a time): unbiased over seeds within a tolerance read off the sample variance, close at large k,
deterministic, independent of a sample's company and padding, exact wherever no Linear weight
is scored, and refused by the loop engine.
"""

from __future__ import annotations

import math
import statistics

import pytest

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.reference import ReferenceEngine
from vigor_service.engine.types import Sketch, TokenSequence
from vigor_service.errors import InvalidInputError

from ..naive import naive_grad_norm
from ..tiny_models import random_groups, tiny_gpt2, tiny_llama, tiny_qwen2
from .helpers import flatten, score

MODELS = {
    "llama-untied": lambda: tiny_llama(tied=False),  # the lm_head is sketched too
    "llama-tied": lambda: tiny_llama(tied=True),  # the tied head stays exact
    "qwen2-bias": lambda: tiny_qwen2(tied=False),  # q/k/v biases stay exact
    "gpt2-conv1d": lambda: tiny_gpt2(tied=True),
}


def _sq(scores) -> list[float | None]:
    return [None if s.grad_norm is None else s.grad_norm**2 for s in scores]


@pytest.mark.parametrize("name", list(MODELS))
def test_unbiased_over_seeds(name):
    """Mean over seeds of the estimated ‖g‖² → the naive ‖g‖², within 4.5 standard errors."""
    model = MODELS[name]()
    seqs = [s for s in flatten(random_groups(3)) if s.num_tokens]
    want = [naive_grad_norm(model, s.prompt_ids, s.completion_ids) ** 2 for s in seqs]
    engine = BatchedEngine()
    draws = [_sq(score(model, seqs, engine, estimator=Sketch(4, seed))) for seed in range(50)]
    for i, w in enumerate(want):
        xs = [d[i] for d in draws]
        mean, sd = statistics.fmean(xs), statistics.stdev(xs)
        se = sd / math.sqrt(len(xs))
        # k = 4 is noisy on purpose: the estimate must vary, or this test could not fail.
        assert sd > 1e-3 * w
        assert abs(mean - w) <= 4.5 * se, (i, mean, w, se)


def test_error_shrinks_as_k_grows():
    """At k well past every layer's width the estimate is close; error ~ 1/√k on average."""
    model = tiny_llama(tied=False)
    seqs = [s for s in flatten(random_groups(5)) if s.num_tokens]
    want = [naive_grad_norm(model, s.prompt_ids, s.completion_ids) for s in seqs]
    engine = BatchedEngine()

    def mean_rel_err(k: int) -> float:
        errs = [
            abs(got.grad_norm - w) / w
            for seed in range(4)
            for got, w in zip(
                score(model, seqs, engine, estimator=Sketch(k, seed)), want, strict=True
            )
        ]
        return statistics.fmean(errs)

    small, large = mean_rel_err(4), mean_rel_err(2048)  # widths here are 32..64
    # Relative sd of ‖g‖ at most √(4/k)/2 per layer (docs/estimator.md): 2.2% at k = 2048.
    assert large < math.sqrt(4 / 2048)
    assert small > 4 * large  # √(2048/4) ≈ 23 expected; 4 leaves room for the seeds drawn


def test_deterministic_and_independent_of_company_and_padding():
    model = tiny_llama(tied=False)
    groups = random_groups(7, prompt_lens=(5, 3, 9), completion_lens=((4, 7, 1), (6,), (2, 11)))
    seqs = flatten(groups)
    sk = Sketch(8, 11)
    together = score(model, seqs, BatchedEngine(), estimator=sk)
    again = score(model, seqs, BatchedEngine(), estimator=sk)  # a fresh engine draws anew
    assert [s.grad_norm for s in together] == [s.grad_norm for s in again]
    # One micro-batch per sequence (no padding) against everything padded into one.
    alone = score(model, seqs, BatchedEngine(max_batch_tokens=1), estimator=sk)
    reversed_ = score(model, seqs[::-1], BatchedEngine(), estimator=sk)[::-1]
    for a, b, c in zip(together, alone, reversed_, strict=True):
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-12)
        assert a.grad_norm == pytest.approx(c.grad_norm, rel=1e-12)
    other = score(model, seqs, BatchedEngine(), estimator=Sketch(8, 12))
    assert all(a.grad_norm != o.grad_norm for a, o in zip(together, other, strict=True))


def test_sliced_head_equals_whole_head():
    """The chunked lm_head feeds the sketch column slices; their sum is the whole projection."""
    model = tiny_llama(tied=False)
    seqs = flatten(random_groups(2))
    sk = Sketch(16, 3)
    sliced = score(model, seqs, BatchedEngine(head_chunk_elements=40), estimator=sk)
    whole = score(model, seqs, BatchedEngine(head_chunk_elements=0), estimator=sk)
    for a, b in zip(sliced, whole, strict=True):
        assert (a.grad_norm is None) == (b.grad_norm is None)
        if a.grad_norm is not None:
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-12)


def _linear_weight(name: str) -> bool:
    return name.endswith(("proj.weight", "lm_head.weight"))


@pytest.mark.parametrize("name", ["llama-untied", "qwen2-bias"])
def test_only_linear_weights_are_sketched(name):
    """With no Linear weight scored, the sketch is the exact norm: embeddings, norms, biases."""
    model = MODELS[name]()
    seqs = flatten(random_groups(4))
    rest = [p for n, p in model.named_parameters() if not _linear_weight(n)]
    got = BatchedEngine().score(model, rest, seqs, estimator=Sketch(2, 0))
    for s, g in zip(seqs, got, strict=True):
        want = naive_grad_norm(
            model, s.prompt_ids, s.completion_ids, select=lambda n: not _linear_weight(n)
        )
        if want is None:
            assert g.grad_norm is None
        else:
            assert g.grad_norm == pytest.approx(want, rel=1e-10)
    # And with them scored it is not exact: the test above could fail.
    all_params = list(model.parameters())
    full = BatchedEngine().score(model, all_params, seqs, estimator=Sketch(2, 0))
    exact = BatchedEngine().score(model, all_params, seqs)
    assert any(
        abs(f.grad_norm - e.grad_norm) > 1e-6 * e.grad_norm
        for f, e in zip(full, exact, strict=True)
        if e.grad_norm
    )


def test_empty_completion_is_none():
    model = tiny_llama(tied=False)
    seqs = [TokenSequence((1, 2, 3), ()), TokenSequence((4, 5), (6, 7, 8, 9, 10))]
    got = score(model, seqs, estimator=Sketch(8, 0))
    assert got[0].grad_norm is None and got[0].num_tokens == 0
    assert math.isfinite(got[1].grad_norm)


def test_loop_engine_refuses_the_sketch():
    model = tiny_llama()
    seqs = flatten(random_groups(0))
    with pytest.raises(
        InvalidInputError, match="estimator: the loop engine computes exact norms only"
    ):
        score(model, seqs, ReferenceEngine(), estimator=Sketch(8, 0))


def test_sketch_k_must_be_positive():
    with pytest.raises(ValueError, match="k must be ≥ 1"):
        Sketch(0, 0)
