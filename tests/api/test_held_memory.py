"""Held memory is counted and bounded (issue 26, finding 2), by the RSS of a real server process.

Held samples whose callers closed their connections at once used to pin their whole request
(24 MiB group ids: ~72 MB each) while `vigor_held_bytes` counted a few kilobytes, and one caller
could take the whole held-sample pool. Now held bytes count the waiting request bodies and the
held tokens, and each caller (bearer token and run key) has its own quota beside the global one.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import psutil
import pytest

from vigor_client.wire import RUN_KEY_HEADER

from ..servers import ProcessServer

pytestmark = pytest.mark.slow
MiB = 1 << 20
ID_BYTES = 4 * MiB


def rss(server) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


def metric(server, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", httpx.get(server.url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def big_id_sample(k: int, tag: str) -> dict:
    """One held sample (its group never completes) whose group id is 4 MiB."""
    key = f"{tag}{k}-" + "x" * ID_BYTES
    group = {"id": key, "group_size": 2, "prompt_ids": [1, 2], "completion_ids": [[3]]}
    return {"groups": [group], "hold_s": 120}


def many_samples(n: int, tag: str) -> dict:
    """n one-token samples, each the first of its own group of two."""
    groups = [
        {"id": f"{tag}{k}", "group_size": 2, "prompt_ids": [1], "completion_ids": [[2]]}
        for k in range(n)
    ]
    return {"groups": groups, "hold_s": 120}


async def send(url: str, bodies: list[dict], headers: dict | None = None) -> list[int | None]:
    """Post each body and hang up after 5 s; the status, or None for one still held then."""

    async def one(client, body):
        try:
            return (await client.post("/v1/rewards", json=body, headers=headers or {})).status_code
        except httpx.TimeoutException:
            return None

    # A fresh connection per request: a pooled one that sat idle while its chunk's held requests
    # waited out their 5 s can be closed by uvicorn's 5 s keep-alive timer just as the next
    # chunk reuses it, and a POST on it fails with ReadError (one CI run in three).
    async with httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(5, connect=30),
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        out = []
        for chunk in range(0, len(bodies), 4):  # a few at a time: 4 MiB bodies on 2 cores
            out += await asyncio.gather(*(one(client, b) for b in bodies[chunk : chunk + 4]))
        return out


def start(model_dir, tmp_path, *flags: str) -> ProcessServer:
    srv = ProcessServer("--model", str(model_dir), *flags)
    return srv.start(tmp_path / "server.log")


def test_held_bytes_count_the_held_requests_and_bound_the_memory(tiny_chat_model_dir, tmp_path):
    bound = 160 * MiB
    srv = start(tiny_chat_model_dir, tmp_path, "--max-held-bytes", str(bound))
    try:
        before = rss(srv)
        statuses = asyncio.run(send(srv.url, [big_id_sample(k, "g") for k in range(48)]))
        held = statuses.count(None)
        assert statuses.count(429) == 48 - held, statuses
        # each held request pins its body three times over: ~12 MiB, so about 12 fit
        assert 6 <= held <= 14, statuses
        counted = metric(srv, "vigor_held_bytes")
        assert held * 3 * ID_BYTES <= counted <= bound
        grown = rss(srv) - before
        # 48 held requests pinned ~600 MB before; now RSS stays near the bound
        assert grown < 2 * bound, f"RSS grew {grown / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB"
        assert "max_held_bytes=" in srv.log() or statuses.count(429) > 0
    finally:
        srv.stop()


def test_one_caller_cannot_take_the_held_pool_from_another(tiny_chat_model_dir, tmp_path):
    quota = 64 * MiB
    srv = start(
        tiny_chat_model_dir, tmp_path,
        "--max-held-bytes-per-namespace", str(quota), "--max-held-samples-per-namespace", "1000",
    )  # fmt: skip
    try:
        a, b = {RUN_KEY_HEADER: "tenant-a"}, {RUN_KEY_HEADER: "tenant-b"}
        before = rss(srv)
        flood = asyncio.run(send(srv.url, [big_id_sample(k, "a") for k in range(32)], a))
        assert flood.count(429) == 32 - flood.count(None) and flood.count(None) <= 6, flood
        grown = rss(srv) - before
        assert grown < 3 * quota, f"RSS grew {grown / MiB:.0f} MiB for one caller's flood"
        # the other caller still holds samples, and its groups complete
        assert asyncio.run(send(srv.url, [big_id_sample(0, "b")], b)) == [None]
        pieces = asyncio.run(send(srv.url, [many_samples(600, "s"), many_samples(600, "t")], b))
        assert sorted(pieces, key=str) == [429, None], pieces  # 1000 samples per caller
        r = httpx.post(srv.url + "/v1/rewards", json=many_samples(500, "u"), headers=b, timeout=60)
        assert r.status_code == 429 and "max_held_samples_per_namespace=1000" in r.text
    finally:
        srv.stop()
