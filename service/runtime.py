"""Everything the running server holds: settings, the engine worker, the served model, readiness."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from vigor_client.schema import RewardsRequest, RewardsResponse

from .engine.factory import check_engine_supports, make_engine
from .engine.types import SequenceScore, TokenSequence
from .errors import NotReadyError, StaleWeightsError, VigorServiceError
from .limits import Limits
from .metrics import Metrics
from .models.loader import LoadedModel, load_model, planned_device_type
from .scheduler import Scheduler
from .scoring import build_response
from .served_model import ServedModel
from .settings import Settings
from .weights import WeightPlane
from .worker import EngineWorker

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker = EngineWorker()
        self.served: ServedModel | None = None
        self.load_error: str | None = None
        self.shutting_down = False
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version_changed: asyncio.Condition | None = None
        self.scheduler: Scheduler | None = None
        self.weights = WeightPlane(self)
        self.metrics = Metrics().bind(self)
        self.max_batch_tokens = settings.batch_tokens_on(planned_device_type(settings.device))

    # --- start-up -------------------------------------------------------------------------
    def start(self, loaded: LoadedModel | None = None) -> None:
        """Load (unless given), warm up and mark ready, on the engine worker, without blocking."""
        self._loop = asyncio.get_running_loop()
        self._version_changed = asyncio.Condition()
        s = self.settings
        self.scheduler = Scheduler(
            self.worker,
            self._execute,
            max_queue=s.max_queue,
            batch_window_s=s.batch_window_ms / 1000,
            max_batch_tokens=self.max_batch_tokens,
        )
        self.scheduler.start()
        self.worker._executor.submit(self._load_and_warm, loaded)

    def _load_and_warm(self, loaded: LoadedModel | None) -> None:
        s = self.settings
        try:
            t0 = time.perf_counter()
            if loaded is None:
                loaded = load_model(s.model, cache_dir=s.cache_dir, device=s.device, dtype=s.dtype)
            engine = make_engine(
                s.engine,
                max_batch_tokens=self.max_batch_tokens,
                gradient_checkpointing=s.gradient_checkpointing,
            )
            served = ServedModel(loaded, engine, max_sequence_tokens=s.max_sequence_tokens)
            check_engine_supports(engine, served.model, served.scored)
            warm = served.score([TokenSequence((0,), (1,))], (), 1.0)
            if warm[0].grad_norm is None:
                raise RuntimeError("warm-up produced no gradient norm")
            self.served = served
            self._ready.set()
            log.info(
                "ready: %s (%.1f s to load and warm up)", served.name, time.perf_counter() - t0
            )
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load; /ready stays 503")

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self.shutting_down

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def require_served(self) -> ServedModel:
        if self.served is None:
            why = (
                f"model failed to load: {self.load_error}"
                if self.load_error
                else "model is loading"
            )
            raise NotReadyError(why)
        return self.served

    # --- weight versions ------------------------------------------------------------------
    def notify_version_changed(self) -> None:
        """Called from the worker thread after a swap; wakes requests waiting for a version."""
        if self._loop is None or self._version_changed is None:
            return

        async def _notify() -> None:
            async with self._version_changed:
                self._version_changed.notify_all()

        asyncio.run_coroutine_threadsafe(_notify(), self._loop)

    async def wait_for_version(self, minimum: int, wait_s: float) -> None:
        served = self.require_served()
        if served.version >= minimum:
            return
        assert self._version_changed is not None
        try:
            async with self._version_changed:
                await asyncio.wait_for(
                    self._version_changed.wait_for(lambda: served.version >= minimum), wait_s
                )
        except TimeoutError:
            raise StaleWeightsError(
                f"weights are at version {served.version}, the request needs at least "
                f"{minimum} (waited {wait_s:g} s)",
                current_version=served.version,
            ) from None

    # --- scoring --------------------------------------------------------------------------
    @property
    def limits(self) -> Limits:
        s = self.settings
        served = self.served
        return Limits(
            max_request_bytes=s.max_request_bytes,
            max_groups=s.max_groups,
            max_completions_per_group=s.max_completions_per_group,
            max_sequence_tokens=served.max_length if served else (s.max_sequence_tokens or 0),
        )

    def _execute(
        self, sequences: list[TokenSequence], signals: tuple[str, ...], temperature: float
    ) -> tuple[list[SequenceScore], int]:
        """On the engine thread: the version read here is the one every result was computed on."""
        served = self.require_served()
        return served.score(sequences, signals, temperature), served.version

    async def score(
        self, served: ServedModel, request: RewardsRequest, groups: list[list[TokenSequence]]
    ) -> RewardsResponse:
        """Queue a request's sequences with the scheduler and build its response."""
        if self.shutting_down:
            raise NotReadyError("server is shutting down; send this request to another replica")
        assert self.scheduler is not None
        flat = [seq for group in groups for seq in group]
        outcome = await self.scheduler.submit(
            flat,
            signals=tuple(request.signals),
            temperature=request.temperature,
            deadline_s=request.deadline_s,
        )
        response = build_response(served.name, outcome.version, request, groups, outcome.scores)
        self.metrics.count_scored(response.groups)
        return response

    async def drain(self, timeout: float) -> None:
        """Stop taking work (/ready turns 503) and wait for in-flight requests to finish."""
        self.shutting_down = True
        end = time.monotonic() + timeout
        while self.scheduler is not None and self.scheduler.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        self.shutting_down = True
        if self.scheduler is not None:
            await self.scheduler.stop()
        self.worker.shutdown()


__all__ = ["Runtime", "VigorServiceError"]
