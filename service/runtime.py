"""Assembles the running server's parts and runs their lifecycle; it holds no logic of theirs.

settings → worker (the one engine thread) → serving slot (model, version, readiness) →
scheduler → scoring pipeline; the weight plane gets its WeightLimits, metrics their gauges.
`watch` and `drain` serve the Ray ingress's runtime too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .errors import ModelLoadError
from .metrics import Metrics
from .models.loader import LoadedModel, planned_device_type
from .scoring import ScoringPipeline
from .scoring.assembler import HoldBounds
from .scoring.limits import Limits
from .scoring.scheduler import EngineQueue, Scheduler
from .serving import EngineWorker, ServingSlot
from .serving.loading import load_served
from .serving.staleness import StalenessGuard
from .settings import Settings
from .watch import CheckpointWatcher
from .weights import WeightLimits, WeightPlane
from .weights.staging import StagingArea

log = logging.getLogger(__name__)


def hold_bounds_of(s: Settings) -> HoldBounds:
    return HoldBounds(
        hold_s=s.group_hold_s,
        max_hold_s=s.max_group_hold_s,
        max_held_samples=s.max_held_samples,
        max_held_bytes=s.max_held_bytes,
        max_held_samples_per_namespace=s.max_held_samples_per_namespace,
        max_held_bytes_per_namespace=s.max_held_bytes_per_namespace,
    )


def limits_of(s: Settings) -> Limits:
    return Limits(
        max_request_bytes=s.max_request_bytes,
        max_groups=s.max_groups,
        max_completions_per_group=s.max_completions_per_group,
        max_sequence_tokens=s.max_sequence_tokens or 0,
        max_request_tokens=s.max_request_tokens or 0,  # 0: the served model's default
    )


def staleness_guard(s: Settings, metrics: Metrics, slot: ServingSlot) -> StalenessGuard:
    guard = StalenessGuard(
        s.expects_updates,
        s.stale_after_requests,
        s.stale_after_s,
        on_stale=metrics.stale_warnings.inc,
        on_stale_request=metrics.stale_requests.inc,
    )
    metrics.weights_stale.set_function(lambda: 1.0 if guard.stale_at(slot.version) else 0.0)
    return guard


def follow_checkpoints(s: Settings, slot, reload, metrics: Metrics) -> CheckpointWatcher | None:
    """The checkpoint watcher when --watch-dir is set; it reloads through the weight front."""
    return CheckpointWatcher(s, slot, reload, metrics) if s.watch_dir is not None else None


def weight_limits_of(s: Settings) -> WeightLimits:
    return WeightLimits(
        admin_timeout_s=s.admin_timeout_s,
        upload_ttl_s=s.upload_ttl_s,
        transfer_timeout_s=s.transfer_timeout_s,
        max_staged_bytes=s.max_staged_bytes,
        allowed_weights_dir=tuple(s.allowed_weights_dir),
    )


def watch(
    metrics: Metrics,
    slot: ServingSlot,
    pipeline: ScoringPipeline,
    staging: StagingArea,
    queue_depth: Callable[[], float],
) -> None:
    """The gauges of /metrics, read at scrape time: the same for a plain server and the Ray
    ingress, which differ only in what their queue is."""
    assembler = pipeline.assembler
    metrics.watch(
        weight_version=lambda: slot.version if slot.served is not None else -1,
        queue_depth=queue_depth,
        version_waits=lambda: slot.waiting,
        staged_bytes=lambda: staging.staged_bytes,
        ready=lambda: slot.ready,
        held_groups=lambda: assembler.held_groups,
        held_samples=lambda: assembler.held_samples,
        held_bytes=lambda: assembler.held_bytes,
        held_orphans=lambda: assembler.held_orphans,
        groups_incomplete=lambda: assembler.incomplete,
    )


async def drain(
    slot: ServingSlot, pipeline: ScoringPipeline, scheduler: EngineQueue, timeout: float
) -> int:
    """Stop taking work (/ready turns 503), wait for in-flight requests up to `timeout`, then
    answer the rest 503 (send it again); returns how many were cut off."""
    slot.draining = True
    # Held samples would wait out their hold time: let their callers retry elsewhere now.
    pipeline.assembler.fail_all("server is shutting down; send this sample again")
    end = time.monotonic() + timeout
    while scheduler.in_flight and time.monotonic() < end:
        await asyncio.sleep(0.05)
    left = scheduler.in_flight
    if left:  # answered 503 now rather than cut off mid-response (a 500) at exit
        scheduler.cut_off(
            f"the server shut down before this request was scored (drain_timeout_s={timeout:g} "
            "passed); send it again"
        )
        end = time.monotonic() + 5
        while scheduler.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.05)
    return left


class Runtime:
    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        # Called (on the engine thread) with a one-line reason when the model fails to load.
        self.on_load_failed: Callable[[str], None] | None = None
        self.max_batch_tokens = s.batch_tokens_on(planned_device_type(s.device))
        self.cut_off = 0  # requests the drain answered 503 because they outlasted it
        self.worker = EngineWorker()
        self.slot = ServingSlot()
        self.metrics = Metrics()
        self.scheduler = Scheduler(
            self.worker,
            self.slot.score,
            max_queue=s.max_queue,
            batch_window_s=s.batch_window_ms / 1000,
            max_batch_tokens=self.max_batch_tokens,
        )
        self.pipeline = ScoringPipeline(
            self.slot,
            self.scheduler,
            limits_of(s),
            on_scored=self._count_scored,
            hold=hold_bounds_of(s),
            variants=s.reward_variants(),
            estimator=s.default_estimator(),
        )
        self.weights = WeightPlane(weight_limits_of(s), self.slot, self.worker, self.metrics)
        self.staleness = staleness_guard(s, self.metrics, self.slot)
        self.watcher = follow_checkpoints(s, self.slot, self.weights.reload, self.metrics)
        if self.watcher is not None:
            self.pipeline.before_scoring = self.watcher.wait_current
        watch(
            self.metrics, self.slot, self.pipeline, self.weights.staging,
            queue_depth=lambda: self.worker.pending + self.scheduler.depth,
        )  # fmt: skip

    def _count_scored(self, response) -> None:
        self.metrics.count_scored(response.groups)
        self.staleness.observe(response.weight_version)

    def start(self, loaded: LoadedModel | None = None) -> None:
        """Load (unless given), warm up and mark ready, on the engine worker, without blocking."""
        self.slot.bind_loop(asyncio.get_running_loop())
        self.scheduler.start()
        self.worker.submit(self._load_and_warm, loaded)
        if self.watcher is not None:
            self.watcher.start()

    def _load_and_warm(self, loaded: LoadedModel | None) -> None:
        try:
            t0 = time.perf_counter()
            served = load_served(self.settings, self.max_batch_tokens, loaded)
            self.slot.set_served(served)
            log.info(
                "ready: %s at weight_version %d, its base weights (%.1f s to load and warm up); "
                "weights pushed before a restart are not kept: push or reload them again",
                served.name, self.slot.version, time.perf_counter() - t0,
            )  # fmt: skip
        except Exception as exc:
            # Our own load errors say what to fix in a line; anything else keeps its traceback.
            ours = isinstance(exc, ModelLoadError)
            reason = exc.message if ours else f"{type(exc).__name__}: {exc}"
            self.slot.set_load_failed(reason)
            if ours:
                log.error("model failed to load: %s", reason)
            else:
                log.exception("model failed to load")
            if self.on_load_failed is not None:
                self.on_load_failed(reason)

    async def drain(self, timeout: float) -> int:
        cut = await drain(self.slot, self.pipeline, self.scheduler, timeout)
        self.cut_off += cut  # SIGTERM drains, then the lifespan's exit drains again
        return cut

    async def aclose(self) -> None:
        self.slot.draining = True
        if self.watcher is not None:
            await self.watcher.aclose()
        self.weights.transfer.shutdown()
        self.pipeline.assembler.fail_all("server is shutting down; send this sample again")
        await self.scheduler.stop()
        # After a drain that cut work off, the engine call still running has no reader.
        self.worker.shutdown(wait=not self.cut_off)
