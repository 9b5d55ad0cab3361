"""Weight changes through a proxy that drops connections: a versioned change is repeated and a
lost answer recovered, a bucketed push resumes or starts over, an unversioned change never runs
twice. The server is real (a tiny model in-process); the scores prove which weights it holds."""

from __future__ import annotations

import pytest
import torch

from vigor_client import (
    NotReadyError,
    RecoveredUpdate,
    RetryPolicy,
    VigorClient,
    VigorConnectionError,
)
from vigor_client._weights import buckets, named_tensors

from ..tiny_models import tiny_llama
from ..weights.helpers import GROUPS, perturbed, save_checkpoint, state, tiny_server
from .flaky_proxy import FlakyProxy

FAST = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05, seed=0)
BUCKET = 4000  # bytes: the tiny model goes in several buckets


@pytest.fixture(scope="module")
def pert():
    return perturbed(state(tiny_llama(tied=True, dtype=torch.float32)))


@pytest.fixture(scope="module")
def pert_scores(pert):
    model = tiny_llama(tied=True, dtype=torch.float32)
    model.load_state_dict(pert)
    with tiny_server(model) as srv, VigorClient(srv.url) as client:
        return client.score(GROUPS, shaping="none").groups[0].scores


@pytest.fixture(scope="module")
def server():
    with tiny_server(upload_ttl_s=1.0) as srv:
        yield srv


@pytest.fixture()
def proxy(server):
    with FlakyProxy(server.url) as p:
        yield p


@pytest.fixture()
def client(proxy):
    with VigorClient(proxy.url, retry=FAST) as c:
        yield c


def served(client: VigorClient) -> tuple[int, list[float]]:
    res = client.score(GROUPS, shaping="none")
    return res.weight_version, res.groups[0].scores


def test_the_push_really_takes_several_buckets(pert):
    assert len(buckets(named_tensors(pert), BUCKET)) >= 3


def test_an_unversioned_push_is_never_repeated(client, proxy, pert):
    before = client.model_info().weight_version
    proxy.script("/admin/weights/push", ["drop"])
    with pytest.raises(VigorConnectionError) as info:
        client.push_weights(pert, progress=False)  # one request: the model fits one bucket
    assert info.value.attempts == 1 and "not idempotent" in str(info.value)
    assert proxy.count("/admin/weights/push") == 1
    assert client.model_info().weight_version == before  # dropped before the server saw it

    proxy.script("/admin/weights/push", ["drop_answer"])
    with pytest.raises(VigorConnectionError):
        client.push_weights(pert, progress=False)
    assert proxy.count("/admin/weights/push") == 2  # one more arrival, not a repeat
    assert client.model_info().weight_version == before + 1  # applied once, never twice


def test_an_unversioned_reload_is_not_repeated_after_a_503(client, proxy, pert, tmp_path):
    ckpt = save_checkpoint(pert, tmp_path / "ckpt")
    proxy.script("/admin/weights/reload", ["503", "pass"])
    with pytest.raises(NotReadyError) as info:
        client.reload_weights(ckpt)
    assert info.value.attempts == 1 and "served + 1" in str(info.value)
    assert proxy.count("/admin/weights/reload") == 1


def test_a_versioned_push_recovers_its_lost_answer(client, proxy, pert, pert_scores):
    version = client.model_info().weight_version + 1
    proxy.script("/admin/weights/push", ["drop_answer"])
    result = client.push_weights(pert, version=version, progress=False)
    assert isinstance(result, RecoveredUpdate) and result.recovered
    assert (result.weight_version, result.operation, result.tensors) == (version, "push", None)
    assert proxy.count("/admin/weights/push", forwarded=True) == 2  # the repeat met a 409
    assert served(client) == (version, pert_scores)


def test_a_bucketed_push_resumes_a_dropped_bucket(client, proxy, pert, pert_scores):
    version = client.model_info().weight_version + 1
    n = len(buckets(named_tensors(pert), BUCKET))
    proxy.script("/buckets", ["pass", "drop", "drop_answer"])
    result = client.push_weights(pert, version=version, bucket_bytes=BUCKET, progress=False)
    assert not isinstance(result, RecoveredUpdate) and result.weight_version == version
    assert proxy.count("/admin/weights/uploads") == n + 2 + 2  # create, n + 2 stages, commit
    assert proxy.count("POST /admin/weights/uploads", forwarded=True) == n + 1 + 2
    assert served(client) == (version, pert_scores)


def test_a_bucketed_push_starts_over_when_its_upload_expired(client, proxy, pert, pert_scores):
    version = client.model_info().weight_version + 1
    # The second bucket arrives after the server's 1 s upload TTL: a real 404 upload_not_found.
    proxy.script("/buckets", ["pass", "delay:1.5"])
    result = client.push_weights(pert, version=version, bucket_bytes=BUCKET, progress=False)
    assert result.weight_version == version
    creates = [a for m, p, a in proxy.seen if p == "/admin/weights/uploads"]
    assert len(creates) == 2  # started over with a new upload
    assert proxy.count("DELETE /admin/weights/uploads") == 1  # the expired one, aborted
    assert served(client) == (version, pert_scores)


def test_a_bucketed_push_recovers_a_lost_commit_answer(client, proxy, pert, pert_scores):
    version = client.model_info().weight_version + 1
    proxy.script("/commit", ["drop_answer"])
    result = client.push_weights(pert, version=version, bucket_bytes=BUCKET, progress=False)
    assert isinstance(result, RecoveredUpdate) and result.operation == "commit"
    assert result.weight_version == version and proxy.count("/commit", forwarded=True) == 2
    assert served(client) == (version, pert_scores)


def test_an_unversioned_commit_is_not_repeated(client, proxy, pert):
    before = client.model_info().weight_version
    proxy.script("/commit", ["drop_answer"])
    with pytest.raises(VigorConnectionError) as info:
        client.push_weights(pert, bucket_bytes=BUCKET, progress=False)
    assert info.value.attempts == 1 and proxy.count("/commit") == 1
    assert client.model_info().weight_version == before + 1


def test_retries_run_out_on_a_bucket_and_the_upload_is_aborted(client, proxy, pert):
    before = client.model_info().weight_version
    proxy.script("/buckets", ["pass", "503", "503", "503", "503"])
    with pytest.raises(NotReadyError) as info:
        client.push_weights(pert, version=before + 1, bucket_bytes=BUCKET, progress=False)
    assert info.value.attempts == 4 and "max_retries=3" in str(info.value)
    assert proxy.count("DELETE /admin/weights/uploads") == 1
    assert client.model_info().weight_version == before
