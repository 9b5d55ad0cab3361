"""The opt-in sketch estimator over real HTTP: echoed, defaulted by the server's flags, validated
(422 naming the field), carried by held groups, and refused by the loop engine."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from vigor_service.engine.batched import BatchedEngine
from vigor_service.engine.types import Sketch, TokenSequence
from vigor_service.settings import Settings

from ..tiny_models import tiny_llama
from ..weights.helpers import GROUPS, tiny_server
from .test_group_assembly import post_all

SKETCH = {"kind": "sketch", "k": 16, "seed": 3}


def post(url: str, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/rewards", json={"groups": GROUPS, **extra}, timeout=60)


def direct(model, estimator) -> list[float]:
    """The engine itself, no HTTP: what the server must answer."""
    g = GROUPS[0]
    seqs = [TokenSequence(tuple(g["prompt_ids"]), tuple(c)) for c in g["completion_ids"]]
    params = list(model.parameters())
    return [s.grad_norm for s in BatchedEngine().score(model, params, seqs, estimator=estimator)]


@pytest.fixture(scope="module")
def served():
    model = tiny_llama(tied=False, dtype=torch.float64)
    with tiny_server(model) as srv:
        yield srv.url, model


def test_sketch_is_echoed_and_matches_the_engine(served):
    url, model = served
    info = httpx.get(url + "/v1/model", timeout=30).json()
    assert info["estimator"] == {"kind": "exact"}  # the server default
    exact = post(url)
    assert exact.status_code == 200 and exact.json()["estimator"] == {"kind": "exact"}
    first, again = post(url, estimator=SKETCH), post(url, estimator=SKETCH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["estimator"] == SKETCH
    norms = body["groups"][0]["grad_norms"]
    assert norms == again.json()["groups"][0]["grad_norms"]  # same seed, same numbers
    assert norms == pytest.approx(direct(model, Sketch(16, 3)), rel=1e-12)
    assert norms != pytest.approx(exact.json()["groups"][0]["grad_norms"], rel=1e-9)


@pytest.mark.parametrize(
    ("estimator", "names"),
    [
        ({"kind": "sketch", "k": 0, "seed": 0}, ["estimator", "k", "greater than or equal to 1"]),
        ({"kind": "sketch", "k": 5000}, ["estimator", "k", "less than or equal to 4096"]),
        ({"kind": "sketch", "k": "8"}, ["estimator", "k"]),
        ({"kind": "sketch"}, ["estimator", "k", "Field required"]),
        ({"kind": "sketch", "k": 8, "seed": -1}, ["estimator", "seed"]),
        ({"kind": "ghost", "k": 8}, ["estimator", "ghost", "'exact', 'sketch'"]),
        ({"kind": "exact", "k": 8}, ["estimator", "k", "Extra inputs"]),
        ({"k": 8}, ["estimator", "kind"]),
    ],
)
def test_bad_estimator_is_a_422_naming_the_field(served, estimator, names):
    r = post(served[0], estimator=estimator)
    assert r.status_code == 422, r.text
    for name in names:
        assert name in r.text, (name, r.text)


def test_held_group_carries_its_estimator(served):
    url, model = served
    g = GROUPS[0]

    def sample(j: int, estimator: dict) -> dict:
        group = {
            "id": f"held-{estimator.get('seed', 'x')}",
            "group_size": 2,
            "hold_s": 3,
            "prompt_ids": g["prompt_ids"],
            "completion_ids": [g["completion_ids"][j]],
        }
        return {"groups": [group], "estimator": estimator}

    a, b = asyncio.run(post_all(url, [sample(0, SKETCH), sample(1, SKETCH)]))
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    want = direct(model, Sketch(16, 3))[:2]  # the group of the first two, sketched alike
    got = [a.json()["groups"][0]["grad_norms"][0], b.json()["groups"][0]["grad_norms"][0]]
    assert got == pytest.approx(want, rel=1e-12)
    assert a.json()["estimator"] == b.json()["estimator"] == SKETCH

    async def differing():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            other = {**SKETCH, "seed": 4}
            held = asyncio.create_task(client.post("/v1/rewards", json=sample(0, other)))
            await asyncio.sleep(0.5)
            exact = sample(1, {"kind": "exact"})
            exact["groups"][0]["id"] = f"held-{other['seed']}"
            refused = await client.post("/v1/rewards", json=exact)
            held.cancel()
            return refused

    refused = asyncio.run(differing())
    assert refused.status_code == 422, refused.text
    assert "estimator" in refused.text and "every sample of a group" in refused.text


def test_server_default_from_flags():
    model = tiny_llama(tied=False, dtype=torch.float64)
    with tiny_server(model, estimator="sketch", sketch_k=8, sketch_seed=2) as srv:
        want = {"kind": "sketch", "k": 8, "seed": 2}
        assert httpx.get(srv.url + "/v1/model", timeout=30).json()["estimator"] == want
        r = post(srv.url)
        assert r.status_code == 200 and r.json()["estimator"] == want
        assert r.json()["groups"][0]["grad_norms"] == pytest.approx(
            direct(model, Sketch(8, 2)), rel=1e-12
        )
        exact = post(srv.url, estimator={"kind": "exact"})  # a request may still ask for exact
        assert exact.json()["groups"][0]["grad_norms"] == pytest.approx(
            direct(model, None), rel=1e-12
        )


def test_loop_engine_refuses_a_sketch():
    with tiny_server(engine="loop") as srv:
        r = post(srv.url, estimator=SKETCH)
        assert r.status_code == 422, r.text
        assert "estimator" in r.text and "batched engine" in r.text and "'loop'" in r.text
        assert post(srv.url).status_code == 200  # exact still served
    with pytest.raises(ValueError, match="--estimator sketch needs --engine batched"):
        Settings(engine="loop", estimator="sketch")
