"""Refusals, and a model left exactly as it was found: no hooks, flags restored, no .grad."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.errors import UnsupportedModelError
from vigor_service.engine.norms import check_supported
from vigor_service.engine.params import scored_parameters
from vigor_service.engine.types import TokenSequence

from ..tiny_models import TINY_MODELS, random_groups, tiny_lora_llama
from .helpers import flatten, score

SEQS = flatten(random_groups(seed=17))


class ScaledLinear(nn.Linear):
    """A subclass with its own forward: a Linear rule would compute the wrong function's norm."""

    def forward(self, x):
        return 2.0 * super().forward(x)


class Gate(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d, dtype=torch.float64))
        self.inner = nn.Identity()

    def forward(self, x):
        return self.inner(x) * self.scale


def _params(model):
    return [p for _, p in scored_parameters(model)]


def test_unknown_module_type_refused_naming_it():
    model = TINY_MODELS["llama-tied"]()
    model.model.layers[0].mlp.act_fn = Gate(48)
    with pytest.raises(UnsupportedModelError, match=r"mlp\.act_fn\.scale.*Gate"):
        check_supported(model, _params(model))
    with pytest.raises(UnsupportedModelError, match="Gate"):
        score(model, SEQS)


def test_subclass_of_a_supported_type_refused():
    model = TINY_MODELS["llama-untied"]()
    old = model.model.layers[1].self_attn.o_proj
    new = ScaledLinear(old.in_features, old.out_features, bias=False, dtype=torch.float64)
    model.model.layers[1].self_attn.o_proj = new
    with pytest.raises(UnsupportedModelError, match="ScaledLinear"):
        check_supported(model, _params(model))


def test_unscored_unknown_module_is_fine():
    # Only scored parameters need a rule: a LoRA model's frozen base layers never do.
    model = tiny_lora_llama()
    check_supported(model, _params(model))


def test_module_run_twice_refused():
    model = TINY_MODELS["llama-untied"]()
    layer = model.model.layers[0]
    layer.mlp.down_proj = model.model.layers[1].mlp.down_proj  # one module, two call sites
    with pytest.raises(UnsupportedModelError, match="more than once"):
        score(model, SEQS)
    _assert_clean(model)


def _assert_clean(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, type(m).__name__
        assert not m._backward_hooks and not m._backward_pre_hooks, type(m).__name__
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("checkpoint", [False, True])
def test_hooks_removed_and_flags_restored(checkpoint):
    model = TINY_MODELS["qwen2-tied"]()
    model.model.norm.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    score(model, SEQS, BatchedEngine(gradient_checkpointing=checkpoint), signals=("perplexity",))
    _assert_clean(model)
    assert [p.requires_grad for p in model.parameters()] == before


def test_restored_after_an_exception_mid_pass():
    model = TINY_MODELS["llama-tied"]()
    before = [p.requires_grad for p in model.parameters()]

    def boom(module, args, output):
        raise RuntimeError("boom")

    handle = model.model.layers[1].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        score(model, SEQS, BatchedEngine(gradient_checkpointing=True))
    handle.remove()
    _assert_clean(model)
    assert [p.requires_grad for p in model.parameters()] == before
    assert not any(m.training for m in model.modules())


def test_empty_prompt_refused():
    model = TINY_MODELS["llama-tied"]()
    with pytest.raises(ValueError, match="prompt"):
        score(model, [TokenSequence((), (1, 2))])
    _assert_clean(model)


def test_non_finite_padding_gradient_triggers_a_strict_recompute(monkeypatch):
    from vigor_service.engine.norms.linear import LinearLikeRule

    real = LinearLikeRule.sq_norms
    seen = []

    def poisoned(self, module, saved, grad, ctx, scored):
        seen.append(ctx.strict)
        if ctx.mask is not None and not ctx.strict:
            grad = grad.masked_fill(~ctx.mask.unsqueeze(-1), float("nan"))
        return real(self, module, saved, grad, ctx, scored)

    monkeypatch.setattr(LinearLikeRule, "sq_norms", poisoned)
    model = TINY_MODELS["llama-untied"]()
    got = score(model, SEQS)
    assert True in seen and False in seen
    want = score(model, SEQS, BatchedEngine(max_batch_tokens=1))  # one row per batch: no padding
    for g, w in zip(got, want, strict=True):
        assert g.grad_norm == w.grad_norm or g.grad_norm == pytest.approx(w.grad_norm, rel=1e-12)
