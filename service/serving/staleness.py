"""The no-silent-base-weights guard: scoring keeps arriving and the weight version never moves.

OpenRLHF's and verl's reward requests carry no version, so a server the trainer stopped updating
(or never updated: a missing flag, a watcher on the wrong directory) would score every step with
the weights it holds, a different algorithm, without a word. When updates are expected, a run of
scoring calls at one version, long in both count and time, is logged once per version and shown
in /metrics and /v1/model until the version moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from vigor_client.schema import StaleStatus

log = logging.getLogger(__name__)


class StalenessGuard:
    def __init__(
        self,
        expects_updates: bool,
        after_requests: int,
        after_s: float,
        *,
        on_stale: Callable[[], None] | None = None,
        on_stale_request: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.expects_updates = expects_updates
        self.after_requests = after_requests
        self.after_s = after_s
        self._on_stale = on_stale
        self._on_stale_request = on_stale_request
        self._clock = clock
        self._version: int | None = None
        self._since = clock()
        self._count = 0
        self.stale = False
        self.warning: str | None = None

    def observe(self, version: int) -> None:
        """One scoring call answered at `version` (on the event loop)."""
        now = self._clock()
        if version != self._version:
            if self.stale:
                log.info("weight version moved to %d: the stale-weights warning is over", version)
            self._version, self._since, self._count = version, now, 0
            self.stale, self.warning = False, None
        self._count += 1
        if not self.expects_updates:
            return
        if self.stale:
            if self._on_stale_request is not None:
                self._on_stale_request()
            return
        held = now - self._since
        if self._count >= self.after_requests and held >= self.after_s:
            self.stale = True
            base = " (the weights loaded at start)" if version == 0 else ""
            self.warning = (
                f"{self._count} scoring calls over {held:.0f} s at weight_version {version}{base}: "
                "weight updates are expected (--watch-dir or --expect-weight-updates) and none "
                "came; rewards are computed on old weights. Check the trainer's checkpoint flags "
                "or weight callback"
            )
            log.warning("stale weights: %s", self.warning)
            if self._on_stale is not None:
                self._on_stale()
            if self._on_stale_request is not None:
                self._on_stale_request()

    def stale_at(self, version: int) -> bool:
        """Flagged, and the served version is still the one flagged (a new one clears it)."""
        return self.stale and self._version == version

    def status(self, version: int) -> StaleStatus:
        same = self._version == version
        return StaleStatus(
            expects_updates=self.expects_updates,
            stale=self.stale_at(version),
            requests_at_version=self._count if same else 0,
            seconds_at_version=round(self._clock() - self._since, 3) if same else 0.0,
            warning=self.warning if same else None,
        )
