"""The transfer routes in one process: a tiny server on loopback, the sender as rank 0 over Gloo.

Real groups (TCPStore + ProcessGroupGloo between this process's threads), real HTTP; the
process-level tests (a trainer process, two server processes, a kill) are in
test_transfer_processes.py.
"""

from __future__ import annotations

import time

import httpx
import pytest
import torch

from vigor_client.distributed import TransferError, WeightSender
from vigor_service.weights.receive import StagedUpdate

from ..tiny_models import tiny_llama
from .helpers import admin, perturbed, runtime_of, scores, state, tiny_server

TOKEN = "transfer-token"


def new_weights(seed: int = 1) -> dict[str, torch.Tensor]:
    return perturbed(state(tiny_llama(tied=True, dtype=torch.float32)), seed=seed)


def status(url: str, token: str | None = None) -> dict:
    r = admin(url, "GET", "/weight_transfer_status", token)
    assert r.status_code == 200, r.text
    return r.json()


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["message"]


def wait_for(predicate, seconds: float = 30.0) -> None:
    """A bound on waiting for a state, not a speed assertion."""
    end = time.monotonic() + seconds
    while not predicate() and time.monotonic() < end:
        time.sleep(0.05)
    assert predicate()


def test_calls_out_of_order_answer_409_naming_the_missing_step():
    with tiny_server() as srv:
        for path in ("/start_weight_update", "/finish_weight_update", "/abort_weight_update"):
            r = admin(srv.url, "POST", path, json={})
            if path == "/abort_weight_update":  # nothing to abort is not an error
                assert r.status_code == 200 and r.json()["state"] == "closed"
                continue
            code, kind, message = error_of(r)
            assert (code, kind) == (409, "transfer_state")
            assert "/init_weight_transfer_engine first" in message
        with WeightSender(srv.url) as sender:
            sender.init()
            info = {"names": ["model.norm.weight"], "dtype_names": ["float32"], "shapes": [[32]]}
            r = admin(srv.url, "POST", "/update_weights", json={"update_info": info})
            assert error_of(r)[:2] == (409, "transfer_state")
            assert "call /start_weight_update first" in error_of(r)[2]
            assert status(srv.url)["state"] == "joined"


def test_bad_bodies_are_422_naming_the_field():
    with tiny_server() as srv:
        cases = [
            ({"init_info": {"master_address": "127.0.0.1", "master_port": 1, "rank_offset": 2,
                            "world_size": 2}}, "rank_offset 2 is outside world_size 2"),
            ({"init_info": {"master_address": "127.0.0.1", "master_port": 1, "rank_offset": 1,
                            "world_size": 2, "backend": "nccl"}},
             "init_info.backend: nccl needs the model on CUDA; this server runs on cpu"),
        ]  # fmt: skip
        for body, message in cases:
            code, kind, text = error_of(admin(srv.url, "POST", "/init_weight_transfer_engine",
                                              json=body))  # fmt: skip
            assert (code, kind) == (422, "invalid_request") and message in text, text
        info = {"names": ["a", "b"], "dtype_names": ["float32"], "shapes": [[1], [1]]}
        text = error_of(admin(srv.url, "POST", "/update_weights", json={"update_info": info}))[2]
        assert "`dtype_names` should be of the same size as `names`: got 1 and 2" in text
        r = admin(srv.url, "POST", "/finish_weight_update", json={"weight_version": "v12"})
        assert "weight_version 'v12' is not a non-negative integer" in error_of(r)[2]


def test_admin_auth_guards_every_transfer_route():
    with tiny_server(admin_token=TOKEN) as srv:
        for method, path in [("POST", "/init_weight_transfer_engine"),
                             ("POST", "/start_weight_update"), ("GET", "/weight_transfer_status"),
                             ("GET", "/get_world_size")]:  # fmt: skip
            assert admin(srv.url, method, path, json={}).status_code == 401
            assert admin(srv.url, method, path, "wrong", json={}).status_code == 403
        r = admin(srv.url, "GET", "/get_world_size", TOKEN)
        assert r.json() == {"world_size": 1}
        with pytest.raises(TransferError, match="403 forbidden"):
            WeightSender(srv.url, admin_token="wrong").init()
        with WeightSender(srv.url, admin_token=TOKEN) as sender:
            assert sender.send(new_weights())[0].weight_version == 1


def test_a_nan_is_refused_naming_bucket_and_tensor_and_the_same_group_carries_on():
    with tiny_server() as srv:
        before = scores(srv.url)
        good = new_weights()
        bad = {**good, "model.layers.1.mlp.up_proj.weight": good[
            "model.layers.1.mlp.up_proj.weight"].clone()}  # fmt: skip
        bad["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
        with WeightSender(srv.url) as sender:
            master = sender.init()[0].master
            with pytest.raises(TransferError) as info:
                sender.send(bad, version=4, bucket_bytes=8 << 10)
            assert "422 weights_rejected" in str(info.value)
            assert "tensor 'model.layers.1.mlp.up_proj.weight': holds 1 NaN and 0 Inf" in str(
                info.value
            )
            assert ": bucket " in str(info.value)
            now = status(srv.url)
            assert (now["state"], now["master"], now["staged_bytes"]) == ("joined", master, 0)
            assert scores(srv.url) == before
            assert runtime_of(srv).weights.staging.staged_bytes == 0
            (update,) = sender.send(good, version=4, bucket_bytes=8 << 10)
            assert status(srv.url)["master"] == master  # no new init was needed
        assert update.weight_version == 4 and update.tensors == 20


def test_a_refused_finish_keeps_the_update_for_another_finish():
    with tiny_server() as srv:
        good = new_weights()
        with WeightSender(srv.url) as sender:
            with pytest.raises(TransferError, match="409 version_conflict"):
                sender.send(good, version=0)  # not above the served 0
            now = status(srv.url)
            assert now["state"] == "updating" and now["staged_tensors"] == 20
            r = admin(srv.url, "POST", "/finish_weight_update", json={"weight_version": "7"})
            assert r.status_code == 200 and r.json()["weight_version"] == 7
        assert scores(srv.url)[0] == 7
        assert runtime_of(srv).weights.staging.staged_bytes == 0


def test_an_open_update_left_alone_is_dropped_and_its_group_closed():
    with tiny_server(upload_ttl_s=0.5) as srv, WeightSender(srv.url) as sender:
        sender.init()
        r = admin(srv.url, "POST", "/start_weight_update", json={})
        assert r.json()["state"] == "updating" and 0 < r.json()["expires_in_s"] <= 0.5
        wait_for(lambda: status(srv.url)["state"] == "closed")
        assert scores(srv.url)[0] == 0
        sender.group = None  # it knows nothing of the server's expiry: the next send joins anew
        assert sender.send(new_weights())[0].weight_version == 1


def test_the_staging_bound_refuses_after_receiving_and_the_group_stays():
    with tiny_server(max_staged_bytes=20_000) as srv, WeightSender(srv.url) as sender:
        with pytest.raises(TransferError, match="413 limit_exceeded") as info:
            sender.send(new_weights(), bucket_bytes=8 << 10)
        assert "--max-staged-bytes" in str(info.value)
        assert status(srv.url)["state"] == "joined"
        assert runtime_of(srv).weights.staging.staged_bytes == 0
        small = {"model.norm.weight": new_weights()["model.norm.weight"]}
        assert sender.send(small)[0].tensors == 1


def test_a_trainer_gone_silent_is_dropped_within_the_timeout_and_old_weights_serve():
    with tiny_server(transfer_timeout_s=1.0) as srv:
        before = scores(srv.url)
        with WeightSender(srv.url, timeout_s=1.0) as sender:

            def stall(k: int, _: int) -> None:
                if k == 0:
                    wait_for(lambda: status(srv.url)["state"] == "closed")

            with pytest.raises(TransferError) as info:
                sender.send(new_weights(), bucket_bytes=8 << 10, on_bucket=stall)
        assert "transfer_failed" in str(info.value) or "broadcast" in str(info.value)
        assert scores(srv.url) == before
        assert runtime_of(srv).weights.staging.staged_bytes == 0
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'code="transfer_failed",operation="transfer_update"} 1.0' in metrics


def test_a_server_shutting_down_mid_transfer_releases_every_reserved_byte():
    with tiny_server(transfer_timeout_s=5.0) as srv:
        runtime = runtime_of(srv)
        with WeightSender(srv.url, timeout_s=5.0) as sender:

            def shut_down_mid_transfer(k: int, _: int) -> None:
                if k == 0:  # the server holds bucket 0 and waits for bucket 1
                    wait_for(lambda: status(srv.url)["staged_bytes"] > 0)
                    runtime.slot._loop.call_soon_threadsafe(runtime.weights.transfer.shutdown)
                    wait_for(lambda: status(srv.url)["state"] == "closed")

            with pytest.raises(TransferError):
                sender.send(new_weights(), bucket_bytes=8 << 10, on_bucket=shut_down_mid_transfer)
        wait_for(lambda: runtime.weights.staging.staged_bytes == 0)
        assert scores(srv.url)[0] == 0


def test_a_bucket_received_after_its_update_was_dropped_is_not_kept():
    """The receive thread may finish a bucket after the event loop dropped the update (its caller
    went away): the bucket's reservation must then go back, not into an orphan."""
    staged = StagedUpdate()
    assert staged.keep(torch.zeros(8, dtype=torch.uint8), 8)
    assert staged.drop() == 8
    assert not staged.keep(torch.zeros(4, dtype=torch.uint8), 4)
    assert (staged.nbytes, staged.buffers, staged.drop()) == (0, [], 0)


def test_what_cannot_go_over_the_group_is_refused_before_anything_is_sent():
    from ..tiny_models import tiny_lora_llama

    sender = WeightSender("http://127.0.0.1:1")  # never contacted: refused before any call
    with pytest.raises(NotImplementedError, match=r"VigorClient\.load_adapter"):
        sender.send(tiny_lora_llama(dtype=torch.float32))
    with pytest.raises(ValueError, match="nothing to send"):
        sender.send({})
