"""POST /v1/rewards on a real `vigor-serve` process serving the default model."""

import httpx
import pytest

from ..assertions import assert_close
from ..naive import naive_grad_norm, naive_rank_rewards, naive_score

pytestmark = pytest.mark.slow

QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips in total?"
ANSWERS = ["48 + 24 = 72. The answer is 72.", "She sold 96 clips.", "72", ""]


def post(server, body, **kw):
    return httpx.post(server.url + "/v1/rewards", json=body, timeout=120, **kw)


def ok(server, body):
    r = post(server, body)
    assert r.status_code == 200, r.text
    return r.json()


def test_all_prompt_and_completion_forms_agree(served_default, default_tokenizer):
    tok = default_tokenizer
    messages = [{"role": "user", "content": QUESTION}]
    chat_ids = tok(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )["input_ids"]
    completion_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
    text_ids = tok(QUESTION)["input_ids"]
    res = ok(
        served_default,
        {
            "groups": [
                {"id": "text", "prompt": QUESTION, "completions": ANSWERS},
                {"id": 7, "prompt_ids": text_ids, "completion_ids": completion_ids},
                {"messages": messages, "completions": ANSWERS},
                {"prompt_ids": chat_ids, "completion_ids": completion_ids},
            ]
        },
    )
    g = res["groups"]
    assert [x["id"] for x in g] == ["text", 7, None, None]
    assert_close(g[0]["scores"], g[1]["scores"], rel=1e-6)
    assert_close(g[2]["scores"], g[3]["scores"], rel=1e-6)
    assert g[0]["scores"][0] != pytest.approx(g[2]["scores"][0], rel=1e-3)  # the template matters
    for group in g:
        assert group["num_tokens"] == [len(c) for c in completion_ids]
        assert group["scores"][3] is None and group["reasons"][3] == "empty_completion"
        assert group["rewards"] == pytest.approx(naive_rank_rewards(group["scores"]))
    assert res["model"] == "SmolLM2-135M-Instruct" and res["weight_version"] == 0


def test_scores_match_an_independent_float64_computation(
    served_default, default_model, default_tokenizer
):
    tok = default_tokenizer
    prompt = tok("Q: 2+3=? A:")["input_ids"]
    comps = [tok(" 5", add_special_tokens=False)["input_ids"], [2, 28120, 2]]  # pad/eos id inside
    res = ok(served_default, {"groups": [{"prompt_ids": prompt, "completion_ids": comps}]})
    want = [naive_score(naive_grad_norm(default_model, prompt, c), len(c)) for c in comps]
    assert res["groups"][0]["scores"] == pytest.approx(want, rel=1e-4)
    assert res["groups"][0]["rewards"] == naive_rank_rewards(want)


def test_shaping_none_returns_scores_and_signals_on_request(served_default):
    body = {"groups": [{"prompt": QUESTION, "completions": ANSWERS[:3]}], "shaping": "none"}
    plain = ok(served_default, body)["groups"][0]
    assert plain["rewards"] == plain["scores"] and plain.get("signals") is None
    sig = ok(served_default, {**body, "signals": ["logprob_mean", "perplexity"]})["groups"][0]
    assert_close(sig["scores"], plain["scores"], rel=1e-9)
    assert set(sig["signals"]) == {"logprob_mean", "perplexity"}
    assert all(v < 0 for v in sig["signals"]["logprob_mean"])


def test_single_completion_group_gets_zero_reward(served_default):
    res = ok(served_default, {"groups": [{"prompt": "Hi", "completions": ["Hello!"]}]})
    assert res["groups"][0]["rewards"] == [0.0] and res["groups"][0]["scores"][0] < 0


BAD = [
    ({"groups": []}, "groups", "at least 1"),
    ({}, "groups", "required"),
    ([1, 2], "body", "dictionary"),
    (
        {"groups": [{"prompt": "a", "prompt_ids": [1], "completions": ["b"]}]},
        "groups[0]",
        "exactly one of prompt",
    ),
    ({"groups": [{"completions": ["b"]}]}, "groups[0]", "exactly one of prompt"),
    (
        {"groups": [{"prompt": "a", "completions": ["b"], "completion_ids": [[1]]}]},
        "groups[0]",
        "exactly one of completions",
    ),
    ({"groups": [{"prompt": "a", "completions": []}]}, "groups[0]", "completions is empty"),
    ({"groups": [{"prompt": "a", "completions": "abc"}]}, "groups[0].completions", "valid list"),
    (
        {"groups": [{"prompt": "a", "completion_ids": [[1, 2], 5]}]},
        "groups[0].completion_ids[1]",
        "valid list",
    ),
    (
        {"groups": [{"prompt": "a", "completion_ids": [[1, "2"]]}]},
        "groups[0].completion_ids[0][1]",
        "integer",
    ),
    (
        {"groups": [{"prompt": "a", "completion_ids": [[1, 2.5]]}]},
        "groups[0].completion_ids[0][1]",
        "integer",
    ),
    (
        {"groups": [{"prompt": "a", "completion_ids": [[1, -3]]}]},
        "groups[0].completion_ids[0][1]",
        "greater than or equal to 0",
    ),
    (
        {
            "groups": [
                {"prompt": "a", "completions": ["x"]},
                {"prompt": "a", "completion_ids": [[5], [1, 49152]]},
            ]
        },
        "groups[1].completion_ids[1][1]",
        "outside the vocabulary",
    ),
    (
        {"groups": [{"prompt_ids": [10**30], "completions": ["x"]}]},
        "groups[0].prompt_ids[0]",
        "outside the vocabulary",
    ),
    (
        {"groups": [{"prompt_ids": [1] * 8190, "completion_ids": [[1], [1, 2, 3]]}]},
        "groups[0].completion_ids[1]",
        # the context (8192), or lower on CPU (from memory: tests/serving/test_token_budget.py)
        "exceeds max_sequence_tokens=",
    ),
    ({"groups": [{"prompt": "", "completions": ["x"]}]}, "groups[0].prompt", "prompt is empty"),
    (
        {"groups": [{"prompt_ids": [], "completions": ["x"]}]},
        "groups[0].prompt_ids",
        "prompt is empty",
    ),
    (
        {"groups": [{"messages": [{"role": "user"}], "completions": ["x"]}]},
        "groups[0].messages[0].content",
        "required",
    ),
    ({"groups": [{"messages": "hi", "completions": ["x"]}]}, "groups[0].messages", "valid list"),
    ({"groups": [{"prompt": 5, "completions": ["x"]}]}, "groups[0].prompt", "valid string"),
    (
        {"groups": [{"prompt": "a", "completions": ["x"], "extra": 1}]},
        "groups[0].extra",
        "not permitted",
    ),
    (
        {"groups": [{"prompt": "a", "completions": ["x"]}], "shaping": "softmax"},
        "shaping",
        "'rank' or 'none'",
    ),
    (
        {"groups": [{"prompt": "a", "completions": ["x"]}], "signals": ["vibes"]},
        "signals[0]",
        "logprob_sum",
    ),
    (
        {"groups": [{"prompt": "a", "completions": ["x"]}], "temperature": 0},
        "temperature",
        "greater than 0",
    ),
    ({"groups": [{"id": [1], "prompt": "a", "completions": ["x"]}]}, "groups[0].id", "string"),
]


@pytest.mark.parametrize(("body", "loc", "phrase"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_is_422_naming_the_place(served_default, body, loc, phrase):
    r = post(served_default, body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert loc in err["message"] and phrase in err["message"], err["message"]


def test_invalid_json_and_wrong_content_are_4xx(served_default):
    url = served_default.url + "/v1/rewards"
    json_type = {"content-type": "application/json"}
    for content, headers, status, code, phrase in [
        (b'{"groups": [', json_type, 422, "invalid_request", "JSON"),
        (b"\xff\xfe", json_type, 422, "invalid_request", "not valid JSON"),
        (b'{"groups": "\xff"}', json_type, 400, "invalid_body", "not valid UTF-8"),
        (b"groups=1", {"content-type": "application/x-www-form-urlencoded"}, 415,
         "unsupported_media_type", "x-www-form-urlencoded"),
        (b"", {}, 422, "invalid_request", "body: Field required"),
    ]:  # fmt: skip
        r = httpx.post(url, content=content, headers=headers, timeout=30)
        assert r.status_code == status, (content, r.text)
        error = r.json()["error"]
        assert error["code"] == code and phrase in error["message"], (content, error)


def test_unknown_route_and_method_are_json_errors(served_default):
    r = httpx.get(served_default.url + "/v1/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(served_default.url + "/v1/rewards", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_health_ready_and_model_info(served_default):
    assert httpx.get(served_default.url + "/health", timeout=10).status_code == 200
    assert httpx.get(served_default.url + "/ready", timeout=10).status_code == 200
    info = httpx.get(served_default.url + "/v1/model", timeout=10).json()
    assert info["model"] == "SmolLM2-135M-Instruct"
    assert info["num_parameters"] == info["num_scored_parameters"] == 134515008
    assert info["vocab_size"] == 49152
    # the context (8192), lowered on CPU to what memory holds (tests/serving/test_token_budget.py)
    assert info["max_sequence_length"] == info["limits"]["max_sequence_tokens"] <= 8192
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["weight_version"] == 0
