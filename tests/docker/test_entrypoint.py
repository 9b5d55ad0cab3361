"""docker/entrypoint.sh run on the host under /bin/sh: the admin-token guard with a stand-in
`vigor-serve`, and (slow) the real server started, found ready, and stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .. import servers
from .files import ENTRYPOINT, HEALTHCHECK

REFUSED = 78  # EX_CONFIG


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGOR_")}
    return {**env, **extra}


@pytest.fixture
def stub_path(tmp_path) -> str:
    """A PATH whose `vigor-serve` only prints its arguments."""
    stub = tmp_path / "vigor-serve"
    stub.write_text('#!/bin/sh\necho "vigor-serve $*"\n')
    stub.chmod(0o755)
    return f"{tmp_path}{os.pathsep}{os.environ['PATH']}"


def run(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_is_executable():
    assert os.access(ENTRYPOINT, os.X_OK)


def test_refuses_all_interfaces_without_an_admin_token():
    # The real PATH: the guard must stop before anything loads a model.
    result = run([], clean_env(VIGOR_HOST="0.0.0.0"))
    assert result.returncode == REFUSED
    assert "refusing to start" in result.stderr
    assert "VIGOR_ADMIN_TOKEN" in result.stderr


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"VIGOR_HOST": "0.0.0.0", "VIGOR_ADMIN_TOKEN": ""}, []),
        ({"VIGOR_HOST": "::"}, []),
        ({}, ["--host", "0.0.0.0"]),
        ({"VIGOR_HOST": "127.0.0.1"}, ["--host=10.0.0.5"]),
        ({"VIGOR_HOST": "0.0.0.0", "VIGOR_ALLOW_NO_ADMIN_TOKEN": "yes"}, []),
        ({"VIGOR_HOST": "0.0.0.0", "VIGOR_ADMIN_TOKEN": "t"}, ["--admin-token", ""]),
    ],
)
def test_refused(stub_path, env, args):
    result = run(args, clean_env(PATH=stub_path, **env))
    assert result.returncode == REFUSED, result.stdout
    assert "vigor-serve" not in result.stdout


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({}, []),  # vigor-serve's own default is loopback
        ({"VIGOR_HOST": "127.0.0.1"}, ["--port", "9000"]),
        ({"VIGOR_HOST": "localhost"}, []),
        ({"VIGOR_HOST": "::1"}, []),
        ({"VIGOR_HOST": "0.0.0.0", "VIGOR_ADMIN_TOKEN": "t"}, []),
        ({"VIGOR_HOST": "0.0.0.0"}, ["--admin-token", "t"]),
        ({"VIGOR_HOST": "0.0.0.0"}, ["--admin-token=t"]),
        ({"VIGOR_HOST": "0.0.0.0"}, ["--host", "127.0.0.1"]),
        ({"VIGOR_HOST": "0.0.0.0", "VIGOR_ALLOW_NO_ADMIN_TOKEN": "1"}, []),
        ({"VIGOR_HOST": "0.0.0.0"}, ["--prepare-only"]),
        ({"VIGOR_HOST": "0.0.0.0"}, ["--help"]),
    ],
)
def test_started_with_arguments_passed_through(stub_path, env, args):
    result = run(args, clean_env(PATH=stub_path, **env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == " ".join(["vigor-serve", *args])


def test_leading_vigor_serve_word_is_the_same_command(stub_path):
    result = run(["vigor-serve", "--port", "1"], clean_env(PATH=stub_path))
    assert result.stdout.strip() == "vigor-serve --port 1"
    refused = run(["vigor-serve"], clean_env(PATH=stub_path, VIGOR_HOST="0.0.0.0"))
    assert refused.returncode == REFUSED


def test_other_commands_run_as_given(stub_path):
    result = run(["echo", "hello"], clean_env(PATH=stub_path, VIGOR_HOST="0.0.0.0"))
    assert (result.returncode, result.stdout) == (0, "hello\n")


@pytest.mark.slow
def test_serves_until_sigterm(tmp_path):
    port = servers.free_port()
    env = clean_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        VIGOR_HOST="127.0.0.1",
        VIGOR_PORT=str(port),
        VIGOR_MODEL="default",
        VIGOR_CACHE_DIR=str(servers.shared_cache_dir()),
        VIGOR_DEVICE="cpu",
    )
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=out, stderr=out)
    try:
        try:
            servers.wait_ready(f"http://127.0.0.1:{port}", timeout=120, proc=proc)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-4000:]}")
        # The image's health check agrees.
        check = subprocess.run(
            [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
        # exec: the shell is gone, so the signal reaches the server itself, as PID 1 would.
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully, then re-raises the signal: exit status 143 in Docker.
    assert code in (0, -signal.SIGTERM), log.read_text()[-4000:]
    assert "shutdown complete" in log.read_text()
