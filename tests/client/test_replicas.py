"""Several replicas behind one client, against two real `vigor-serve` processes (the pure routing
arithmetic is in test_routing.py).

The processes serve a tiny random Llama saved as a Hugging Face checkpoint, so scoring is fast;
requests carry token ids (the checkpoint has no tokenizer).
"""

import asyncio

import pytest

from vigor_client import VigorClient, VigorConnectionError
from vigor_client._routing import split_urls
from vigor_client.replicas import AsyncVigorReplicas, VigorReplicas, WeightSyncError, connect

from ..servers import ProcessServer, free_port
from .id_groups import ids_group


# --- urls, and connecting to replicas that are not there ------------------------------
def test_urls_and_connect():
    assert split_urls("http://a:1/, http://b:2,http://a:1") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError):
        split_urls(" , ")
    assert isinstance(connect("http://a:1"), VigorClient)
    both = connect("http://a:1,http://b:2")
    assert isinstance(both, VigorReplicas) and both.urls == ["http://a:1", "http://b:2"]
    both.close()


def test_no_reachable_replica_names_every_url():
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with VigorReplicas(dead, timeout=2) as replicas, pytest.raises(VigorConnectionError) as info:
        replicas.score([ids_group(2, [1])])
    for url in dead:
        assert url in str(info.value)


# --- two real server processes --------------------------------------------------------------
@pytest.fixture(scope="module")
def two_servers(tiny_checkpoint, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replica-logs")
    servers = [ProcessServer("--model", str(tiny_checkpoint), "--engine", "loop") for _ in range(2)]
    try:
        for k, s in enumerate(servers):
            s.start(logs / f"replica{k}.log")
        yield servers
    finally:
        for s in servers:
            s.stop()


GROUPS = [ids_group(6, [4, 3, 5], seed=1), ids_group(3, [2, 2], seed=2),
          ids_group(5, [6, 1, 2, 3], seed=3), ids_group(2, [3], seed=4)]  # fmt: skip


def spy(replicas):
    """Record which groups each replica's client was asked to score."""
    seen = {u: [] for u in replicas.urls}
    for url, client in zip(replicas.urls, replicas.clients, strict=True):
        original = client.score

        def wrapped(groups, _orig=original, _url=url, **kw):
            seen[_url].append([g.id for g in groups])
            return _orig(groups, **kw)

        client.score = wrapped
    return seen


@pytest.mark.slow
def test_groups_are_routed_to_both_replicas_and_scored_exactly(two_servers):
    urls = [s.url for s in two_servers]
    with VigorClient(urls[0]) as one:
        want = one.score(GROUPS)
    with VigorReplicas(urls) as replicas:
        replicas.wait_until_ready(timeout=30)
        seen = spy(replicas)
        got = replicas.score(GROUPS, signals=["entropy_mean"])
    assert all(seen[u] for u in urls), seen  # both did work
    assert sorted(i for calls in seen.values() for ids in calls for i in ids) == [1, 2, 3, 4]
    assert [g.id for g in got.groups] == [1, 2, 3, 4]
    for a, b in zip(got.groups, want.groups, strict=True):
        assert a.rewards == b.rewards
        assert a.scores == pytest.approx(b.scores, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["sync", "async"])
def test_samples_sent_one_at_a_time_are_assembled_on_one_replica(two_servers, twin):
    """As OpenRLHF and verl send them: one request per completion, with group_size. Spread over
    both replicas, neither would hold the whole group (each would answer 504 at hold_s)."""
    from concurrent.futures import ThreadPoolExecutor

    from vigor_client import Group

    urls = [s.url for s in two_servers]
    whole = ids_group(5, [3, 4, 2, 6], seed=7)
    with VigorClient(urls[0]) as one:
        want = one.score([whole]).groups[0]
    for key in ("q-1", "q-2", "q-3"):  # a different key, perhaps a different replica, each time
        samples = [
            Group(id=key, prompt_ids=whole.prompt_ids, completion_ids=[c], group_size=4, hold_s=20)
            for c in whole.completion_ids
        ]
        if twin == "sync":
            with VigorReplicas(urls) as replicas, ThreadPoolExecutor(4) as pool:
                rows = list(pool.map(lambda g, r=replicas: r.score([g]).groups[0], samples))
        else:

            async def run(samples=samples):
                async with AsyncVigorReplicas(urls) as replicas:
                    res = await asyncio.gather(*(replicas.score([g]) for g in samples))
                return [r.groups[0] for r in res]

            rows = asyncio.run(run())
        assert [r.rewards[0] for r in rows] == want.rewards, [r.reasons for r in rows]
        assert [r.scores[0] for r in rows] == pytest.approx(want.scores, rel=1e-6)


@pytest.mark.slow
def test_weight_pushes_are_broadcast_and_versions_must_agree(two_servers, tiny_checkpoint):
    from safetensors import safe_open

    urls = [s.url for s in two_servers]
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        norm = f.get_tensor("model.norm.weight")
    with VigorReplicas(urls) as replicas:
        before = replicas.score(GROUPS[:1]).groups[0].scores
        start = replicas.model_info().weight_version
        v = replicas.push_weights({"model.norm.weight": norm * 1.5}, version=start + 1)
        assert v == start + 1
        infos = replicas.model_infos()
        assert {i.weight_version for i in infos.values()} == {start + 1}
        after = replicas.score(GROUPS[:1], min_weight_version=start + 1)
        assert after.weight_version == start + 1 and after.groups[0].scores != before

        # Replica 0 moves ahead on its own: the next broadcast of that version fails there.
        with VigorClient(urls[0]) as first:
            first.push_weights({"model.norm.weight": norm * 2.0}, version=start + 2)
        with pytest.raises(WeightSyncError) as info:
            replicas.push_weights({"model.norm.weight": norm * 2.0}, version=start + 2)
        err = info.value
        assert list(err.failures) == [urls[0]] and urls[0] in str(err)
        assert err.versions == {urls[0]: start + 2, urls[1]: start + 2}
        # A bad path fails on every replica, each named.
        with pytest.raises(WeightSyncError) as info:
            replicas.reload_weights("/nonexistent/checkpoint", version=start + 3)
        assert set(info.value.failures) == set(urls)
        assert replicas.push_weights({"model.norm.weight": norm}, version=start + 3) == start + 3


@pytest.mark.slow
def test_async_replicas_route_and_broadcast(two_servers):
    urls = [s.url for s in two_servers]

    async def run():
        async with AsyncVigorReplicas(urls) as replicas:
            await replicas.wait_until_ready(timeout=30)
            res = await replicas.score(GROUPS)
            infos = await replicas.model_infos()
            return res, infos

    res, infos = asyncio.run(run())
    assert [g.id for g in res.groups] == [1, 2, 3, 4]
    assert set(infos) == set(urls)


@pytest.mark.slow
def test_a_dead_replica_is_rested_and_its_groups_go_elsewhere(two_servers):
    urls = [s.url for s in two_servers]
    dead = f"http://127.0.0.1:{free_port()}"
    with VigorReplicas([dead, urls[0]], timeout=5) as replicas:
        res = replicas.score(GROUPS)
        assert [g.id for g in res.groups] == [1, 2, 3, 4]
        resting = replicas.states[0]
        assert not resting.available() and "cannot reach" in resting.last_error
        seen = spy(replicas)
        replicas.score(GROUPS)  # the resting replica gets nothing
        assert seen[dead] == [] and seen[urls[0]]
        with pytest.raises(WeightSyncError) as info:
            replicas.unload_adapter()
        assert dead in info.value.failures


def test_requests_are_checked_once_before_routing():
    from pydantic import ValidationError

    with VigorReplicas("http://a:1,http://b:2") as replicas:
        with pytest.raises(ValidationError, match="at least 1"):
            replicas.score([])
        with pytest.raises(ValidationError, match="entropy_mean"):
            replicas.score([ids_group(2, [1])], signals=["nope"])
