"""Running the app under uvicorn with a graceful SIGTERM: drain first, then exit.

On the first SIGTERM/SIGINT, /ready turns 503 and new scoring requests are refused with 503 while
the listening socket stays open, in-flight requests finish (up to drain_timeout_s), and only then
does uvicorn shut down. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from .app import create_app
from .http_protocol import with_header_timeout
from .settings import Settings

log = logging.getLogger(__name__)


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


def serve(settings: Settings) -> None:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=with_header_timeout(settings.header_timeout_s),
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    DrainingServer(config, app.state.runtime, settings.drain_timeout_s).run()
