"""A bad focal option or reward spec is a 422 naming the field, never a silent default; the
server's own flags are checked at start."""

import json

import httpx
import pytest
import torch

from vigor_service.app import create_app
from vigor_service.cli import settings_from_args
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ..servers import ThreadServer
from ..tiny_models import TINY_MODELS

GROUP = {"prompt_ids": [1, 2, 3], "completion_ids": [[4, 5], [6]]}


@pytest.fixture(scope="module")
def url():
    loaded = LoadedModel(
        name="tiny", path=None, model=TINY_MODELS["llama-untied"](dtype=torch.float64),
        tokenizer=None,
    )  # fmt: skip
    with ThreadServer(create_app(Settings(), loaded=loaded)) as server:
        yield server.url


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"focal": {"lambda": 9}}, ["focal", "lambda", "less than or equal to 4"]),
        ({"focal": {"lambda": "-1"}}, ["focal", "lambda"]),
        ({"focal": {"metric": "p_norm", "target": 1.5}}, ["target: 1.5", "p_norm"]),
        ({"focal": {"metric": "p_norm", "target": None}}, ["target: null", "weights no"]),
        ({"focal": {"metric": "entropy", "target": -1}}, ["focal", "target"]),
        ({"focal": {"metric": "kl"}}, ["focal", "metric"]),
        ({"focal": {"lam": -1, "gamma": 2}}, ["focal", "gamma"]),
        ({"focal": {}, "reward_spec": "vigor"}, ["focal or reward_spec, not both"]),
        ({"reward_spec": "nope"}, ["reward_spec", "'nope'", "vigor"]),
        ({"reward_spec": {"name": "x", "weights": {"grad": 1.0}}}, ["reward_spec", "weights"]),
        ({"reward_spec": {"name": "x", "weights": {"vigor": 0.0}}}, ["non-zero weight"]),
        ({"focal": {}, "temperature": 0.7}, ["temperature", "0.7", "temperature 1"]),
    ],
)
def test_bad_variant_options_name_the_field(url, extra, names):
    r = httpx.post(url + "/v1/rewards", json={"groups": [GROUP], **extra}, timeout=60)
    assert r.status_code == 422, r.text
    for name in names:
        assert name in r.text, (name, r.text)


def test_a_spec_that_needs_no_signal_works_at_any_temperature(url):
    r = httpx.post(
        url + "/v1/rewards",
        json={
            "groups": [GROUP],
            "temperature": 0.7,
            "reward_spec": {"name": "len", "weights": {"num_tokens": 1.0}},
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["groups"][0]["scores"] == [2.0, 1.0]
    assert r.json()["reward_spec"]["name"] == "len"


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--focal", "--focal-lambda", "7"], ["focal_lambda"]),
        (
            ["--focal", "--focal-metric", "p_norm", "--focal-target", "2"],
            ["focal_target", "p_norm"],
        ),
        (["--reward-spec", "/nonexistent/spec.json"], ["reward_spec", "cannot read"]),
        (["--reward-spec", '{"name": "a b"}'], ["reward_spec", "name"]),
        (["--reward-spec", '{"name": "vigor"}'], ["reward_spec", "'vigor'"]),
        (["--focal", "--reward-spec", '{"name": "s"}'], ["not both"]),
    ],
)
def test_bad_flags_stop_the_start_naming_the_flag(argv, names):
    with pytest.raises(ValueError) as info:
        settings_from_args(argv)
    for name in names:
        assert name in str(info.value), (name, str(info.value))


def test_a_spec_file_is_read_at_start(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s1", "focal": {"metric": "p_norm", "lambda": -1}}))
    settings, _ = settings_from_args(["--reward-spec", str(path)])
    variants = settings.reward_variants()
    assert variants.default.name == "s1" and variants.default.focal.target == 0.9
    assert sorted(variants.named) == ["s1", "vigor"]


def test_a_held_group_is_scored_by_its_first_sample_s_variant(url):
    import concurrent.futures

    focal = {"metric": "entropy", "lambda": -1.0}
    whole = httpx.post(url + "/v1/rewards", json={"groups": [GROUP], "focal": focal}, timeout=60)

    def one(k):
        group = {
            "id": "held-focal", "group_size": 2, "prompt_ids": GROUP["prompt_ids"],
            "completion_ids": [GROUP["completion_ids"][k]],
        }  # fmt: skip
        return httpx.post(url + "/v1/rewards", json={"groups": [group], "focal": focal}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(one, [0, 1]))
    assert [p.status_code for p in parts] == [200, 200]
    want = whole.json()["groups"][0]
    for k, part in enumerate(parts):
        body = part.json()
        assert body["groups"][0]["scores"] == [want["scores"][k]]
        assert body["groups"][0]["rewards"] == [want["rewards"][k]]
        assert body["reward_spec"]["focal"]["lambda"] == -1.0
