"""Running the app under uvicorn with a graceful SIGTERM: drain first, then exit.

On the first SIGTERM/SIGINT, /ready turns 503 and new scoring requests are refused with 503 while
the listening socket stays open, in-flight requests finish (up to drain_timeout_s), and only then
does uvicorn shut down. A second signal exits at once.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from .app import create_app
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
        self.runtime.shutting_down = True
        log.info("signal %s: draining (up to %.0f s), /ready is 503", sig, self.drain_timeout_s)
        threading.Thread(
            target=self._exit_when_idle, args=(sig, frame), name="vigor-drain", daemon=True
        ).start()

    def _exit_when_idle(self, sig, frame) -> None:
        end = time.monotonic() + self.drain_timeout_s
        scheduler = self.runtime.scheduler
        while scheduler is not None and scheduler.in_flight and time.monotonic() < end:
            time.sleep(0.05)
        left = scheduler.in_flight if scheduler is not None else 0
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
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    DrainingServer(config, app.state.runtime, settings.drain_timeout_s).run()
