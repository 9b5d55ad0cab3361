"""Issue 26, finding 10: a server that is busy but answering is ridden out. Six calls at once
against a real `vigor-serve --max-queue 1`: most are refused 429 at first, all of them succeed
with the client's default retry policy, and the server's own /metrics show the refusals."""

from __future__ import annotations

import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from vigor_client import VigorClient

from ..servers import ProcessServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_slot_server(default_model_dir, tmp_path_factory):
    server = ProcessServer("--max-queue", "1")
    server.start(tmp_path_factory.mktemp("busy") / "server.log")
    yield server
    server.stop()


def group(seed: int) -> dict:
    rng = random.Random(seed)
    # Long enough that a pass outlasts the six calls' arrival (so most find the queue full) and
    # refused calls come back while the server is still busy; short enough for a loaded CPU.
    return {
        "prompt_ids": [rng.randrange(10, 1000) for _ in range(32)],
        "completion_ids": [[rng.randrange(10, 1000) for _ in range(64)] for _ in range(2)],
    }


def refusals(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    found = re.findall(
        r'vigor_http_requests_total\{[^}]*route="/v1/rewards"[^}]*status="429"[^}]*\} (\S+)', text
    )
    return sum(float(x) for x in found)


def test_six_calls_at_once_against_a_queue_of_one_all_succeed(one_slot_server):
    url = one_slot_server.url
    # Warm, as a server is in a training run: the first pass's one-off cost would otherwise make
    # the server's Retry-After estimate (its mean batch time) minutes long.
    with VigorClient(url, timeout=300) as client:
        client.score([group(99)], shaping="none")
    warm = refusals(url)

    # All six are sent together: on a quiet machine a pass takes well under a second, and calls
    # staggered by thread start-up and connection set-up would find the queue free again.
    together = threading.Barrier(6, timeout=60)

    def call(seed: int):
        # The default retry policy; a long read timeout, for a CPU shared with other work.
        with VigorClient(url, timeout=300) as client:
            together.wait()
            t0 = time.monotonic()
            result = client.score([group(seed)], shaping="none")
            print(f"call {seed}: {time.monotonic() - t0:.1f} s")
            return result

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    assert [len(r.groups[0].scores) for r in results] == [2] * 6
    assert all(s is not None for r in results for s in r.groups[0].scores)
    refused = refusals(url) - warm
    print(f"refused {refused:.0f} times")
    assert refused >= 3  # the server was busy: most calls were refused at first
