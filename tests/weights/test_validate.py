"""Validation names the tensor and the problem, and treats a tied pair as one parameter."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from vigor_service.errors import WeightsRejectedError
from vigor_service.weights.validate import TargetMap, check_complete, check_tensors

from ..tiny_models import tiny_llama
from .helpers import state


@pytest.fixture
def model():
    return tiny_llama(tied=True, dtype=torch.float32)


def rejected(targets, tensors, **kw) -> str:
    with pytest.raises(WeightsRejectedError) as info:
        check_tensors(targets, tensors, **kw)
    return info.value.message


def test_tied_pair_is_one_target_under_either_name(model):
    targets = TargetMap.of_model(model)
    assert len(targets) == len(list(model.parameters()))
    emb = targets.get("model.embed_tokens.weight")
    assert targets.get("lm_head.weight") is emb
    assert set(emb.aliases) == {"model.embed_tokens.weight", "lm_head.weight"}
    sd = state(model)
    for given in (["lm_head.weight"], ["model.embed_tokens.weight"], ["lm_head.weight"] * 1):
        checked = check_tensors(targets, {n: sd[n] for n in given})
        assert list(checked.tensors) == [emb.name]
    both = check_tensors(targets, sd)  # both names, equal values: one tensor
    assert len(both) == len(targets)
    check_complete(targets, both)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    msg = rejected(targets, sd)
    assert "'lm_head.weight'" in msg and "tied" in msg and "differ" in msg


def test_each_problem_names_the_tensor(model):
    targets = TargetMap.of_model(model)
    sd = state(model)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert "did you mean 'model.layers.0.self_attn.q_proj.weight'" in rejected(
        targets, {"model.layers.0.self_attn.q_proj.weights": sd[q]}
    )
    assert f"tensor {q!r} has shape [32, 16], the served one [32, 32]" in rejected(
        targets, {q: sd[q][:, :16]}
    )
    msg = rejected(targets, {q: sd[q].double()})
    assert f"tensor {q!r}: dtype float64 does not match the served float32" in msg
    assert "unchanged" in msg
    assert "dtype int64" in rejected(targets, {q: sd[q].long()})
    bad = sd[q].clone()
    bad[0, 0], bad[1, 1], bad[2, 2] = float("nan"), float("inf"), float("-inf")
    assert f"tensor {q!r}: holds 1 NaN and 2 Inf values of 1024" in rejected(targets, {q: bad})


def test_casts_only_when_allowed_and_never_to_inf(model):
    targets = TargetMap.of_model(model)
    q = "model.layers.0.self_attn.q_proj.weight"
    half = state(model)[q].half()
    checked = check_tensors(targets, {q: half}, allow_cast=True)
    assert checked.tensors[q].dtype == torch.float32
    assert "dtype float16" in rejected(targets, {q: half})
    small = tiny_llama(dtype=torch.float16)
    big = torch.full((32, 32), 1e6, dtype=torch.float32)
    msg = rejected(TargetMap.of_model(small), {q: big}, allow_cast=True)
    assert "Inf values" in msg and "after the cast to float16" in msg


def test_full_update_lists_what_is_missing(model):
    targets = TargetMap.of_model(model)
    sd = state(model)
    del sd["model.norm.weight"], sd["model.layers.1.mlp.up_proj.weight"]
    checked = check_tensors(targets, sd)
    with pytest.raises(WeightsRejectedError, match=r"missing 2: 'model\.layers\.1\.mlp\.up_proj"):
        check_complete(targets, checked)


def test_buckets_accumulate_and_a_repeat_must_agree(model):
    targets = TargetMap.of_model(model)
    sd = state(model)
    names = list(sd)
    checked = check_tensors(targets, {n: sd[n] for n in names[:5]})
    check_tensors(targets, {n: sd[n] for n in names[3:]}, into=checked)
    check_complete(targets, checked)
    before = dict(checked.given)
    with pytest.raises(WeightsRejectedError, match="differ"):
        check_tensors(targets, {names[0]: sd[names[0]] + 1}, into=checked)
    assert checked.given == before


def test_names_under_a_peft_wrapper_are_the_base_names(model):
    names = set(TargetMap.of_model(model).by_alias)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert set(TargetMap.of_model(wrapped).by_alias) == names
