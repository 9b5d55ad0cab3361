"""Backpressure, deadlines, limits and graceful shutdown on a real `vigor-serve` process."""

import signal
import threading
import time

import httpx
import pytest
import torch

from vigor_service.settings import CPU_BATCH_TOKENS, CUDA_BATCH_TOKENS

from ..servers import ProcessServer, metric, until

pytestmark = pytest.mark.slow

LONG = {"groups": [{"prompt_ids": [1] * 64, "completion_ids": [[5] * 400] * 4}]}
SHORT = {"groups": [{"prompt_ids": [1, 2], "completion_ids": [[3]]}]}


@pytest.fixture(scope="module")
def tight_server(default_model_dir, tmp_path_factory):
    server = ProcessServer(
        "--max-queue", "1", "--max-groups", "3", "--max-completions-per-group", "8",
        "--max-request-bytes", "100000", "--max-sequence-tokens", "1024",
        "--drain-timeout-s", "60",
    )  # fmt: skip
    server.start(tmp_path_factory.mktemp("tight") / "server.log")
    yield server
    server.stop()


def post(server, body, timeout=300):
    return httpx.post(server.url + "/v1/rewards", json=body, timeout=timeout)


def in_background(fn, *args):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", fn(*args)), daemon=True)
    thread.start()
    return thread, out


def queue_depth(server) -> float:
    return metric(httpx.get(server.url + "/metrics", timeout=10).text, "vigor_queue_depth")


def wait_busy(server):
    """Until the long request is running on the engine (the queue gauge counts it)."""
    until(
        lambda: queue_depth(server) in (1, 2), "the long request reached the engine", every_s=0.02
    )


def test_full_queue_is_429_with_retry_after_and_deadline_is_504(tight_server):
    long_thread, long_out = in_background(post, tight_server, LONG)
    wait_busy(tight_server)
    queued_thread, queued_out = in_background(post, tight_server, SHORT)
    # One running, one waiting: the queue (size 1) is full. The scheduler takes no job from the
    # queue while the engine runs one, so a depth of 2 is that state.
    until(lambda: queue_depth(tight_server) == 2, "the short request queued behind the long one")
    r = post(tight_server, SHORT)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "overloaded" and int(r.headers["Retry-After"]) >= 1
    long_thread.join(300)
    queued_thread.join(300)
    assert long_out["r"].status_code == 200 and queued_out["r"].status_code == 200

    long_thread, long_out = in_background(post, tight_server, LONG)
    wait_busy(tight_server)
    t0 = time.monotonic()
    r = post(tight_server, {**SHORT, "deadline_s": 0.3})
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - t0 < 5  # answered at the deadline, not after the long request
    long_thread.join(300)
    assert long_out["r"].status_code == 200


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"groups": [SHORT["groups"][0]] * 4}, "max_groups=3"),
        (
            {"groups": [{"prompt_ids": [1], "completion_ids": [[2]] * 9}]},
            "max_completions_per_group=8",
        ),
        (
            {"groups": [{"prompt_ids": [1] * 60000, "completion_ids": [[2]]}]},
            "max_request_bytes=100000",
        ),
    ],
)
def test_size_limits_are_413_naming_the_limit(tight_server, body, phrase):
    r = post(tight_server, body)
    assert r.status_code == 413, r.text
    assert phrase in r.json()["error"]["message"]


def test_sequence_limit_is_422_and_limits_are_reported(tight_server):
    r = post(tight_server, {"groups": [{"prompt_ids": [1] * 1000, "completion_ids": [[2] * 30]}]})
    assert r.status_code == 422 and "max_sequence_tokens=1024" in r.text
    limits = httpx.get(tight_server.url + "/v1/model", timeout=10).json()["limits"]
    budget = CUDA_BATCH_TOKENS if torch.cuda.is_available() else CPU_BATCH_TOKENS
    # On CPU the request bound is derived from memory (test_token_budget.py checks how).
    request_tokens = limits["max_request_tokens"] if not torch.cuda.is_available() else 65536
    assert request_tokens <= 65536
    assert limits == {
        "max_request_bytes": 100000, "max_groups": 3, "max_completions_per_group": 8,
        "max_sequence_tokens": 1024, "max_request_tokens": request_tokens,
        "max_batch_tokens": budget,
    }  # fmt: skip


def test_sigterm_drains_in_flight_work_then_exits(default_model_dir, tmp_path):
    # The drain must outlast the long request: on a loaded 2-core machine it took over 60 s.
    server = ProcessServer("--drain-timeout-s", "300")
    server.start(tmp_path / "server.log")
    try:
        long_thread, long_out = in_background(post, server, LONG)
        wait_busy(server)
        server.proc.send_signal(signal.SIGTERM)
        until(
            lambda: httpx.get(server.url + "/ready", timeout=10).status_code == 503,
            "/ready answered 503 after SIGTERM",
        )
        refused = post(server, SHORT, timeout=30)
        assert refused.status_code == 503 and "shutting down" in refused.text
        long_thread.join(300)
        assert long_out["r"].status_code == 200, long_out["r"].text
        assert server.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
