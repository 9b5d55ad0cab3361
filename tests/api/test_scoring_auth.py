"""With --api-token, a scoring body is refused on its headers, before a byte of it is read
(issue 26, finding 9), on a real `vigor-serve` process: as admin bodies already were."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import psutil
import pytest

from ..servers import ProcessServer

pytestmark = pytest.mark.slow
TOKEN = "api-s3cret"
SCORING = ["/v1/rewards", "/get_reward?group_size=2"]


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, tmp_path_factory):
    srv = ProcessServer("--model", str(tiny_chat_model_dir), "--api-token", TOKEN)
    srv.start(tmp_path_factory.mktemp("api-auth") / "server.log")
    yield srv
    srv.stop()


def head(path: str, length: int, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}"] + ([f"Authorization: Bearer {token}"] if token else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(server, data: bytes, body: bytes = b"", timeout: float = 30.0) -> bytes:
    """Send headers (and as much of `body` as the server takes); what it answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        # The server may answer and close without reading the body.
        with contextlib.suppress(OSError):
            sock.sendall(body)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


@pytest.mark.parametrize("path", SCORING)
def test_a_tokenless_scoring_body_is_refused_before_it_is_read(server, path):
    # 10 GB announced, none sent: only an answer that never waits for the body can come back
    # (before, the body limit answered 413 first: the size was judged before the caller).
    answer = exchange(server, head(path, 10 << 30))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b'"unauthorized"' in answer and b"connection: close" in answer.lower()
    wrong = exchange(server, head(path, 10 << 30, token="nope"))
    assert wrong.startswith(b"HTTP/1.1 403"), wrong[:300]


@pytest.mark.parametrize("path", SCORING)
def test_malformed_json_without_a_token_is_401_not_422(server, path):
    bad = b"{not json"
    assert exchange(server, head(path, len(bad)), bad).startswith(b"HTTP/1.1 401")
    with_token = exchange(server, head(path, len(bad), token=TOKEN), bad)
    assert with_token.startswith(b"HTTP/1.1 422"), with_token[:300]


def test_tokenless_bodies_take_no_memory(server):
    rss = psutil.Process(server.proc.pid).memory_info().rss
    body = b'{"groups": [{"prompt": "' + b"x" * (31 << 20) + b'", "completions": ["y"]}]}'
    answers: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(exchange(server, head(SCORING[0], len(body)), body))
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 8, f"{8 - len(answers)} refused bodies still unanswered after 120 s"
    time.sleep(0.5)
    grown = psutil.Process(server.proc.pid).memory_info().rss - rss
    assert all(a.startswith(b"HTTP/1.1 401") for a in answers), [a[:100] for a in answers]
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.0f} MiB for 8 refused bodies"
    ok = httpx.get(server.url + "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
