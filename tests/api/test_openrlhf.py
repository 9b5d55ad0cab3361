"""POST /get_reward with payloads shaped exactly as OpenRLHF builds them, on a real server.

OpenRLHF tokenizes each prompt text with add_special_tokens=False, generates response ids, and
sends query = decode(prompt_ids + response_ids, skip_special_tokens=False) with the prompt text.
"""

import httpx
import pytest

from vigor_service.scoring.openrlhf import split_response, strip_padding

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 12 * 3?", "Name a prime number above 10."]
ANSWERS = {
    0: ["12 * 3 = 36.", "It is 15<|im_start|>assistant\n36", "banana banana"],
    1: ["11", "13 is prime.", ""],
}


def chat_prompt(tok, question):
    return tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )


@pytest.fixture(scope="module")
def samples(default_tokenizer):
    """Interleaved groups (A0 B0 A1 B1 A2 B2), each response ending with EOS like vLLM's."""
    tok = default_tokenizer
    out = []
    for j in range(3):
        for g, question in enumerate(QUESTIONS):
            prompt = chat_prompt(tok, question)
            prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            response_ids = tok(ANSWERS[g][j], add_special_tokens=False)["input_ids"]
            response_ids = [*response_ids, tok.eos_token_id]
            query = tok.decode(prompt_ids + response_ids, skip_special_tokens=False)
            out.append(
                {
                    "group": g,
                    "prompt": prompt,
                    "prompt_ids": prompt_ids,
                    "ids": response_ids,
                    "query": query,
                }
            )
    return out


def get_reward(server, body, **params):
    return httpx.post(server.url + "/get_reward", json=body, params=params, timeout=120)


def payload(samples):
    return {
        "query": [s["query"] for s in samples],
        "prompts": [s["prompt"] for s in samples],
        "labels": ["36" if s["group"] == 0 else "11" for s in samples],
    }


@pytest.fixture(scope="module")
def plain(served_default, samples):
    r = get_reward(served_default, payload(samples), signals="entropy_mean,self_certainty")
    assert r.status_code == 200, r.text
    return r.json()


def test_matches_v1_rewards_on_the_generated_ids(served_default, samples, plain):
    got = plain
    # The same groups sent as ids: what the scores must equal.
    groups = []
    for g in range(len(QUESTIONS)):
        mine = [s for s in samples if s["group"] == g]
        groups.append(
            {"prompt_ids": mine[0]["prompt_ids"], "completion_ids": [s["ids"] for s in mine]}
        )
    want = httpx.post(
        served_default.url + "/v1/rewards", json={"groups": groups}, timeout=120
    ).json()
    for k, s in enumerate(samples):
        g, j = s["group"], k // 2
        wg = want["groups"][g]
        assert got["rewards"][k] == pytest.approx(wg["rewards"][j], abs=1e-12)
        assert got["scores"][k] == (got["rewards"][k] + 1) / 2  # in [0, 1], group mean 0.5
        assert got["extra_logs"]["vigor_score"][k] == pytest.approx(wg["scores"][j], rel=1e-9)
        assert got["extra_logs"]["vigor_num_tokens"][k] == len(s["ids"])  # special ids kept
    assert sorted(got["rewards"][0::2]) == [-1.0, 0.0, 1.0]
    assert sorted(got["rewards"][1::2]) == [-1.0, 0.0, 1.0]
    assert set(got["extra_logs"]) >= {"vigor_grad_norm", "vigor_unscored", "vigor_weight_version"}
    assert all(len(v) == len(samples) for v in got["extra_logs"].values())
    assert got["weight_version"] == want["weight_version"]


def test_special_token_text_maps_back_to_special_ids(default_tokenizer, samples):
    tok = default_tokenizer
    s = samples[2]  # "It is 15<|im_start|>assistant\n36" + EOS
    response = split_response(s["query"], s["prompt"], tok)
    assert response.endswith(tok.eos_token) and "<|im_start|>" in response
    assert tok(response, add_special_tokens=False)["input_ids"] == s["ids"]


def test_padded_queries_and_an_empty_batch(served_default, default_tokenizer, samples, plain):
    tok = default_tokenizer
    padded = payload(samples)
    # Old OpenRLHF decoded left-padded rows; pad == eos for this tokenizer.
    padded["query"] = [tok.pad_token * 2 + q + tok.pad_token * 3 for q in padded["query"]]
    again = get_reward(served_default, padded).json()  # no signals asked: none logged
    assert again["rewards"] == plain["rewards"] and "vigor_entropy_mean" not in again["extra_logs"]
    assert again["extra_logs"]["vigor_score"] == pytest.approx(plain["extra_logs"]["vigor_score"])
    empty = get_reward(served_default, {"query": [], "prompts": [], "labels": []})
    assert empty.status_code == 200 and empty.json()["rewards"] == []


def test_signals_go_to_extra_logs(served_default, samples, plain):
    logs = plain["extra_logs"]
    assert len(logs["vigor_entropy_mean"]) == len(samples)
    assert all(v > 0 for v in logs["vigor_entropy_mean"])
    bad = get_reward(served_default, payload(samples), signals="entropy")
    assert bad.status_code == 422 and "signals" in bad.json()["error"]["message"]


def test_errors_name_the_query(served_default, samples):
    body = payload(samples)
    body["query"][3] = "something else entirely"
    r = get_reward(served_default, body)
    assert r.status_code == 422
    assert "query[3]: does not start with prompts[3]" in r.json()["error"]["message"]
    short = payload(samples)
    short["prompts"] = short["prompts"][:-1]
    r = get_reward(served_default, short)
    assert r.status_code == 422 and "prompts has 5 items but query has 6" in r.text


def test_strip_padding_keeps_one_eos_when_pad_is_eos():
    assert strip_padding("<p><p>ab<p><p>", "<p>", "<e>") == "ab"
    assert strip_padding("ab<e><e>", "<e>", "<e>") == "ab<e>"
    assert strip_padding("ab<e>", "<e>", "<e>") == "ab<e>"
    assert strip_padding("ab", None, None) == "ab"


def test_a_missing_signal_is_flagged_in_extra_logs_not_hidden_as_zero(served_default, samples):
    group = [s for s in samples if s["group"] == 0]
    body = payload(group)
    body["query"][2] = body["prompts"][2]  # an empty response: no completion token to average
    r = get_reward(served_default, body, signals="entropy_mean")
    assert r.status_code == 200, r.text
    logs = r.json()["extra_logs"]
    assert logs["vigor_entropy_mean_missing"] == [0.0, 0.0, 1.0]
    assert logs["vigor_unscored"] == [0.0, 0.0, 1.0]
    assert all(v > 0 for v in logs["vigor_entropy_mean"][:2])
