"""Planning: every scored parameter gets a rule, ties get a cross term, the rest is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vigor_service.engine.errors import UnsupportedModelError
from vigor_service.engine.norms import capturing, check_supported, plan_norms
from vigor_service.engine.norms.gram import GramCache

from ...tiny_models import TINY_MODELS


def test_plan_covers_a_tied_model():
    model = TINY_MODELS["llama-tied"]()
    params = list(model.parameters())
    plan = plan_norms(model, params)
    covered = {id(p) for mp in plan.modules for n, p in mp.module.named_parameters(recurse=False)}
    assert covered == {id(p) for p in params}
    assert len(plan.tied) == 1
    assert set(plan.tied[0].modules) == {"embedding", "head"}


def test_tie_without_a_cross_rule_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight
    with pytest.raises(UnsupportedModelError, match="no cross-term rule"):
        check_supported(model, list(model.parameters()))


def test_three_way_tie_refused():
    model = nn.ModuleDict({"e": nn.Embedding(5, 3), "a": nn.Linear(3, 5), "b": nn.Linear(3, 5)})
    model["a"].weight = model["e"].weight
    model["b"].weight = model["e"].weight
    with pytest.raises(UnsupportedModelError, match="shared by 3 modules"):
        check_supported(model, list(model.parameters()))


def test_foreign_parameter_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(UnsupportedModelError):
        check_supported(model, [nn.Parameter(torch.zeros(1))])


def test_gram_cache_is_by_identity_and_version():
    cache = GramCache(size=2)
    a, b, c = torch.ones(2), torch.ones(2), torch.ones(2)
    cache.put(a, torch.tensor(1.0))
    assert cache.get(a) is not None and cache.get(b) is None
    a.add_(1)  # an in-place change makes the Gram stale
    assert cache.get(a) is None
    cache.put(b, torch.tensor(2.0))
    cache.put(c, torch.tensor(3.0))
    assert cache.get(a) is None and cache.get(c) is not None


def test_capturing_removes_its_hooks_on_error_and_ignores_no_grad_calls():
    model = nn.Sequential(nn.Linear(3, 3, dtype=torch.float64))
    plan = plan_norms(model, list(model.parameters()))
    with pytest.raises(RuntimeError, match="boom"), capturing(model, plan) as capture:
        assert model[0]._forward_hooks
        capture.start({(1, 2): None}, torch.float64, torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros(1, 2, 3, dtype=torch.float64))  # not counted as a call
        raise RuntimeError("boom")
    assert not model[0]._forward_hooks
