"""The client's weight-plane calls, against tiny in-process servers and a mock transport."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model

from vigor_client import (
    AsyncVigorClient,
    AuthenticationError,
    InvalidRequestError,
    StaleWeightsError,
    VigorClient,
)
from vigor_client._weights import buckets, named_tensors

from ..tiny_models import tiny_llama
from ..weights.helpers import GROUPS, perturbed, runtime_of, save_checkpoint, state, tiny_server

Q = "model.layers.0.self_attn.q_proj.weight"


def fresh_scores(sd) -> list[float]:
    model = tiny_llama(tied=True, dtype=torch.float32)
    model.load_state_dict(sd)
    with tiny_server(model) as srv, VigorClient(srv.url) as client:
        return client.score(GROUPS, shaping="none").groups[0].scores


@pytest.fixture(scope="module")
def pert():
    return perturbed(state(tiny_llama(tied=True, dtype=torch.float32)))


@pytest.fixture(scope="module")
def pert_scores(pert):
    return fresh_scores(pert)


def test_base_client_import_stays_torch_free():
    code = (
        "import sys, vigor_client; from vigor_client import VigorClient; "
        "assert not {'torch', 'safetensors', 'numpy'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_named_tensors_drops_the_second_name_of_a_tied_pair_and_buckets_by_size():
    model = tiny_llama(tied=True, dtype=torch.float32)
    names = named_tensors(model)
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    sizes = {n: t.nbytes for n, t in names.items()}
    groups = buckets(names, 5000)
    assert [n for g in groups for n in g] == list(names)
    for g in groups:
        assert len(g) == 1 or sum(sizes[n] for n in g) <= 5000
    with pytest.raises(TypeError, match=r"not a torch\.Tensor"):
        named_tensors({"a": [1.0]})


def test_push_a_module_in_buckets_then_a_partial_dict(pert, pert_scores, capsys):
    model = tiny_llama(tied=True, dtype=torch.float32)
    base = state(model)
    with tiny_server() as srv, VigorClient(srv.url) as client:
        model.load_state_dict(pert)
        res = client.push_weights(model, bucket_bytes=8000)  # many buckets, progress bar on
        assert res.operation == "commit" and res.weight_version == 1
        assert res.tensors == len(base) - 1
        assert client.score(GROUPS, shaping="none").groups[0].scores == pert_scores
        res = client.push_weights({Q: base[Q]}, version=9, progress=False)
        assert (res.operation, res.weight_version, res.tensors) == ("push", 9, 1)
        assert runtime_of(srv).weights.staging.staged_bytes == 0
    assert "push" in capsys.readouterr().err  # tqdm's bar


def test_push_casts_to_the_served_dtype_unless_told_not_to(pert, pert_scores):
    doubles = {k: v.double() for k, v in pert.items()}
    with tiny_server() as srv, VigorClient(srv.url) as client:
        with pytest.raises(InvalidRequestError, match="dtype float64 does not match"):
            client.push_weights(doubles, cast=False, progress=False)
        client.push_weights(doubles, full=True, progress=False)
        assert client.score(GROUPS, shaping="none").groups[0].scores == pert_scores


def test_a_failed_bucket_raises_the_server_message_and_aborts_the_upload(pert):
    bad = dict(pert)
    last = list(bad)[-1]
    bad[last] = bad[last].clone()
    bad[last].view(-1)[0] = float("nan")
    with tiny_server() as srv, VigorClient(srv.url) as client:
        with pytest.raises(InvalidRequestError) as info:
            client.push_weights(bad, bucket_bytes=4000, progress=False)
        assert f"tensor '{last}'" in info.value.message and "NaN" in info.value.message
        assert len(runtime_of(srv).weights.staging) == 0  # aborted, nothing left staged
        assert client.model_info().weight_version == 0
        with pytest.raises(StaleWeightsError) as info:
            client.push_weights(pert, version=0, progress=False)
        assert info.value.current_weight_version == 0


def test_reload_and_adapters_with_the_admin_token(tmp_path, pert, pert_scores):
    ckpt = save_checkpoint(pert, tmp_path / "ckpt")
    base = tiny_llama(tied=True, dtype=torch.float32)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    peft = get_peft_model(tiny_llama(tied=True, dtype=torch.float32), config)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    peft.save_pretrained(tmp_path / "adapter")
    with tiny_server(base, admin_token="tok") as srv:
        with VigorClient(srv.url) as anonymous, pytest.raises(AuthenticationError):
            anonymous.reload_weights(ckpt)
        with VigorClient(srv.url, admin_token="tok") as client:
            assert client.reload_weights(ckpt, 3).weight_version == 3
            assert client.score(GROUPS, shaping="none").groups[0].scores == pert_scores
            res = client.load_adapter(tmp_path / "adapter")
            assert (res.weight_version, res.adapter, res.tensors) == (4, "adapter", 8)
            with_adapter = client.score(GROUPS, shaping="none").groups[0].scores
            info = client.model_info()
            assert info.adapter == "adapter" and info.num_scored_parameters < 10_000
            res = client.load_adapter(peft, name="live")  # pushed: same adapter, same scores
            assert res.adapter == "live"
            assert client.score(GROUPS, shaping="none").groups[0].scores == with_adapter
            with pytest.raises(ValueError, match="config="):
                client.load_adapter({"x": torch.ones(1)})
            assert client.unload_adapter().adapter is None
            assert client.score(GROUPS, shaping="none").groups[0].scores == pert_scores


def test_async_client_has_the_same_calls(tmp_path, pert, pert_scores):
    ckpt = save_checkpoint(state(tiny_llama(tied=True, dtype=torch.float32)), tmp_path / "b")

    async def run(url):
        async with AsyncVigorClient(url) as client:
            pushed = await client.push_weights(pert, bucket_bytes=6000, progress=False)
            got = (await client.score(GROUPS, shaping="none")).groups[0].scores
            reloaded = await client.reload_weights(str(ckpt))
            with pytest.raises(InvalidRequestError, match="no such file"):
                await client.reload_weights(str(tmp_path / "nope"))
            return pushed, got, reloaded

    with tiny_server() as srv:
        pushed, got, reloaded = asyncio.run(run(srv.url))
    assert pushed.weight_version == 1 and got == pert_scores and reloaded.weight_version == 2


def test_timeouts_reach_each_request_and_a_failed_abort_keeps_the_first_error():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.extensions.get("timeout")))
        if request.url.path == "/v1/model":
            return httpx.Response(200, json=MODEL_INFO)
        if request.url.path.endswith("/uploads"):
            return httpx.Response(201, json={"upload_id": "u1", "tensors": 0, "bytes": 0,
                                             "expires_in_s": 300})  # fmt: skip
        if request.url.path.endswith("/buckets"):
            error = {"code": "weights_rejected", "message": "tensor 'b': holds 1 NaN"}
            return httpx.Response(422, json={"error": error})
        return httpx.Response(500, text="abort broke too")

    tensors = {"a": torch.ones(100), "b": torch.ones(100)}
    transport = httpx.MockTransport(handler)
    with (
        VigorClient("http://vigor", transport=transport) as client,
        pytest.raises(InvalidRequestError, match="holds 1 NaN"),
    ):
        client.push_weights(tensors, bucket_bytes=400, progress=False, timeout=7)
    methods = [(m, p) for m, p, _ in seen]
    assert methods == [
        ("GET", "/v1/model"),
        ("POST", "/admin/weights/uploads"),
        ("POST", "/admin/weights/uploads/u1/buckets"),
        ("DELETE", "/admin/weights/uploads/u1"),
    ]
    assert all(t["read"] == 7 for _, p, t in seen if p.startswith("/admin"))


def test_requests_carry_the_documented_shapes():
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((request.method, str(request.url), request.content))
        return httpx.Response(200, json=UPDATE)

    with VigorClient("http://vigor", transport=httpx.MockTransport(handler)) as client:
        client.reload_weights("/ckpt/step-3", 3, allow_cast=True)
        client.load_adapter("/ckpt/lora", name="mine")
        client.unload_adapter(version=5)
    assert json.loads(bodies[0][2]) == {
        "path": "/ckpt/step-3", "version": 3, "full": True, "allow_cast": True,
    }  # fmt: skip
    assert json.loads(bodies[1][2])["name"] == "mine"
    assert bodies[2][:2] == ("DELETE", "http://vigor/admin/adapter?version=5")


MODEL_INFO = {
    "model": "m", "weight_version": 0, "device": "cpu", "dtype": "float32", "engine": "loop",
    "num_parameters": 1, "num_scored_parameters": 1, "vocab_size": 2, "max_sequence_length": 8,
}  # fmt: skip
UPDATE = {
    "operation": "reload", "weight_version": 1, "previous_version": 0, "tensors": 1, "bytes": 4,
    "seconds": 0.1,
}  # fmt: skip
