"""The client side of the estimator: sent as asked, checked in the answer, and passed by the
TRL reward function; against a real tiny server and a recording transport."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from vigor_client import VigorClient, VigorProtocolError
from vigor_client._responses import check_rewards
from vigor_client.integrations.trl import VigorRewardFunction
from vigor_client.schema import GroupResult, RewardsRequest, RewardsResponse

from ..weights.helpers import GROUPS, tiny_server

SKETCH = {"kind": "sketch", "k": 8, "seed": 1}
GROUP = {"prompt_ids": [1, 2], "completion_ids": [[3], [4]]}


def answer(estimator):
    result = GroupResult(
        rewards=[1.0, -1.0], scores=[-1.0, -2.0], grad_norms=[1.0, 2.0], num_tokens=[1, 1],
        reasons=[None, None],
    )  # fmt: skip
    return RewardsResponse.model_validate(
        {"model": "m", "weight_version": 0, "groups": [result.model_dump()], "estimator": estimator}
    )


@pytest.mark.parametrize("got", [None, {"kind": "exact"}, {**SKETCH, "seed": 2}])
def test_an_answer_by_another_estimator_is_refused(got):
    request = RewardsRequest(groups=[GROUP], estimator=SKETCH)
    with pytest.raises(VigorProtocolError, match=r"estimator .* is not the .* asked for"):
        check_rewards(request, answer(got), "http://x")


def test_an_answer_by_the_asked_or_any_estimator_passes():
    ok = answer(SKETCH)
    assert check_rewards(RewardsRequest(groups=[GROUP], estimator=SKETCH), ok, "http://x") is ok
    assert check_rewards(RewardsRequest(groups=[GROUP]), ok, "http://x") is ok


def test_client_sends_the_estimator_and_reads_it_back():
    with tiny_server() as srv, VigorClient(srv.url) as client:
        assert client.model_info().estimator.kind == "exact"
        sketched = client.score(GROUPS, estimator=SKETCH)
        exact = client.score(GROUPS)
    assert sketched.estimator.model_dump() == SKETCH and exact.estimator.kind == "exact"
    assert sketched.groups[0].grad_norms != exact.groups[0].grad_norms


def test_trl_reward_function_passes_its_estimator():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        groups = [
            {
                "id": g.get("id"), "rewards": [1.0, -1.0], "scores": [-1.0, -2.0],
                "grad_norms": [1.0, 2.0], "num_tokens": [1, 1], "reasons": [None, None],
            }
            for g in body["groups"]
        ]  # fmt: skip
        out = {"model": "m", "weight_version": 0, "groups": groups, "estimator": body["estimator"]}
        return httpx.Response(200, json=out)

    client = VigorClient("http://vigor", transport=httpx.MockTransport(handler))
    fn = VigorRewardFunction(client, signals=[], estimator=SKETCH)
    out = fn(
        prompts=["a", "a"], completions=["x", "y"], completion_ids=[[1], [2]],
        trainer_state=SimpleNamespace(global_step=0),
    )  # fmt: skip
    assert seen[0]["estimator"] == SKETCH and out == [1.0, -1.0]
