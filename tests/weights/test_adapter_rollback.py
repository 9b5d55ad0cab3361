"""Every failing adapter call leaves the served model bit-identical: same scores, same tensors.

peft raising half-way through wrapping modules (a target list mixing a Linear with a norm layer,
init_lora_weights false so a stray LoRA layer would move the scores) was the reproduced case;
each failure path here is compared before and after, with and without an adapter already served.
"""

import json

import httpx
import pytest
import torch
from safetensors.torch import save

from vigor_client.wire import ADAPTER_CONFIG_KEY
from vigor_service.errors import NoAdapterError, WeightsRejectedError

from .helpers import admin, scores, tiny_server
from .test_adapter import CONFIG, attach, norms, served_tiny, trained_adapter

MIXED = ["q_proj", "input_layernorm"]  # a Linear and an RMSNorm: peft raises after wrapping one
BAD_CONFIGS = {
    "linear and norm targets": ({**CONFIG, "target_modules": MIXED}, "not supported"),
    "random init, bad target": (
        {**CONFIG, "init_lora_weights": False, "target_modules": MIXED}, "not supported",
    ),
    "targets match nothing": ({**CONFIG, "target_modules": ["no_such_module"]}, "not found"),
    "rank zero": ({**CONFIG, "r": 0}, "r must be a positive integer"),
    "base-rewriting init": ({**CONFIG, "init_lora_weights": "pissa"}, "rewrite the base weights"),
    "layer replication": ({**CONFIG, "layer_replication": [[0, 1], [0, 1]]}, "layer_replication"),
}  # fmt: skip


def snapshot(slot):
    model = slot.served.model
    return (
        norms(slot),
        slot.version,
        slot.served.adapter,
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(slot, before):
    scores_, version, adapter, tensors, flags = before
    model = slot.served.model
    now = model.state_dict()
    assert norms(slot) == scores_  # bit-identical, not approximately
    assert (slot.version, slot.served.adapter) == (version, adapter)
    assert now.keys() == tensors.keys() and all(torch.equal(now[k], tensors[k]) for k in now)
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("existing", [False, True], ids=["base", "over-an-adapter"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_config_peft_refuses_half_way_changes_nothing(existing, case):
    config, phrase = BAD_CONFIGS[case]
    slot = served_tiny()
    if existing:
        attach(slot, CONFIG, trained_adapter(CONFIG, seed=1)[1])
    before = snapshot(slot)
    _, tensors = trained_adapter(CONFIG, seed=2)
    with pytest.raises(WeightsRejectedError, match=phrase):
        attach(slot, config, tensors, slot="bad")
    assert_unchanged(slot, before)
    # and the slot still takes a good adapter afterwards, scored over its LoRA weights only
    attach(slot, CONFIG, tensors, slot="good")
    assert norms(slot) != before[0] and all("lora" in n for n, _ in slot.served.scored_named)


def test_detach_without_adapter_changes_nothing():
    slot = served_tiny()
    before = snapshot(slot)
    with pytest.raises(NoAdapterError):
        from vigor_service.weights import adapter as lora

        lora.detach(slot, version=None)
    assert_unchanged(slot, before)


@pytest.mark.parametrize("case", ["linear and norm targets", "random init, bad target"])
def test_over_http_a_refused_adapter_is_422_and_the_server_serves_the_same_model(tmp_path, case):
    config, phrase = BAD_CONFIGS[case]
    _, tensors = trained_adapter(CONFIG, seed=2)
    body = save(
        {k: v.float().contiguous() for k, v in tensors.items()},
        metadata={ADAPTER_CONFIG_KEY: json.dumps(config)},
    )
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(body)
    with tiny_server() as srv:
        before = scores(srv.url)
        for r in (
            admin(srv.url, "POST", "/admin/adapter", json={"path": str(directory)}),
            admin(
                srv.url, "POST", "/admin/adapter", content=body,
                headers={"Content-Type": "application/octet-stream"},
            ),
        ):  # fmt: skip
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "weights_rejected" and phrase in r.text
            assert scores(srv.url) == before
            info = httpx.get(srv.url + "/v1/model", timeout=30).json()
            assert info["adapter"] is None and info["weight_version"] == 0
            assert admin(srv.url, "DELETE", "/admin/adapter").status_code == 404
