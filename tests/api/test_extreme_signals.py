"""A signal that overflows (perplexity at a tiny temperature) is null with a reason, and never
fails the requests coalesced into the same engine call."""

import threading

import httpx

from ..weights.helpers import tiny_server

GROUP = {"prompt_ids": [1, 2, 3], "completion_ids": [[4, 5], [6, 7, 8]]}


def post(url, body, out, key):
    out[key] = httpx.post(url + "/v1/rewards", json=body, timeout=60)


def test_overflowing_signal_is_null_with_reason_and_batch_mates_are_answered():
    with tiny_server(batch_window_ms=300) as srv:
        bodies = {
            "perplexity": {"groups": [GROUP], "signals": ["perplexity"], "temperature": 1e-6},
            "others": {
                "groups": [GROUP], "signals": ["logprob_mean", "self_certainty"],
                "temperature": 1e-6,
            },
        }  # fmt: skip
        out: dict = {}
        threads = [
            threading.Thread(target=post, args=(srv.url, b, out, k)) for k, b in bodies.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert {k: r.status_code for k, r in out.items()} == {"perplexity": 200, "others": 200}
        group = out["perplexity"].json()["groups"][0]
        assert group["signals"] == {"perplexity": [None, None]}
        assert group["signal_reasons"] == {"perplexity": ["non_finite_signal"] * 2}
        assert all(s is not None for s in group["scores"])  # the reward never uses temperature
        other = out["others"].json()["groups"][0]
        assert all(v is not None for vs in other["signals"].values() for v in vs)
        assert other["signal_reasons"] == {"logprob_mean": [None] * 2, "self_certainty": [None] * 2}
