"""`vigor-serve --ray` as a user runs it: a real process starting its own local Ray, two scoring
replicas, scores equal to a plain server's, a clean exit on SIGTERM; a bad model is one line."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys

import httpx
import psutil
import pytest

from ..servers import ProcessServer, free_port, wait_ready

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow

GROUP = {"groups": [{"prompt": "2 + 2 =", "completions": [" 4", " five", " 4, since 2 + 2 = 4"]}]}


def vigor_serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vigor_service.cli", "--ray", "--replicas", "2",
         "--replica-num-cpus", "0.5", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def check_ray_listens_as_documented(pid: int, port: int) -> None:
    """The Ray it started has the dashboard off (its head process still runs, headless, on
    loopback), and the service's own port is on --host only (docs/scaling.md lists what else
    Ray opens: its gRPC ports on every interface, which no ray.init option changes)."""
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    listening = []
    for p in tree:
        with contextlib.suppress(psutil.Error):
            conns = p.net_connections(kind="inet")
            listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    # the dashboard head may still answer its API, on loopback only
    assert {a.ip for a in listening if a.port == 8265} <= {"127.0.0.1"}, listening
    assert {a.ip for a in listening if a.port == port} <= {"127.0.0.1"}


def test_the_command_serves_like_a_plain_server_and_exits_cleanly(tiny_chat_model_dir, tmp_path):
    plain = ProcessServer("--model", str(tiny_chat_model_dir), "--dtype", "float64")
    plain.start(tmp_path / "plain.log")
    try:
        want = httpx.post(plain.url + "/v1/rewards", json=GROUP, timeout=120).json()["groups"][0]
    finally:
        plain.stop()
    port = free_port()
    proc = vigor_serve("--model", str(tiny_chat_model_dir), "--dtype", "float64",
                       "--port", str(port), "--header-timeout-s", "2")  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 300, proc)
        check_ray_listens_as_documented(proc.pid, port)
        got = httpx.post(url + "/v1/rewards", json=GROUP, timeout=120).json()["groups"][0]
        assert got["rewards"] == want["rewards"]
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-12)
        # --header-timeout-s reaches the proxy of the Ray this command started (issue 26 item 8)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never end
            assert sock.recv(1024) == b""  # closed by the proxy; recv would time out at 30 s
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "serving on Ray" in out
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=5)  # the application went down with it


def test_a_bad_model_is_one_line_and_a_non_zero_exit(tmp_path):
    proc = vigor_serve("--model", str(tmp_path / "nope"), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("vigor-serve: the Ray Serve application did not start"), last
