"""Counts and times every HTTP request, as a pure ASGI middleware.

It does not buffer bodies, so a multi-GB weight push streams through untouched.
"""

from __future__ import annotations

import time

from ..metrics import Metrics

# Label values come from bounded sets only: a client inventing methods must not grow /metrics.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (never the raw path)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            code = str(status) if 100 <= status <= 599 else "other"
            metrics = self.metrics
            metrics.requests.labels(route, method, code).inc()
            metrics.latency.labels(route, method).observe(time.perf_counter() - start)
