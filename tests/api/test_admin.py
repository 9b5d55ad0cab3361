"""/admin over real HTTP on loopback, against tiny in-process servers (fast, exact)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import torch
from safetensors.torch import save, save_file

from vigor_service.api.deps import is_loopback
from vigor_service.app import create_app
from vigor_service.settings import Settings

from ..servers import until
from ..tiny_models import tiny_llama
from ..weights.helpers import (
    admin,
    perturbed,
    runtime_of,
    save_checkpoint,
    scores,
    state,
    tiny_server,
)

TOKEN = "admin-secret"
Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def base_state():
    return state(tiny_llama(tied=True, dtype=torch.float32))


@pytest.fixture(scope="module")
def want(base_state):
    """Scores of a fresh server on the base weights and on perturbed ones."""
    out = {}
    for key, sd in (("base", base_state), ("perturbed", perturbed(base_state))):
        model = tiny_llama(tied=True, dtype=torch.float32)
        model.load_state_dict(sd)
        with tiny_server(model) as server:
            out[key] = scores(server.url)[1]
    return out


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


# --- auth and exposure --------------------------------------------------------------------
def test_admin_token_401_403_200_and_api_token_on_scoring():
    with tiny_server(admin_token=TOKEN, api_token="api-secret") as srv:
        path = "/admin/weights/uploads"
        assert error(admin(srv.url, "POST", path), 401)["code"] == "unauthorized"
        assert error(admin(srv.url, "POST", path, "wrong"), 403)["code"] == "forbidden"
        assert error(admin(srv.url, "POST", path, "api-secret"), 403)["code"] == "forbidden"
        assert admin(srv.url, "POST", path, TOKEN).status_code == 201
        body = {"groups": [{"prompt_ids": [1], "completion_ids": [[2]]}]}
        assert httpx.post(srv.url + "/v1/rewards", json=body).status_code == 401
        assert admin(srv.url, "POST", "/v1/rewards", "api-secret", json=body).status_code == 200
        assert admin(srv.url, "GET", "/metrics").status_code == 401
        assert admin(srv.url, "GET", "/metrics", "api-secret").status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200  # liveness stays open


def test_without_admin_token_only_loopback_clients_are_served():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(h) for h in ("10.0.0.5", "::ffff:10.0.0.5", "testclient", None))

    async def call(client_host: str, settings: Settings) -> httpx.Response:
        app = create_app(settings)  # no lifespan: auth answers before the model is needed
        transport = httpx.ASGITransport(app=app, client=(client_host, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://vigor") as client:
            return await client.delete("/admin/adapter")

    remote = asyncio.run(call("10.1.2.3", Settings()))
    assert "loopback" in error(remote, 403)["message"]
    local = asyncio.run(call("127.0.0.1", Settings()))
    assert local.status_code == 503  # past auth; the model is not loaded in this bare app
    with_token = asyncio.run(call("10.1.2.3", Settings(admin_token=TOKEN)))
    assert error(with_token, 401)["code"] == "unauthorized"


def test_reload_paths_are_confined_to_the_allowed_dirs(tmp_path, base_state):
    allowed = tmp_path / "ckpts"
    inside = save_checkpoint(base_state, allowed / "step-1")
    outside = save_checkpoint(base_state, tmp_path / "elsewhere")
    (allowed / "sneaky").symlink_to(outside)
    with tiny_server(allowed_weights_dir=[allowed]) as srv:
        for path in (outside, allowed / ".." / "elsewhere", allowed / "sneaky"):
            r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(path)})
            assert "outside the allowed" in error(r, 403)["message"], path
            r = admin(srv.url, "POST", "/admin/adapter", json={"path": str(path)})
            assert error(r, 403)["code"] == "path_not_allowed"
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(inside)})
        assert r.status_code == 200, r.text


# --- reload -------------------------------------------------------------------------------
def test_reload_matches_a_fresh_server_and_versions_only_increase(tmp_path, base_state, want):
    ckpt = save_checkpoint(perturbed(base_state), tmp_path / "p")
    with tiny_server() as srv:
        assert scores(srv.url) == (0, want["base"])
        assert httpx.get(srv.url + "/v1/model").json()["base_weights"] is True
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(ckpt)})
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["operation"] == "reload" and res["previous_version"] == 0
        assert res["weight_version"] == 1 and res["tensors"] == len(base_state) - 1  # tied once
        assert scores(srv.url) == (1, want["perturbed"])
        info = httpx.get(srv.url + "/v1/model").json()
        assert info["weight_version"] == 1 and info["base_weights"] is False
        body = {"path": str(save_checkpoint(base_state, tmp_path / "b")), "version": 7}
        assert (
            admin(srv.url, "POST", "/admin/weights/reload", json=body).json()["weight_version"] == 7
        )
        assert scores(srv.url) == (7, want["base"])
        for stale in (7, 3):
            r = admin(srv.url, "POST", "/admin/weights/reload", json={**body, "version": stale})
            err = error(r, 409)
            assert err["code"] == "version_conflict" and err["current_weight_version"] == 7
        r = admin(srv.url, "POST", "/admin/weights/reload", json={**body, "version": -1})
        assert "version" in error(r, 422)["message"]


def bad_checkpoints(tmp_path, base_state) -> list[tuple[dict, str]]:
    cases = []
    nan = dict(base_state)
    nan[Q] = nan[Q].clone()
    nan[Q][3, 4] = float("nan")
    cases.append(({"path": str(save_checkpoint(nan, tmp_path / "nan"))}, f"'{Q}': holds 1 NaN"))
    short = {k: v for k, v in base_state.items() if k != "model.norm.weight"}
    cases.append(({"path": str(save_checkpoint(short, tmp_path / "short"))}, "missing 1"))
    wrong = {**base_state, Q: base_state[Q][:, :8]}
    cases.append(({"path": str(save_checkpoint(wrong, tmp_path / "shape"))}, "has shape [32, 8]"))
    half = {k: v.half() for k, v in base_state.items()}
    cases.append(({"path": str(save_checkpoint(half, tmp_path / "half"))}, "dtype float16"))
    extra = {**base_state, "model.layers.9.mlp.up_proj.weight": torch.ones(2)}
    cases.append(({"path": str(save_checkpoint(extra, tmp_path / "extra"))}, "not a parameter"))
    cut = save_checkpoint(base_state, tmp_path / "cut") / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:-100])
    cases.append(({"path": str(cut.parent)}, "truncated"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{this is not json")
    cases.append(({"path": str(junk)}, "not JSON"))
    cases.append(({"path": str(tmp_path / "nope")}, "no such file"))
    cases.append(({"path": "relative/path"}, "must be absolute"))
    return cases


def test_bad_checkpoints_are_refused_and_the_old_weights_keep_serving(tmp_path, base_state, want):
    with tiny_server() as srv:
        for body, phrase in bad_checkpoints(tmp_path, base_state):
            r = admin(srv.url, "POST", "/admin/weights/reload", json=body)
            err = error(r, 422)
            assert err["code"] == "weights_rejected" and phrase in err["message"], (phrase, err)
            assert "unchanged" in err["message"]
            assert scores(srv.url) == (0, want["base"])
        half = tmp_path / "half"
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(half)})
        assert r.status_code == 422
        r = admin(
            srv.url, "POST", "/admin/weights/reload", json={"path": str(half), "allow_cast": True}
        )
        assert r.status_code == 200, r.text


def test_partial_reload_from_one_file(tmp_path, base_state):
    one = tmp_path / "one.safetensors"
    save_file({"lm_head.weight": base_state["lm_head.weight"] * 2}, str(one))
    with tiny_server() as srv:
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(one)})
        assert "missing" in error(r, 422)["message"]
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(one), "full": False})
        assert r.json()["tensors"] == 1
        emb = runtime_of(srv).slot.served.model.get_input_embeddings().weight
        assert torch.equal(emb, base_state["model.embed_tokens.weight"] * 2)  # the tied pair


# --- push ---------------------------------------------------------------------------------
def push(url, tensors, **params):
    return admin(url, "POST", "/admin/weights/push", content=save(tensors), params=params)


def test_single_and_bucketed_pushes_match_a_fresh_server(base_state, want):
    pert = perturbed(base_state)
    names = [k for k in pert if k != "lm_head.weight"]
    with tiny_server() as srv:
        r = push(srv.url, {k: pert[k] for k in names}, full="true")
        assert r.json()["weight_version"] == 1, r.text
        assert scores(srv.url) == (1, want["perturbed"])
        up = admin(srv.url, "POST", "/admin/weights/uploads").json()
        uid = up["upload_id"]
        assert up["tensors"] == 0 and up["expires_in_s"] > 0
        for chunk in (names[:7], names[7:12], names[12:]):
            r = admin(
                srv.url,
                "POST",
                f"/admin/weights/uploads/{uid}/buckets",
                content=save({k: base_state[k] for k in chunk}),
            )
            assert r.status_code == 200, r.text
        assert r.json()["tensors"] == len(names)
        assert scores(srv.url) == (1, want["perturbed"])  # staged, not served
        r = admin(srv.url, "POST", f"/admin/weights/uploads/{uid}/commit", json={"version": 5})
        assert r.json()["operation"] == "commit" and r.json()["weight_version"] == 5
        assert scores(srv.url) == (5, want["base"])
        assert error(admin(srv.url, "DELETE", f"/admin/weights/uploads/{uid}"), 404)["code"] == (
            "upload_not_found"
        )


def test_refused_pushes_leave_everything_as_it_was(base_state, want):
    with tiny_server() as srv:
        nan = base_state[Q].clone()
        nan[0, 0] = float("inf")
        for tensors, phrase in [
            ({Q: nan}, "1 Inf"),
            ({Q: base_state[Q].double()}, "dtype float64"),
            ({"nope.weight": base_state[Q]}, "'nope.weight' is not a parameter"),
            ({Q: base_state[Q][:3]}, "has shape [3, 32]"),
        ]:
            assert phrase in error(push(srv.url, tensors), 422)["message"]
        r = admin(srv.url, "POST", "/admin/weights/push", content=b"\x00" * 7)
        assert "safetensors" in error(r, 422)["message"]
        assert "missing" in error(push(srv.url, {Q: base_state[Q]}, full="true"), 422)["message"]
        assert error(push(srv.url, {Q: base_state[Q]}, version=0), 409)["code"] == (
            "version_conflict"
        )
        assert scores(srv.url) == (0, want["base"])


def test_commit_failure_keeps_the_upload_and_abort_drops_it(base_state, want):
    with tiny_server() as srv:
        uid = admin(srv.url, "POST", "/admin/weights/uploads").json()["upload_id"]
        bucket = f"/admin/weights/uploads/{uid}/buckets"
        empty = admin(srv.url, "POST", f"/admin/weights/uploads/{uid}/commit")
        assert "has no staged tensors" in error(empty, 422)["message"]  # no version for nothing
        assert scores(srv.url) == (0, want["base"])
        assert admin(srv.url, "POST", bucket, content=save({Q: base_state[Q] + 1})).is_success
        r = admin(srv.url, "POST", bucket, content=save({Q: base_state[Q] + 2}))
        assert "already staged" in error(r, 422)["message"]
        commit = f"/admin/weights/uploads/{uid}/commit"
        assert (
            "missing" in error(admin(srv.url, "POST", commit, json={"full": True}), 422)["message"]
        )
        assert error(admin(srv.url, "POST", commit, json={"version": 0}), 409)
        r = admin(srv.url, "DELETE", f"/admin/weights/uploads/{uid}")
        assert r.json()["state"] == "aborted" and r.json()["tensors"] == 1
        assert error(admin(srv.url, "POST", commit), 404)["code"] == "upload_not_found"
        assert scores(srv.url) == (0, want["base"])
        assert runtime_of(srv).weights.staging.staged_bytes == 0


def test_staged_data_expires_and_is_bounded(tmp_path, base_state):
    ckpt = save_checkpoint(base_state, tmp_path / "c")  # ~70 kB
    # The TTL must outlast the three requests that touch the upload before it may expire,
    # each of which can take a while on a loaded machine.
    with tiny_server(upload_ttl_s=2.0, max_staged_bytes=20_000) as srv:
        r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(ckpt)})
        assert "over the bound of 20000" in error(r, 413)["message"]
        uid = admin(srv.url, "POST", "/admin/weights/uploads").json()["upload_id"]
        bucket = f"/admin/weights/uploads/{uid}/buckets"
        assert admin(srv.url, "POST", bucket, content=save({Q: base_state[Q]})).is_success
        big = {k: v for k, v in base_state.items() if "layers.0" in k}
        r = admin(srv.url, "POST", bucket, content=save(big))
        assert "--max-staged-bytes" in error(r, 413)["message"]
        staging = runtime_of(srv).weights.staging  # read directly: a request could sweep it
        until(lambda: staging.expired == 1, "the expiry timer fired without a request")
        assert staging.staged_bytes == 0
        r = admin(srv.url, "POST", f"/admin/weights/uploads/{uid}/commit")
        assert "dropped after 2 s" in error(r, 404)["message"]


# --- waiting for a version, deadlines, metrics --------------------------------------------
def test_scoring_waits_for_min_weight_version(base_state):
    with tiny_server() as srv:
        body = {"groups": [{"prompt_ids": [1, 2], "completion_ids": [[3]]}]}
        stale = {**body, "min_weight_version": 1, "wait_s": 0.2}
        r = httpx.post(srv.url + "/v1/rewards", json=stale)
        err = error(r, 409)
        assert err["code"] == "stale_weight_version" and err["current_weight_version"] == 0
        got = {}

        def score() -> None:
            got["r"] = httpx.post(
                srv.url + "/v1/rewards", json={**body, "min_weight_version": 2, "wait_s": 30}
            )

        waiter = threading.Thread(target=score)
        waiter.start()
        until(
            lambda: metric(httpx.get(srv.url + "/metrics").text, "vigor_version_waits") == 1,
            "the scoring call waiting for version 2",
        )
        assert push(srv.url, {Q: base_state[Q]}, version=2).is_success
        waiter.join(30)
        assert got["r"].status_code == 200 and got["r"].json()["weight_version"] == 2
        assert metric(httpx.get(srv.url + "/metrics").text, "vigor_version_waits") == 0


def test_a_bad_request_is_refused_before_waiting_for_a_version():
    with tiny_server() as srv:
        vocab = httpx.get(srv.url + "/v1/model").json()["vocab_size"]
        bad = {
            "groups": [{"prompt_ids": [1, 2], "completion_ids": [[vocab]]}],
            "min_weight_version": 5,
            "wait_s": 1.0,
        }
        r = httpx.post(srv.url + "/v1/rewards", json=bad)
        assert "outside the vocabulary" in error(r, 422)["message"]  # not 409 after the wait


def test_an_update_that_cannot_start_in_time_answers_504_and_never_lands(tmp_path, base_state):
    ckpt = save_checkpoint(perturbed(base_state), tmp_path / "p")
    with tiny_server(admin_timeout_s=0.5) as srv:
        runtime = runtime_of(srv)
        # A long scoring pass, ended by the test (a fixed length raced the reload under load).
        gate = threading.Event()
        busy = runtime.worker.submit(gate.wait, 120)
        t0 = time.monotonic()
        try:
            r = admin(srv.url, "POST", "/admin/weights/reload", json={"path": str(ckpt)})
            assert time.monotonic() - t0 < 30  # answered at its deadline, while the pass runs
        finally:
            gate.set()
        assert "not applied" in error(r, 504)["message"]
        busy.result()
        # The engine thread runs in order: once this no-op ran, a reload queued behind the
        # long pass would have run too.
        runtime.worker.submit(lambda: None).result(timeout=30)
        assert runtime.slot.version == 0 and scores(srv.url)[0] == 0


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_exposed_and_move(base_state):
    with tiny_server() as srv:
        first = httpx.get(srv.url + "/metrics")
        assert first.headers["content-type"].startswith("text/plain")
        text = first.text
        for name in (
            "vigor_http_requests_total",
            "vigor_http_request_duration_seconds_bucket",
            "vigor_tokens_scored_total",
            "vigor_queue_depth",
            "vigor_weight_version 0.0",
            "vigor_weight_update_duration_seconds",
            "vigor_weight_update_failures_total",
            "vigor_ready 1.0",
        ):
            assert name in text, name
        scores(srv.url)
        push(srv.url, {Q: base_state[Q]})
        push(srv.url, {Q: base_state[Q].double()})
        text = httpx.get(srv.url + "/metrics").text
        assert "vigor_weight_version 1.0" in text
        assert metric(text, "vigor_tokens_scored_total") == 6
        assert 'route="/v1/rewards",status="200"' in text
        assert 'route="/admin/weights/push",status="422"' in text
        assert metric(text, 'vigor_weight_update_failures_total{code="weights_rejected"') == 1
        assert metric(text, 'vigor_weight_update_duration_seconds_count{operation="push"}') == 1
        httpx.get(srv.url + "/no/such/route")
        assert 'route="unmatched"' in httpx.get(srv.url + "/metrics").text
