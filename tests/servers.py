"""Real HTTP servers on loopback for tests: uvicorn in a thread, or `vigor-serve` in a process."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
PATIENCE_S = 30.0  # generous: a loaded 2-core CI machine is slow, never this slow


def until(condition: Callable[[], T], what: str, within_s: float = PATIENCE_S, every_s=0.05) -> T:
    """`condition()`'s first truthy value, polled; fails saying `what` never happened.

    How soon a server reaches a state (a closed connection noticed, a request queued, a timer
    fired) depends on the machine's load, so tests wait for the state itself, never a sleep."""
    deadline = time.monotonic() + within_s
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"never within {within_s:g} s: {what}")
        time.sleep(every_s)
    return value


async def until_async(condition, what: str, within_s: float = PATIENCE_S, every_s=0.05):
    """`until` inside an event loop: `condition` may return an awaitable, and the loop runs
    (the test's own requests go out) between looks."""
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"never within {within_s:g} s: {what}")
        await asyncio.sleep(every_s)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` in a /metrics text whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout} s")


class ThreadServer:
    """uvicorn serving an app object on a free loopback port, in a background thread."""

    def __init__(self, app, ready_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.ready_timeout = ready_timeout

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_ready(self.url, self.ready_timeout)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def shared_cache_dir() -> Path:
    """Shared with the README's serve command so the default model is converted once."""
    env = os.environ.get("VIGOR_TEST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vigor-reward"


class ProcessServer:
    """`vigor-serve` as a subprocess on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout=300.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "vigor_service.cli", "--port", str(self.port), *args]
        if "--cache-dir" not in args:
            self.args += ["--cache-dir", str(shared_cache_dir())]
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, log_path: Path) -> ProcessServer:
        self.log_path = log_path
        log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_ready(self.url, self.ready_timeout, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"server failed to start; log:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
