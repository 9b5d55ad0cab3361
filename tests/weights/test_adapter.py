"""LoRA adapters on the served model: attach, replace, detach, and roll back on refusal."""

import pytest
import torch
from peft import get_peft_model, get_peft_model_state_dict

from vigor_service.engine.reference import ReferenceEngine
from vigor_service.engine.types import TokenSequence
from vigor_service.errors import NoAdapterError, VersionConflictError, WeightsRejectedError
from vigor_service.models.loader import LoadedModel
from vigor_service.serving import ServedModel, ServingSlot
from vigor_service.weights import adapter as lora

from ..tiny_models import tiny_llama

SEQS = [TokenSequence((1, 2, 3), (4, 5, 6)), TokenSequence((7,), (8, 9))]
CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def served_tiny() -> ServingSlot:
    model = tiny_llama(tied=True, dtype=torch.float64)
    slot = ServingSlot()
    slot.set_served(ServedModel(LoadedModel("tiny", None, model, None), ReferenceEngine()))
    return slot


def trained_adapter(config: dict, seed: int = 0):
    """A peft model over the same tiny base, its LoRA weights non-zero, and its saved state."""
    base = tiny_llama(tied=True, dtype=torch.float64)
    peft = get_peft_model(base, lora.parse_config(config, "test"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora" in name:
                p.add_(0.1 * torch.randn_like(p))
    return peft, {k: v.clone() for k, v in get_peft_model_state_dict(peft).items()}


def norms(slot: ServingSlot) -> list[float]:
    return [r.grad_norm for r in slot.score(SEQS, (), 1.0)[0]]


def attach(serving, config, tensors, version=None, slot="s1", allow_cast=True):
    cfg = lora.parse_config(config, "test")
    return lora.attach(
        serving, cfg, tensors, slot=slot, name="a", version=version, allow_cast=allow_cast
    )


def test_attach_scores_only_the_lora_weights_like_the_reference():
    served = served_tiny()
    base_norms = norms(served)
    peft, tensors = trained_adapter(CONFIG)
    attach(served, CONFIG, tensors)
    assert served.version == 1 and served.served.adapter == "a"
    assert {n.replace(".s1.", ".") for n, _ in served.served.scored_named} == {
        n.replace(".default.", ".") for n, _ in peft.named_parameters() if "lora" in n
    }
    lora_params = [p for n, p in peft.named_parameters() if "lora" in n]
    want = [r.grad_norm for r in ReferenceEngine().score(peft, lora_params, SEQS)]
    assert norms(served) == pytest.approx(want, rel=1e-12)
    lora.detach(served, version=None)
    assert served.version == 2 and served.served.adapter is None
    assert norms(served) == base_norms  # the base weights were never touched


def test_replacing_an_adapter_keeps_only_the_new_one():
    served = served_tiny()
    _, first = trained_adapter(CONFIG, seed=1)
    config2 = {**CONFIG, "r": 2, "target_modules": ["k_proj"]}
    peft2, second = trained_adapter(config2, seed=2)
    attach(served, CONFIG, first)
    attach(served, config2, second, slot="s2")
    assert all("k_proj" in n for n, _ in served.served.scored_named)
    lora_params = [p for n, p in peft2.named_parameters() if "lora" in n]
    want = [r.grad_norm for r in ReferenceEngine().score(peft2, lora_params, SEQS)]
    assert norms(served) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("existing", [False, True])
def test_a_refused_adapter_leaves_the_served_model_as_it_was(existing):
    served = served_tiny()
    if existing:
        _, first = trained_adapter(CONFIG, seed=1)
        attach(served, CONFIG, first)
    before, version, names = (
        norms(served),
        served.version,
        [n for n, _ in served.served.scored_named],
    )
    _, good = trained_adapter(CONFIG, seed=3)
    key = next(iter(good))
    cases = [
        ({k: v for k, v in good.items() if k != key}, "missing 1"),
        ({**good, "base_model.model.lm_head.lora_A.weight": torch.ones(2)}, "not a parameter"),
        ({**good, key: good[key][:2]}, "has shape"),
        ({**good, key: good[key].long()}, "dtype int64"),
    ]
    for tensors, phrase in cases:
        with pytest.raises(WeightsRejectedError, match=phrase):
            attach(served, CONFIG, tensors, slot=f"bad{len(phrase)}")
        assert served.version == version and [n for n, _ in served.served.scored_named] == names
        assert norms(served) == before
    with pytest.raises(VersionConflictError):
        attach(served, CONFIG, good, version=version, slot="late")
    assert norms(served) == before


def test_config_problems_and_detach_without_adapter():
    with pytest.raises(WeightsRejectedError, match="peft_type PREFIX_TUNING is not LORA"):
        lora.parse_config({"peft_type": "PREFIX_TUNING"}, "adapter_config.json")
    with pytest.raises(WeightsRejectedError, match="is not JSON"):
        lora.parse_config("{", "cfg")
    cfg = lora.parse_config({**CONFIG, "some_future_field": 1}, "cfg")  # ignored, as peft does
    assert cfg.r == 4
    with pytest.raises(NoAdapterError):
        lora.detach(served_tiny(), version=None)


@pytest.mark.parametrize(
    "extra",
    [{"lora_dropout": 0.1}, {"init_lora_weights": "gaussian"}, {"init_lora_weights": False},
     {"inference_mode": True}],
    ids=["dropout", "gaussian-init", "random-init", "inference-mode"],
)  # fmt: skip
def test_options_that_do_not_change_the_adapter_score_as_without_them(extra):
    """Saved adapters carry training options (dropout 0.05 is common); served, the same tensors
    must give the same scores every time: eval mode, and inits replaced by the loaded tensors."""
    _, tensors = trained_adapter(CONFIG, seed=3)
    plain = served_tiny()
    attach(plain, CONFIG, tensors)
    served = served_tiny()
    attach(served, {**CONFIG, **extra}, tensors)
    assert not any(m.training for m in served.served.model.modules())
    assert norms(served) == norms(served) == norms(plain)
    lora.detach(served, version=None)
    assert not any(m.training for m in served.served.model.modules())
