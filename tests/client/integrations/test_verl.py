"""The verl reward functions, loaded and called the way verl loads and calls them.

verl's `get_custom_reward_fn` imports `custom_reward_function.path` with
`spec_from_file_location("custom_module", path)` and wraps `name` so that
`custom_reward_function.reward_kwargs` are passed as keywords. The naive reward manager calls
`compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` per sample; the batch
manager calls `compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=)` with
numpy object arrays from `non_tensor_batch`, after `balance_batch` has reordered the rows.
"""

import importlib.util
import subprocess
import sys

import httpx
import numpy as np
import pytest

import vigor_client.integrations.verl as verl_module

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2 + 2?", "Name a colour of the sky."]
RESPONSES = [["4", "2 + 2 = 4.", "five"], ["Blue.", "The sky is blue.", "potato"]]


def load_like_verl(name: str, **reward_kwargs):
    """A copy of verl's loading: by file path, as a standalone module, kwargs bound."""
    path = subprocess.run(
        [sys.executable, "-m", "vigor_client.integrations.verl"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_module"] = module
    spec.loader.exec_module(module)
    raw_fn = getattr(module, name)

    def wrapped_fn(*args, **kwargs):
        return raw_fn(*args, **kwargs, **reward_kwargs)

    return wrapped_fn


def v1_rewards(server, groups, **options):
    r = httpx.post(server.url + "/v1/rewards", json={"groups": groups, **options}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def rows():
    """A GRPO batch of 2 prompts × 3 responses, repeated interleave-style, then shuffled."""
    out = []
    for g, q in enumerate(QUESTIONS):
        info = {"split": "train", "index": g, "prompt": [{"role": "user", "content": q}]}
        for j, resp in enumerate(RESPONSES[g]):
            out.append({"g": g, "j": j, "response": resp, "info": info})
    order = [4, 0, 5, 2, 1, 3]  # what balance_batch may do
    return [out[k] for k in order]


def test_batch_variant_ranks_within_each_prompt_group(served_default, rows):
    fn = load_like_verl("compute_score_batch", server_url=served_default.url)
    extra_infos = np.array([r["info"] for r in rows], dtype=object)
    out = fn(
        data_sources=np.array(["gsm8k"] * len(rows), dtype=object),
        solution_strs=[r["response"] for r in rows],
        ground_truths=["4" if r["g"] == 0 else "blue" for r in rows],
        extra_infos=extra_infos,
    )
    want = v1_rewards(
        served_default,
        [
            {"messages": [{"role": "user", "content": q}], "completions": RESPONSES[g]}
            for g, q in enumerate(QUESTIONS)
        ],
    )
    for r, got in zip(rows, out, strict=True):
        wg = want["groups"][r["g"]]
        assert got["score"] == wg["rewards"][r["j"]]
        assert got["vigor_score"] == pytest.approx(wg["scores"][r["j"]], rel=1e-9)
        assert got["vigor_weight_version"] == want["weight_version"]
    assert len({frozenset(d) for d in out}) == 1  # verl collects extras key by key
    for g in range(2):
        assert sorted(o["score"] for r, o in zip(rows, out, strict=True) if r["g"] == g) == [
            -1.0,
            0.0,
            1.0,
        ]


def test_uid_in_extra_info_decides_the_groups(served_default, rows):
    fn = load_like_verl("compute_score_batch", server_url=served_default.url)
    # Same prompt text for all six, but two uids: the uid wins.
    infos = [{"prompt": "Say something.", "uid": "a" if k < 3 else "b"} for k in range(len(rows))]
    out = fn(
        data_sources=["x"] * 6,
        solution_strs=[r["response"] for r in rows],
        ground_truths=[None] * 6,
        extra_infos=infos,
    )
    assert sorted(o["score"] for o in out[:3]) == [-1.0, 0.0, 1.0]
    assert sorted(o["score"] for o in out[3:]) == [-1.0, 0.0, 1.0]


def test_per_sample_variant_returns_the_raw_score(served_default):
    fn = load_like_verl("compute_score", server_url=served_default.url)
    info = {"index": 0, "question": QUESTIONS[0]}  # verl's gsm8k preprocessing keeps the question
    got = fn(data_source="gsm8k", solution_str="4", ground_truth="4", extra_info=info)
    want = v1_rewards(
        served_default, [{"prompt": QUESTIONS[0], "completions": ["4"]}], shaping="none"
    )
    assert got["score"] == pytest.approx(want["groups"][0]["scores"][0], rel=1e-9)
    assert got["score"] < 0 and got["vigor_num_tokens"] == want["groups"][0]["num_tokens"][0]


def test_missing_prompt_and_empty_response_are_errors_not_zeros(served_default):
    fn = load_like_verl("compute_score", server_url=served_default.url)
    with pytest.raises(KeyError, match="extra_info has none of"):
        fn(data_source="x", solution_str="4", ground_truth="4", extra_info={"index": 3})
    with pytest.raises(ValueError, match="empty_completion"):
        fn(data_source="x", solution_str="", ground_truth="4", extra_info={"prompt": "Hi"})
    batch = load_like_verl("compute_score_batch", server_url=served_default.url)
    out = batch(
        data_sources=["x"] * 2,
        solution_strs=["Hello!", ""],
        ground_truths=[None] * 2,
        extra_infos=[{"prompt": "Hi"}] * 2,
    )
    assert [o["score"] for o in out] == [1.0, -1.0]
    assert out[1]["vigor_unscored"] == 1.0 and out[1]["vigor_score"] < out[0]["vigor_score"]


def test_prompt_forms():
    assert verl_module.prompt_form({"prompt": "hi"}) == {"prompt": "hi"}
    assert verl_module.prompt_form({"raw_prompt": np.array([1, 2])}) == {"prompt_ids": [1, 2]}
    msgs = np.array([{"role": "user", "content": "q", "extra": 1}], dtype=object)
    assert verl_module.prompt_form({"question": msgs}) == {
        "messages": [{"role": "user", "content": "q"}]
    }
    assert verl_module.prompt_form({"q": "x", "prompt": "y"}, prompt_key="q") == {"prompt": "x"}
