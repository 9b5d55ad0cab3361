"""The client checks every scoring answer against its request (issue 26, finding 6): against a
real loopback server that lies, each wrong answer is a `VigorProtocolError` naming what is wrong,
and the TRL and verl integrations never hand such an answer on as a reward."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest

from vigor_client import AsyncVigorClient, VigorClient, VigorProtocolError

from .lying_server import LyingServer, honest

GROUP = {"prompt_ids": [1, 2], "completion_ids": [[3], [4, 5], [6]]}


@pytest.fixture(scope="module")
def liar():
    with LyingServer() as srv:
        yield srv


def edited(edit, **honest_options):
    """An answer: the honest one for the request, then `edit(answer)` applied to it."""

    def answer(body):
        out = copy.deepcopy(honest(body, **honest_options))
        edit(out)
        return out

    return answer


def _set(path: str, value):
    def edit(out):
        *parts, last = path.split(".")
        node = out
        for part in parts:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return edit


LIES = {
    "too few rewards": (
        _set("groups.0.rewards", [1.0, -1.0]),
        {},
        "groups[0].rewards has 2 values for 3 completions",
    ),
    "a group missing": (lambda out: out["groups"].pop(), {"groups": 2}, "1 groups for the 2 sent"),
    "a group too many": (
        lambda out: out["groups"].append(out["groups"][0]),
        {},
        "2 groups for the 1 sent",
    ),
    "a huge reward": (
        _set("groups.0.rewards.1", 1e9),
        {},
        "groups[0].rewards[1] is 1e+09, outside [-1, 1]",
    ),
    "a positive score": (
        _set("groups.0.scores.0", 1e9),
        {},
        "groups[0].scores[0] is 1e+09, outside [-inf, 0]",
    ),
    "a negative norm": (_set("groups.0.grad_norms.2", -1.0), {}, "groups[0].grad_norms[2] is -1"),
    "a null without reason": (
        _set("groups.0.rewards.0", None),
        {},
        "groups[0].rewards[0] is null without a reason",
    ),
    "old weights": (
        _set("weight_version", 0),
        {"min_weight_version": 3},
        "weight_version 0 is below the required 3",
    ),
    "another group's id": (
        _set("groups.0.id", "other"),
        {"id": "mine"},
        "groups[0].id is 'other', not the 'mine' sent",
    ),
    "a signal missing": (
        _set("groups.0.signals", None),
        {"signals": ["entropy_mean"]},
        "groups[0].signals.entropy_mean has no values",
    ),
}


def request_for(options: dict) -> tuple[list[dict], dict]:
    options = dict(options)
    groups = [dict(GROUP, id=options.pop("id"))] if "id" in options else [GROUP]
    groups = groups * options.pop("groups", 1)
    return groups, options


@pytest.mark.parametrize("lie", sorted(LIES))
def test_each_wrong_answer_is_a_protocol_error_naming_what_is_wrong(liar, lie):
    edit, options, message = LIES[lie]
    liar.answer = edited(edit)
    groups, options = request_for(options)
    with VigorClient(liar.url, retry=None) as client, pytest.raises(VigorProtocolError) as info:
        client.score(groups, **options)
    assert message in str(info.value) and liar.url in str(info.value)


def test_nan_and_infinity_on_the_wire_are_refused(liar):
    for bad in ("NaN", "Infinity", "-Infinity"):

        def answer(body, bad=bad):
            text = json.dumps(honest(body))
            return text.replace('"scores": [-1.0', f'"scores": [{bad}', 1)

        liar.answer = answer
        with VigorClient(liar.url, retry=None) as client, pytest.raises(VigorProtocolError) as info:
            client.score([GROUP], shaping="none")
        assert "groups[0].scores[0] is" in str(info.value)


def test_honest_answers_pass_nulls_with_reasons_included(liar):
    def answer(body):
        out = honest(body)
        g = out["groups"][0]
        g["rewards"][2] = g["scores"][2] = g["grad_norms"][2] = None
        g["reasons"][2] = "empty_completion"
        return out

    liar.answer = answer
    with VigorClient(liar.url, retry=None) as client:
        res = client.score([GROUP], shaping="none", min_weight_version=3, signals=["entropy_mean"])
    assert res.groups[0].rewards == [-1.0, -2.0, None] and res.weight_version == 3


def test_the_async_client_checks_the_same(liar):
    liar.answer = edited(_set("groups.0.rewards", [0.0]))

    async def run():
        async with AsyncVigorClient(liar.url, retry=None) as client:
            return await client.score([GROUP])

    with pytest.raises(VigorProtocolError, match="rewards has 1 values for 3"):
        asyncio.run(run())


# --- the integrations never pass a wrong answer on as a reward -------------------------------
def test_trl_raises_or_returns_none_never_the_lie(liar):
    from vigor_client.integrations.trl import VigorRewardFunction

    liar.answer = edited(_set("groups.0.rewards.0", float("nan")))
    prompts, completions, ids = ["p", "p"], ["a", "b"], [[3], [4]]
    with pytest.raises(VigorProtocolError, match=r"rewards\[0\] is nan"):
        VigorRewardFunction(VigorClient(liar.url, retry=None))(prompts, completions, ids)
    fn = VigorRewardFunction(VigorClient(liar.url, retry=None), on_error="none")
    assert fn(prompts, completions, ids) == [None, None]
    assert "VigorProtocolError" in fn.calls[0].error
    liar.answer = edited(_set("groups.0.rewards", [1e9]))  # too few, and out of range
    assert fn(prompts, completions, ids) == [None, None]


def test_verl_batch_and_single_scores_raise(liar):
    from vigor_client.integrations import verl

    liar.answer = edited(_set("groups.0.rewards.1", float("nan")))
    infos = [{"prompt": "p", "uid": "u"}] * 3
    with pytest.raises(VigorProtocolError, match=r"groups\[0\].rewards\[1\] is nan"):
        verl.compute_score_batch(["x"] * 3, ["a", "b", "c"], [None] * 3, infos, server_url=liar.url)
    liar.answer = edited(_set("groups.0.scores", []))
    with pytest.raises(VigorProtocolError, match="scores has 0 values for 1"):
        verl.compute_score("x", "a", None, {"prompt": "p"}, server_url=liar.url)


def test_verl_reward_loop_raises(liar):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    from omegaconf import OmegaConf
    from verl import DataProto

    from vigor_client.integrations.verl_reward_loop import VigorRewardManager

    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"n": 1, "val_kwargs": {"n": 1}}},
            "reward": {"reward_kwargs": {"server_url": liar.url}},
            "trainer": {"val_before_train": False, "test_freq": -1},
            "data": {"val_files": None},
        }
    )
    item = DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([[1, 2]]),
            "responses": torch.tensor([[3, 4]]),
            "attention_mask": torch.ones(1, 4, dtype=torch.long),
        },
        non_tensors={"uid": np.array(["u"], dtype=object)},
    )
    liar.answer = edited(_set("groups.0.rewards.0", 1e9))
    manager = VigorRewardManager(config, tokenizer=None)
    with pytest.raises(VigorProtocolError, match=r"rewards\[0\] is 1e\+09"):
        asyncio.run(manager.run_single(item))
