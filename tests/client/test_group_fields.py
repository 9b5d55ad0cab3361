"""The wire fields for server-side group assembly (group_size, sample_ids, hold_s), validated in
the client before anything is sent: every bad value names its field."""

import pytest
from pydantic import ValidationError

from vigor_client._requests import RequestCore
from vigor_client.schema import Group, RewardsRequest


def group(**fields):
    return {"prompt": "Q:", "completions": [" a", " b"], **fields}


def problems(**fields) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as info:
        RewardsRequest.model_validate({"groups": [group(**fields)]})
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


def test_a_partial_group_travels_with_its_key_size_and_sample_ids():
    req = RequestCore().rewards(
        [group(id="uid-7", group_size=8, sample_ids=["s0", "s1"], hold_s=30)], hold_s=60
    )
    g = req.json["groups"][0]
    assert (g["id"], g["group_size"], g["sample_ids"], g["hold_s"]) == (
        "uid-7",
        8,
        ["s0", "s1"],
        30,
    )
    assert req.json["hold_s"] == 60
    plain = RequestCore().rewards([group()]).json  # nothing new is sent when unused
    assert not {"group_size", "sample_ids", "hold_s"} & {*plain, *plain["groups"][0]}


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"id": "k", "group_size": 0}, ("groups", 0, "group_size"), "greater than or equal to 1"),
        ({"id": "k", "group_size": True}, ("groups", 0, "group_size"), "valid integer"),
        ({"group_size": 2}, ("groups", 0), "needs a non-empty string id"),
        ({"id": 3, "group_size": 2}, ("groups", 0), "needs a non-empty string id"),
        ({"id": "k", "group_size": 2, "sample_ids": ["s"]}, ("groups", 0), "sample_ids has 1"),
        ({"id": "k", "group_size": 2, "sample_ids": ["s", "s"]}, ("groups", 0), "repeats"),
        ({"sample_ids": ["a", "b"]}, ("groups", 0), "sample_ids needs group_size"),
        ({"hold_s": 5}, ("groups", 0), "hold_s needs group_size"),
        ({"id": "k", "group_size": 2, "hold_s": 0}, ("groups", 0, "hold_s"), "greater than 0"),
        ({"id": "k", "group_size": 2, "hold_s": float("nan")}, ("groups", 0, "hold_s"), "finite"),
    ],
)
def test_bad_assembly_fields_are_named(fields, where, says):
    [(loc, msg)] = problems(**fields)
    assert loc == where and says in msg


def test_top_level_hold_s_must_be_positive():
    with pytest.raises(ValidationError, match="greater than 0"):
        RewardsRequest.model_validate({"groups": [group()], "hold_s": -1})


def test_sample_ids_count_completion_ids_too():
    ok = Group(
        id="k", prompt_ids=[1], completion_ids=[[2], [3]], group_size=4, sample_ids=["a", "b"]
    )
    assert ok.sample_ids == ["a", "b"]
    with pytest.raises(ValidationError, match="sample_ids has 1 items but completion_ids has 2"):
        Group(id="k", prompt_ids=[1], completion_ids=[[2], [3]], group_size=4, sample_ids=["a"])
