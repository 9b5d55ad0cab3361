"""docker/healthcheck.py (the images' HEALTHCHECK) against the routes the app really has, and
against a stand-in server answering 200, 503 or nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from .files import HEALTHCHECK


def test_probed_routes_exist_in_the_app():
    app_module = pytest.importorskip("vigor_service.app", reason="vigor_service.app not built yet")
    from fastapi.testclient import TestClient

    from vigor_service.settings import Settings

    app = app_module.create_app(Settings())
    assert {"/health", "/ready"} <= set(app.openapi()["paths"])
    # Without its lifespan the app has no model: alive, but not ready.
    client = TestClient(app)
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503


class _Ready(BaseHTTPRequestHandler):
    status = 200
    seen: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).seen.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Ready.seen = []
    yield server
    server.shutdown()
    server.server_close()


def run_check(port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIGOR_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_exit_code_follows_ready(stand_in, status, code):
    _Ready.status = status
    assert run_check(stand_in.server_address[1]).returncode == code
    assert _Ready.seen == ["/ready"]


def test_nothing_listening_is_unhealthy(stand_in):
    port = stand_in.server_address[1]
    stand_in.shutdown()
    stand_in.server_close()
    result = run_check(port)
    assert result.returncode == 1
    assert "not ready" in result.stderr
