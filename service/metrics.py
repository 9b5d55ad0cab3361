"""Prometheus metrics, one registry per app (several apps in one process never clash).

Request counts and latencies are counted by api/metrics_middleware.py; the gauges call the
functions they are handed (`watch`) when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import VigorServiceError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vigor_http_requests", "HTTP requests by route and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "vigor_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens_scored = Counter(
            "vigor_tokens_scored", "Completion tokens scored (gradient-norm targets).", registry=r
        )
        self.completions_scored = Counter(
            "vigor_completions_scored", "Completions scored.", registry=r
        )
        self.weight_seconds = Histogram(
            "vigor_weight_update_duration_seconds",
            "Duration of weight-plane operations (reload, push, commit, adapter) that succeeded.",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.weight_failures = Counter(
            "vigor_weight_update_failures", "Weight-plane operations refused or failed, by code.",
            ["operation", "code"], registry=r,
        )  # fmt: skip
        self.weight_bytes = Counter(
            "vigor_weight_bytes_received", "Tensor bytes received by weight-plane operations.",
            ["operation"], registry=r,
        )  # fmt: skip
        self.weight_version = Gauge(
            "vigor_weight_version", "The served weight version (-1 before the model is loaded).",
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "vigor_queue_depth", "Jobs waiting for or running on the engine worker.", registry=r
        )
        self.version_waits = Gauge(
            "vigor_version_waits",
            "Scoring calls waiting for the min_weight_version they asked for.",
            registry=r,
        )
        self.staged_bytes = Gauge(
            "vigor_weight_staged_bytes", "Weight bytes held before they are applied.", registry=r
        )
        self.ready = Gauge("vigor_ready", "1 once the model serves, else 0.", registry=r)
        self.held_groups = Gauge(
            "vigor_held_groups", "Groups waiting for more samples (group_size).", registry=r
        )
        self.held_samples = Gauge(
            "vigor_held_samples", "Samples held until their groups complete.", registry=r
        )
        self.held_bytes = Gauge("vigor_held_bytes", "Bytes of held samples.", registry=r)
        self.held_orphans = Gauge(
            "vigor_held_orphans",
            "Held samples whose caller left (client timeout): a retry takes their slot.",
            registry=r,
        )
        self.groups_incomplete = Gauge(
            "vigor_groups_incomplete_total",
            "Groups answered 'group_incomplete' after their hold time, since start.",
            registry=r,
        )

        self.watch_loads = Counter(
            "vigor_watch_loads", "Step directories the checkpoint watcher loaded.", registry=r
        )
        self.watch_failures = Counter(
            "vigor_watch_failures",
            "Step directories the checkpoint watcher could not load (corrupt, wrong model, "
            "stalled while incomplete), by error code; the old weights kept serving.",
            ["code"], registry=r,
        )  # fmt: skip
        self.watch_pending_step = Gauge(
            "vigor_watch_pending_step",
            "A newer step directory being written or loaded (-1: none).",
            registry=r,
        )
        self.watch_waits = Counter(
            "vigor_watch_request_waits",
            "Scoring calls that waited for a step directory being written or loaded.",
            registry=r,
        )
        self.stale_warnings = Counter(
            "vigor_stale_weight_warnings",
            "Times scoring kept arriving at one weight version while updates were expected.",
            registry=r,
        )
        self.stale_requests = Counter(
            "vigor_stale_weight_requests",
            "Scoring calls answered on weights flagged stale (updates expected, none came).",
            registry=r,
        )
        self.weights_stale = Gauge(
            "vigor_weights_stale", "1 while the served weights are flagged stale.", registry=r
        )

    def watch(
        self,
        *,
        weight_version: Callable[[], float],
        queue_depth: Callable[[], float],
        version_waits: Callable[[], float],
        staged_bytes: Callable[[], float],
        ready: Callable[[], bool],
        held_groups: Callable[[], float],
        held_samples: Callable[[], float],
        held_bytes: Callable[[], float],
        held_orphans: Callable[[], float],
        groups_incomplete: Callable[[], float],
    ) -> Metrics:
        """The gauges' values, read at scrape time."""
        self.held_groups.set_function(held_groups)
        self.held_samples.set_function(held_samples)
        self.held_bytes.set_function(held_bytes)
        self.held_orphans.set_function(held_orphans)
        self.groups_incomplete.set_function(groups_incomplete)
        self.weight_version.set_function(weight_version)
        self.queue_depth.set_function(queue_depth)
        self.version_waits.set_function(version_waits)
        self.staged_bytes.set_function(staged_bytes)
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)
        return self

    def count_scored(self, groups) -> None:
        """Completions and their tokens, from a response's groups."""
        self.completions_scored.inc(sum(len(g.num_tokens) for g in groups))
        self.tokens_scored.inc(sum(sum(g.num_tokens) for g in groups))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @contextmanager
    def weight_operation(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except VigorServiceError as exc:
            self.weight_failures.labels(operation, exc.code).inc()
            raise
        except BaseException:
            self.weight_failures.labels(operation, VigorServiceError.code).inc()
            raise
        self.weight_seconds.labels(operation).observe(time.perf_counter() - start)
