"""Checkpointing, LoRA-only scoring, bfloat16 and float16: still the oracle's numbers."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.norms import checkpointing as ckpt_module
from vigor_service.engine.params import scored_parameters

from ..tiny_models import TINY_MODELS, random_groups, tiny_lora_llama
from .helpers import GPT2, flatten, max_rel_err, naive, score

SEQS = flatten(random_groups(seed=7))


def _layer_state(model):
    return [
        (
            m.training,
            m.__dict__.get("gradient_checkpointing"),
            "_gradient_checkpointing_func" in m.__dict__,
        )
        for m in model.modules()
        if isinstance(m, GradientCheckpointingLayer)
    ]


@pytest.mark.parametrize("name", ["llama-tied", "qwen2-untied", "gpt2-tied"])
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_stays_exact_and_is_undone(name, reentrant, monkeypatch):
    model = {**TINY_MODELS, **GPT2}[name]()
    calls = []
    real = ckpt_module.checkpoint
    monkeypatch.setattr(
        ckpt_module, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    before = _layer_state(model)
    engine = BatchedEngine(
        gradient_checkpointing=True, use_reentrant=reentrant, max_batch_tokens=30
    )
    got = score(model, SEQS, engine)
    assert calls, "no layer was checkpointed"
    assert max_rel_err(got, naive(model, SEQS)) <= 1e-9
    assert _layer_state(model) == before
    assert not model.training


@pytest.mark.parametrize("reentrant", [False, True])
def test_model_checkpointed_by_hf_api(reentrant):
    # A model handed over with HF's own checkpointing on and in train mode (no dropout here).
    model = TINY_MODELS["llama-untied"]()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()
    got = score(model, SEQS)
    assert max_rel_err(got, naive(model, SEQS)) <= 1e-9


@pytest.fixture(scope="module")
def lora():
    model = tiny_lora_llama(tied=True, target_modules=["q_proj", "v_proj", "down_proj", "lm_head"])
    return model, naive(model, SEQS, lora_only=True)


@pytest.mark.parametrize(
    ("form", "checkpoint"), list(itertools.product(["auto", "ghost", "direct"], [False, True]))
)
def test_lora_only_parameters(lora, form, checkpoint):
    model, want = lora
    names = [n for n, _ in scored_parameters(model)]
    assert names and all("lora" in n for n in names)
    engine = BatchedEngine(force_form=form, gradient_checkpointing=checkpoint)
    assert max_rel_err(score(model, SEQS, engine), want) <= 1e-9


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_close_to_float64_and_ranks_agree(dtype):
    exact = TINY_MODELS["llama-tied"]()
    half = TINY_MODELS["llama-tied"]().to(dtype)
    groups = random_groups(
        seed=11, prompt_lens=(6, 4), completion_lens=((2, 9, 5, 14, 7), (3, 12, 8))
    )
    ref = score(exact, flatten(groups))
    got = score(half, flatten(groups))
    assert max_rel_err(got, [r.grad_norm for r in ref]) <= 2e-2
    # Within each group, any two scores (−norm·√T) more than 5% apart keep their order.
    start, compared = 0, 0
    for _, comps in groups:
        members = range(start, start + len(comps))
        s64 = {i: -ref[i].grad_norm * ref[i].num_tokens ** 0.5 for i in members}
        s16 = {i: -got[i].grad_norm * got[i].num_tokens ** 0.5 for i in members}
        for i, j in itertools.combinations(members, 2):
            if abs(s64[i] - s64[j]) > 0.05 * max(abs(s64[i]), abs(s64[j])):
                assert (s64[i] < s64[j]) == (s16[i] < s16[j])
                compared += 1
        start += len(comps)
    assert compared >= 10
