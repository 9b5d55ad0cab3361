"""Bounds of the vLLM transfer (issue 26 items 3, 4, 7): each fails on the main branch before
this change. Real servers on loopback, real Gloo groups, a real socket for the silent peer."""

from __future__ import annotations

import socket
import threading

import httpx

from vigor_client.distributed import WeightSender

from .helpers import admin, runtime_of, scores, tiny_server
from .test_transfer import error_of, status


class SilentPeer:
    """A TCP listener that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_init_toward_a_peer_that_never_answers_ends_within_the_transfer_timeout():
    peer = SilentPeer()
    try:
        with tiny_server(transfer_timeout_s=1.0) as srv:
            info = {"master_address": "127.0.0.1", "master_port": peer.port,
                    "rank_offset": 1, "world_size": 2}  # fmt: skip
            # 60 s is the test's patience, not a speed bound: on main this call never answered.
            r = admin(srv.url, "POST", "/init_weight_transfer_engine", json={"init_info": info})
            code, kind, message = error_of(r)
            assert (code, kind) == (502, "transfer_failed"), r.text
            assert "--transfer-timeout-s" in message or "within 1 s" in message, message
            assert status(srv.url)["state"] == "closed"
            with WeightSender(srv.url) as sender:  # not left busy: a real trainer joins next
                assert sender.init()[0].state == "joined"
    finally:
        peer.close()


def test_a_transfer_with_nothing_sent_is_refused_and_makes_no_version():
    with tiny_server() as srv, WeightSender(srv.url) as sender:
        sender.init()
        before = scores(srv.url)
        assert admin(srv.url, "POST", "/start_weight_update", json={}).status_code == 200
        r = admin(srv.url, "POST", "/finish_weight_update", json={})
        code, kind, message = error_of(r)
        assert (code, kind) == (422, "weights_rejected"), r.text
        assert "holds no tensors" in message
        assert scores(srv.url) == before  # still version 0, same scores
        assert status(srv.url)["state"] == "updating"  # kept: send tensors, then finish


def test_an_announced_bucket_over_the_staging_bound_is_413_not_a_4_tib_allocation():
    with tiny_server() as srv, WeightSender(srv.url) as sender:
        sender.init()
        before = scores(srv.url)
        assert admin(srv.url, "POST", "/start_weight_update", json={}).status_code == 200
        info = {"names": ["not.a.parameter"], "dtype_names": ["float32"], "shapes": [[2**40]]}
        r = admin(srv.url, "POST", "/update_weights", json={"update_info": info})
        code, kind, message = error_of(r)
        assert (code, kind) == (413, "limit_exceeded"), r.text
        assert f"a bucket of {4 * 2**40} bytes" in message and "--max-staged-bytes" in message
        assert "group is closed" in message
        assert status(srv.url)["state"] == "closed"
        assert runtime_of(srv).weights.staging.staged_bytes == 0
        assert scores(srv.url) == before
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'code="limit_exceeded",operation="transfer_update"} 1.0' in metrics
