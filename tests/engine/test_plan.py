"""The micro-batch planner on numbers alone: caps, head choice, cost, every row exactly once."""

from __future__ import annotations

import random

import pytest

from vigor_service.engine.footprint import Footprint
from vigor_service.engine.plan import DP_MAX_ROWS, Planner, Shapes

# Roughly the default model: 30 layers of 576/1536 GEMMs, a 49,152-token head, ~1 MiB per token.
SHAPES = Shapes(
    body_params=106_000_000,
    scored=((576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576))
    * 30,
    head=(576, 49_152),
    head_scored=True,
)
FP = Footprint(bytes_per_token=1 << 20, logit_bytes_per_token=400_000, probe_tokens=128)
SCORED = 540_000_000


def planner(budget="loop", max_batch_tokens=1024, fp=FP, chunkable=True, scored=SCORED):
    return Planner(
        fp, SHAPES, max_batch_tokens=max_batch_tokens, budget=budget, scored_bytes=scored,
        chunkable=chunkable,
    )  # fmt: skip


def ragged(seed: int, n: int, prompt: int, t: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    spans = [rng.randint(max(1, 3 * t // 4), t) for _ in range(n)]
    return [prompt + s for s in spans], spans


def check_partition(plans, n):
    rows = sorted(i for p in plans for i in p.rows)
    assert rows == list(range(n)), "every row exactly once"


@pytest.mark.parametrize("budget", ["loop", "tokens"])
@pytest.mark.parametrize("seed", range(6))
def test_every_micro_batch_respects_the_cap_and_the_token_budget(budget, seed):
    lengths, spans = ragged(seed, n=8 + 7 * seed, prompt=20 * seed + 1, t=40 + 90 * seed)
    p = planner(budget, max_batch_tokens=512 + 256 * seed)
    plans = p.plan(lengths, spans)
    check_partition(plans, len(lengths))
    cap = p.cap_bytes(lengths)
    for mb in plans:
        longest = max(lengths[i] for i in mb.rows)
        assert lengths[mb.rows[0]] == longest
        if len(mb.rows) > 1:
            assert mb.modelled_bytes <= cap
            assert len(mb.rows) * longest <= p.max_batch_tokens
        span = max(spans[i] for i in mb.rows)
        logits = 0 if mb.chunked else FP.logit_bytes_per_token * len(mb.rows) * span
        assert mb.modelled_bytes == FP.bytes_per_token * len(mb.rows) * longest + logits


def test_the_loop_cap_is_its_gradient_plus_its_longest_sequence():
    lengths = [300, 250]
    per = FP.bytes_per_token + FP.logit_bytes_per_token
    assert planner("loop").cap_bytes(lengths) == SCORED + per * 300
    assert planner("tokens", 700).cap_bytes(lengths) == FP.bytes_per_token * 700


def test_unchunked_when_it_fits_chunked_when_only_that_fits():
    lengths, spans = [100] * 4, [90] * 4
    # Room for all four rows unchunked: one pass, one head GEMM.
    roomy = planner("tokens", 500, fp=Footprint(1000, 100, 128))
    (mb,) = roomy.plan(lengths, spans)
    assert mb.rows and len(mb.rows) == 4 and not mb.chunked
    # The logits of four rows overflow what 500 tokens hold, the chunked head does not.
    heavy = planner("tokens", 500, fp=Footprint(1000, 5000, 128))
    (mb,) = heavy.plan(lengths, spans)
    assert len(mb.rows) == 4 and mb.chunked
    assert mb.modelled_bytes <= heavy.cap_bytes(lengths)


def test_a_head_that_cannot_be_chunked_gets_smaller_micro_batches_instead():
    lengths, spans = [100] * 4, [90] * 4
    heavy = planner("tokens", 500, fp=Footprint(1000, 5000, 128), chunkable=False)
    plans = heavy.plan(lengths, spans)
    check_partition(plans, 4)
    assert all(not mb.chunked for mb in plans) and len(plans) == 4


@pytest.mark.parametrize("t", [512, 1024, 3000])
def test_a_row_alone_under_the_loop_cap_runs_the_loops_work_unchunked(t):
    lengths, spans = ragged(1, n=8, prompt=200, t=t)
    plans = planner("loop", max_batch_tokens=1024).plan(lengths, spans)
    singles = [mb for mb in plans if len(mb.rows) == 1]
    assert singles and not any(mb.chunked for mb in singles)


def test_an_overlong_row_goes_alone_chunked_under_an_explicit_budget():
    plans = planner("tokens", 64).plan([500, 30, 20], [400, 10, 5])
    first = next(mb for mb in plans if 0 in mb.rows)
    assert first.rows == (0,) and first.chunked


def test_padding_and_pass_count_are_both_weighed():
    # Two long rows and many short ones: packing a long row with short ones wastes its padding.
    lengths, spans = [1000, 990] + [100] * 8, [900, 890] + [50] * 8
    plans = planner("tokens", 4096, fp=Footprint(1, 1, 128)).plan(lengths, spans)
    check_partition(plans, len(lengths))
    shorts = [mb for mb in plans if set(mb.rows) & set(range(2, 10))]
    assert all(max(lengths[i] for i in mb.rows) == 100 for mb in shorts)
    # Equal rows under a roomy budget share one pass: the per-pass overhead counts.
    (one,) = planner("tokens", 4096, fp=Footprint(1, 1, 128)).plan([100] * 8, [50] * 8)
    assert len(one.rows) == 8


def test_many_rows_are_packed_greedily_under_the_same_caps():
    lengths, spans = ragged(3, n=DP_MAX_ROWS + 50, prompt=3, t=20)
    p = planner("tokens", 256, fp=Footprint(1000, 3000, 128))
    plans = p.plan(lengths, spans)
    check_partition(plans, len(lengths))
    cap = p.cap_bytes(lengths)
    for mb in plans:
        assert len(mb.rows) == 1 or (
            mb.modelled_bytes <= cap and len(mb.rows) * lengths[mb.rows[0]] <= 256
        )


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="max_batch_tokens"):
        planner(max_batch_tokens=0)
    with pytest.raises(ValueError, match="lengths"):
        planner().plan([3, 4], [1])
