"""SIGTERM with work still running past the drain timeout: its caller hears 503, not a 500."""

import signal

import pytest

from ..servers import ProcessServer
from .test_hardening import in_background, post, wait_busy

# Several seconds of engine work on the default model on CPU: well past the 1 s drain.
LONGER = {"groups": [{"prompt_ids": [1] * 64, "completion_ids": [[5] * 800] * 4}]}


@pytest.mark.slow
def test_work_still_running_when_the_drain_ends_is_answered_503_send_again(
    default_model_dir, tmp_path
):
    server = ProcessServer("--drain-timeout-s", "1")
    server.start(tmp_path / "server.log")
    try:
        thread, out = in_background(post, server, LONGER)
        wait_busy(server)
        server.proc.send_signal(signal.SIGTERM)
        thread.join(120)
        r = out["r"]
        assert r.status_code == 503, r.text
        assert "drain_timeout_s=1" in r.text and "send it again" in r.text
        assert r.json()["error"]["code"] == "not_ready"
        assert server.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
