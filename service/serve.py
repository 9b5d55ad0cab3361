"""Running the app under uvicorn with a graceful SIGTERM: drain first, then exit.

On the first SIGTERM/SIGINT, /ready turns 503 and new scoring requests are refused with 503 while
the listening socket stays open, in-flight requests finish (up to drain_timeout_s), and only then
does uvicorn shut down. A second signal exits at once.

The port is bound before the model loads, so a port clash is one line and exit 1 with nothing
loaded; a model that fails to load stops the server with exit 1 unless --no-exit-on-load-error.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

import uvicorn

from .app import create_app
from .http_protocol import with_header_timeout
from .settings import Settings

log = logging.getLogger(__name__)


class StartError(Exception):
    """The server could not start; the message is the one line a CLI user reads."""


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket, or StartError naming the address and the cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        clash = exc.errno == errno.EADDRINUSE
        hint = " (another server on this port? pick one with --port)" if clash else ""
        raise StartError(f"cannot listen on {host}:{port}: {why}{hint}") from None
    return sock


def warn_if_exposed(settings: Settings) -> None:
    """Binding beyond loopback without tokens is allowed (a private network), never silent."""
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if loopback:
        return
    if settings.api_token is None:
        log.warning(
            "listening on %s without --api-token: anyone who reaches this port can score",
            settings.host,
        )
    if settings.admin_token is None:
        log.warning(
            "listening on %s without --admin-token: the admin routes (weights, adapters) answer "
            "loopback clients only; set a token to push weights from another host",
            settings.host,
        )


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_timeout_s = drain_timeout_s
        self._draining = False

    def handle_exit(self, sig, frame) -> None:
        if self._draining or self.drain_timeout_s == 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.runtime.slot.draining = True
        log.info("signal %s: draining (up to %.0f s), /ready is 503", sig, self.drain_timeout_s)
        # Signal handlers run on the loop's thread but between its steps: schedule, don't await.
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain, loop, sig, frame)

    def _start_drain(self, loop: asyncio.AbstractEventLoop, sig, frame) -> None:
        self._drain_task = loop.create_task(self._exit_when_idle(sig, frame))

    async def _exit_when_idle(self, sig, frame) -> None:
        left = await self.runtime.drain(self.drain_timeout_s)
        if left:
            log.warning("drain timeout: %d requests still in flight are cut off", left)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> int:
    """Runs until stopped; the exit status (1: the model failed to load and the server stopped)."""
    sock = listen(settings.host, settings.port)
    warn_if_exposed(settings)
    app = create_app(settings)
    runtime = app.state.runtime
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=sock.getsockname()[1],
        log_level=settings.log_level,
        http=with_header_timeout(settings.header_timeout_s),
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    server = DrainingServer(config, runtime, settings.drain_timeout_s)
    failed: list[str] = []
    if settings.exit_on_load_error:

        def stop(reason: str) -> None:
            failed.append(reason)
            server.should_exit = True  # uvicorn's main loop polls it

        runtime.on_load_failed = stop
    server.run(sockets=[sock])
    if failed:
        raise StartError(f"model failed to load: {failed[0]}")
    return 0
