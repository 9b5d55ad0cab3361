"""Denial of service, each class on a real `vigor-serve` process: unauthenticated bodies, work for
clients that left, unbounded tokens per request, unbounded metric labels, idle connections."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest

from ..servers import ProcessServer, metric, until
from ..weights.helpers import runtime_of, tiny_server

pytestmark = pytest.mark.slow
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_ROUTES = [
    ("POST", "/admin/weights/reload", "application/json"),
    ("POST", "/admin/weights/uploads/x/commit", "application/json"),
    ("POST", "/admin/weights/push", "application/octet-stream"),
    ("POST", "/admin/weights/uploads/x/buckets", "application/octet-stream"),
    ("POST", "/admin/adapter", "application/json"),
    ("POST", "/admin/adapter", "application/octet-stream"),
    ("POST", "/init_weight_transfer_engine", "application/json"),
    ("POST", "/start_weight_update", "application/json"),
    ("POST", "/update_weights", "application/json"),
    ("POST", "/finish_weight_update", "application/json"),
]


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, tmp_path_factory):
    srv = ProcessServer(
        "--model", str(tiny_chat_model_dir), "--admin-token", TOKEN,
        "--max-request-bytes", "100000", "--max-request-tokens", "500",
        "--header-timeout-s", "1", "--body-timeout-s", "1",
    )  # fmt: skip
    srv.start(tmp_path_factory.mktemp("dos") / "server.log")
    yield srv
    srv.stop()


def raw(server, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def head(method: str, path: str, kind: str, length: int, auth: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Type: {kind}"]
    lines += [f"Content-Length: {length}"] + ([f"Authorization: Bearer {TOKEN}"] if auth else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(("method", "path", "kind"), ADMIN_ROUTES)
def test_admin_auth_is_checked_before_any_body_is_read(server, method, path, kind):
    # 10 GB announced, none sent: only an answer that never waits for the body can come back.
    answer = raw(server, head(method, path, kind, 10 << 30))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"unauthorized"' in answer


@pytest.mark.parametrize("path", ["/admin/weights/reload", "/admin/weights/uploads/x/commit"])
def test_json_admin_bodies_are_bounded_declared_or_chunked(server, path):
    answer = raw(server, head("POST", path, "application/json", 10 << 30, auth=True))
    assert answer.startswith(b"HTTP/1.1 413") and b"max_request_bytes=100000" in answer

    def chunks():
        for _ in range(30):
            yield b" " * 10000  # JSON whitespace: parseable if it were not over the limit

    r = httpx.post(server.url + path, content=chunks(), headers=AUTH, timeout=30)
    assert r.status_code == 413 and "max_request_bytes=100000" in r.text, r.text


def test_tokens_per_request_are_capped_and_reported(server):
    body = {"groups": [{"prompt_ids": [1] * 100, "completion_ids": [[2] * 50] * 4}]}  # 600
    r = httpx.post(server.url + "/v1/rewards", json=body, timeout=60)
    assert r.status_code == 413 and "max_request_tokens=500" in r.text, r.text
    body["groups"][0]["completion_ids"] = [[2] * 20] * 4  # 480
    assert httpx.post(server.url + "/v1/rewards", json=body, timeout=60).status_code == 200
    limits = httpx.get(server.url + "/v1/model", timeout=30).json()["limits"]
    assert limits["max_request_tokens"] == 500


def test_metric_labels_stay_bounded_whatever_the_method(server):
    for k in range(200):
        httpx.request(f"X{k}METHOD", server.url + "/v1/rewards", timeout=30)
    text = httpx.get(server.url + "/metrics", timeout=30).text
    methods = set(re.findall(r'method="([^"]*)"', text))
    assert methods <= {"GET", "POST", "other"} and "other" in methods


def test_connections_that_never_finish_their_headers_are_closed(server):
    socks = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never end
        socks.append(sock)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # sends nothing
    socks.append(idle)
    try:
        for sock in socks:
            assert sock.recv(1024) == b""  # closed by the server (recv would time out)
    finally:
        for sock in socks:
            sock.close()
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_work_for_clients_that_left_is_never_computed():
    body = b'{"groups": [{"prompt_ids": [1, 2], "completion_ids": [[3, 4], [5]]}]}'
    request = (
        b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with tiny_server(batch_window_ms=1500) as srv:
        metrics = runtime_of(srv).metrics
        for _ in range(4):  # sent whole, then the client goes away while the batch collects
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            sock.sendall(request)
            time.sleep(0.1)
            sock.close()
        r = httpx.post(
            srv.url + "/v1/rewards", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 200, r.text

        def answered() -> float:
            text = httpx.get(srv.url + "/metrics", timeout=30).text
            return metric(text, "vigor_http_requests_total", route="/v1/rewards")

        # All five answered (the four that left with 499): nothing is left that could be scored.
        until(lambda: answered() == 5, "all five scoring requests answered")
        assert metrics.completions_scored._value.get() == 2  # the one client still there


STALLED_BODIES = [
    ("POST", "/v1/rewards", "application/json", False),
    ("POST", "/get_reward", "application/json", False),
    ("POST", "/admin/weights/reload", "application/json", True),
    ("POST", "/admin/weights/push", "application/octet-stream", True),  # streamed, not buffered
]


@pytest.mark.parametrize(("method", "path", "kind", "auth"), STALLED_BODIES)
def test_a_body_that_stops_arriving_is_408_and_closed(server, method, path, kind, auth):
    start = time.monotonic()
    answer = raw(server, head(method, path, kind, 1000, auth=auth) + b"{", timeout=20)
    took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"body_timeout" in answer and b"stopped arriving" in answer, answer[-300:]
    assert took < 10, took  # closed by the server (raw() returns when it closes), not held
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_an_error_never_echoes_a_huge_input_whole(server):
    path = "/nope/" + "a" * 60_000
    r = httpx.post(server.url + "/admin/weights/reload", json={"path": path}, headers=AUTH,
                   timeout=30)  # fmt: skip
    assert r.status_code in (403, 422), r.text[:300]
    message = r.json()["error"]["message"]
    assert len(message) < 4100 and message.endswith("more characters)"), message[-200:]
