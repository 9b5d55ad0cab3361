"""The batched engine against the naive float64 per-completion oracle."""

from __future__ import annotations

import pytest
import torch

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.microbatch import pack
from vigor_service.engine.norms import gram
from vigor_service.engine.reference import ReferenceEngine
from vigor_service.engine.types import TokenSequence

from ..tiny_models import TINY_MODELS, VOCAB, random_groups, tiny_llama, tiny_qwen2
from .helpers import GPT2, flatten, max_rel_err, naive, score

MODELS = {**TINY_MODELS, **GPT2}
# Ragged prompts, an empty completion, a one-token completion and a group of one.
SEQS = flatten(random_groups(seed=3))


@pytest.fixture(scope="module")
def oracle():
    cache = {}

    def get(name, dtype=torch.float64):
        if (name, dtype) not in cache:
            cache[name, dtype] = naive(MODELS[name](dtype=dtype), SEQS)
        return cache[name, dtype]

    return get


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("form", ["auto", "ghost", "direct"])
def test_float64_matches_naive(name, form, oracle):
    got = score(MODELS[name](), SEQS, BatchedEngine(force_form=form))
    assert max_rel_err(got, oracle(name)) <= 1e-9


@pytest.mark.parametrize("name", ["llama-tied", "gpt2-tied"])
def test_gram_blocks_on_short_sequences(name, oracle, monkeypatch):
    # Tiny test sequences never reach the length where Grams are split into blocks; force it.
    monkeypatch.setattr(gram, "MIN_SPLIT", 2)
    monkeypatch.setattr(gram, "PARTS", 3)
    got = score(MODELS[name](), SEQS, BatchedEngine(force_form="ghost"))
    assert max_rel_err(got, oracle(name)) <= 1e-9


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float32_matches_naive(name, oracle):
    got = score(MODELS[name](dtype=torch.float32), SEQS)
    assert max_rel_err(got, oracle(name, torch.float32)) <= 1e-4


@pytest.mark.parametrize("budget", [1, 12, 25])
def test_micro_batch_splits_change_nothing(budget, oracle):
    model = MODELS["qwen2-tied"]()
    whole = score(model, SEQS)
    split = score(model, SEQS, BatchedEngine(max_batch_tokens=budget))
    assert max_rel_err(split, oracle("qwen2-tied")) <= 1e-9
    assert max_rel_err(split, [r.grad_norm for r in whole]) <= 1e-12


def test_pack_respects_budget_and_keeps_every_sequence():
    seqs = [TokenSequence((1,) * p, (2,) * c) for p, c in [(3, 4), (1, 1), (9, 9), (2, 5), (4, 0)]]
    batches = pack(seqs, max_batch_tokens=20)
    assert sorted(i for b in batches for i in b) == list(range(len(seqs)))
    for b in batches:
        longest = max(seqs[i].length for i in b)
        assert len(b) == 1 or len(b) * longest <= 20
        assert seqs[b[0]].length == longest


@pytest.mark.parametrize(
    "build",
    [
        lambda: tiny_llama(tied=True, pad_token_id=3),
        lambda: tiny_llama(tied=False, pad_token_id=3),
        lambda: tiny_qwen2(tied=True, pad_token_id=3),
    ],
)
@pytest.mark.parametrize("form", ["ghost", "direct"])
def test_pad_id_inside_completion(build, form):
    model = build()
    assert model.get_input_embeddings().padding_idx == 3
    seqs = [
        TokenSequence((5, 3, 7), (3, 9, 3, 3, 11)),
        TokenSequence((3,), (8, 3)),
        TokenSequence((1, 2), (3,)),
    ]
    got = score(model, seqs, BatchedEngine(force_form=form))
    assert max_rel_err(got, naive(model, seqs)) <= 1e-9


def test_empty_completions_and_group_of_one():
    model = MODELS["llama-tied"]()
    names = ("entropy_mean", "logprob_sum")
    seqs = [TokenSequence((1, 2), ()), TokenSequence((4,), (5, 6)), TokenSequence((7,), ())]
    got = score(model, seqs, signals=names)
    for i in (0, 2):
        assert got[i].grad_norm is None and got[i].num_tokens == 0
        assert got[i].signals == dict.fromkeys(names)
    assert got[1].num_tokens == 2 and got[1].grad_norm > 0
    only_empty = score(model, [seqs[0]])
    assert only_empty[0].grad_norm is None
    one = score(model, [seqs[1]])
    assert one[0].grad_norm == pytest.approx(got[1].grad_norm, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "dtype", "tol"),
    [
        ("gpt2-tied", torch.float64, 1e-12),
        # HF computes RoPE's cos/sin in float32 even in a float64 model, and float32 cos of the
        # same positions can differ in the last bit with the tensor's length (vectorized tail).
        ("llama-untied", torch.float64, 1e-6),
        ("llama-untied", torch.float32, 1e-5),
    ],
)
def test_batch_company_does_not_change_a_score(name, dtype, tol):
    model = MODELS[name](dtype=dtype)
    groups = random_groups(
        seed=5, prompt_lens=(4, 9, 2), completion_lens=((3, 5), (11, 1, 7), (6,))
    )
    target = flatten(groups[:1])
    alone = score(model, target)
    among = score(model, flatten(groups[1:2]) + target + flatten(groups[2:]))
    assert max_rel_err(among[3:5], [r.grad_norm for r in alone]) <= tol


def test_matches_reference_engine_norms_and_signals():
    model = MODELS["qwen2-untied"]()
    names = ("logprob_sum", "logprob_mean", "entropy_mean", "self_certainty", "perplexity")
    kw = {"signals": names, "temperature": 0.7}
    got = score(model, SEQS, **kw)
    want = score(model, SEQS, ReferenceEngine(), **kw)
    assert max_rel_err(got, [r.grad_norm for r in want]) <= 1e-9
    for g, w in zip(got, want, strict=True):
        assert g.num_tokens == w.num_tokens
        for n in names:
            if w.signals[n] is None:
                assert g.signals[n] is None
            else:
                assert g.signals[n] == pytest.approx(w.signals[n], rel=1e-9, abs=1e-12)


def test_sliding_window_model_in_padded_micro_batches_matches_naive():
    """No padding mask is passed (MicroBatch.model_inputs): a model whose attention mask is more
    than causal (Mistral, window 4, shorter than most rows) must still see only its own row."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        sliding_window=4, attn_implementation="sdpa",
    )  # fmt: skip
    model = MistralForCausalLM(config).to(torch.float64).eval()
    seqs = flatten(random_groups(3, prompt_lens=(5, 3), completion_lens=((4, 7, 0, 1), (9,))))
    engine = BatchedEngine(max_batch_tokens=4096)
    assert len(pack([s for s in seqs if s.num_tokens], 4096)) == 1  # padded rows, one pass
    assert max_rel_err(score(model, seqs, engine), naive(model, seqs)) <= 1e-9
