"""IngressRuntime: the Runtime of the Ray Serve ingress, in front of the scoring replicas.

The FastAPI app, routes, auth, error table and OpenAPI are `create_app`'s; so are the scoring
pipeline and the group assembler: requests are validated, tokenized and (with `group_size`)
assembled into whole groups here, in one place, and only then sent to a replica — the engine
call the pipeline makes goes to a replica (`ReplicaScheduler`) instead of the local worker. The
slot's version is the committed one: it moves once every live replica has applied an update.
"""

from __future__ import annotations

import asyncio
import logging

from ..metrics import Metrics
from ..runtime import (
    drain,
    follow_checkpoints,
    hold_bounds_of,
    limits_of,
    staleness_guard,
    watch,
    weight_limits_of,
)
from ..scoring import ScoringPipeline
from ..serving import ServingSlot
from ..settings import Settings
from .cluster_weights import ClusterWeights
from .ledger import NAMESPACE
from .model_view import ModelView
from .remote import ReplicaScheduler

log = logging.getLogger(__name__)


class IngressRuntime:
    def __init__(self, settings: Settings, replicas, ledger_name: str) -> None:
        import ray

        s = self.settings = settings
        self.replicas = replicas
        self.ledger = ray.get_actor(ledger_name, namespace=NAMESPACE)
        self.slot = ServingSlot()
        self.metrics = Metrics()
        self.scheduler = ReplicaScheduler(replicas, self.slot)
        self.pipeline = ScoringPipeline(
            self.slot,
            self.scheduler,  # an EngineQueue: the same submit, made on a replica
            limits_of(s),
            on_scored=self._count_scored,
            hold=hold_bounds_of(s),
            variants=s.reward_variants(),
            estimator=s.default_estimator(),
        )
        self.weights = ClusterWeights(
            weight_limits_of(s), self.slot, self.metrics, self.ledger, replicas
        )
        # The watcher lives here, in the one ingress: it reloads every replica through the
        # ledger, as /admin/weights/reload does.
        self.staleness = staleness_guard(s, self.metrics, self.slot)
        self.watcher = follow_checkpoints(s, self.slot, self.weights.reload, self.metrics)
        if self.watcher is not None:
            self.pipeline.before_scoring = self.watcher.wait_current
        watch(
            self.metrics, self.slot, self.pipeline, self.weights.staging,
            queue_depth=lambda: self.scheduler.depth,
        )  # fmt: skip
        self._connecting: asyncio.Task | None = None

    def _count_scored(self, response) -> None:
        self.metrics.count_scored(response.groups)
        self.staleness.observe(response.weight_version)

    @property
    def max_batch_tokens(self) -> int:
        served = self.slot.served
        return served.max_batch_tokens if served is not None else 0

    def start(self, loaded=None) -> None:
        """/ready stays 503 until a replica has described the model and the ledger its version."""
        self.slot.bind_loop(asyncio.get_running_loop())
        self._connecting = asyncio.get_running_loop().create_task(self._connect())
        if self.watcher is not None:
            self.watcher.start()

    async def _connect(self) -> None:
        while True:
            try:
                described = await self.replicas.describe.remote()
                committed, _ = await self.ledger.state.remote()
                break
            except Exception as exc:
                log.info("waiting for a scoring replica: %s", exc)
                await asyncio.sleep(0.5)
        self.slot.version = committed
        self.slot.set_served(ModelView(described))
        log.info("ingress ready: %s at version %d", described["name"], committed)

    async def drain(self, timeout: float) -> int:
        return await drain(self.slot, self.pipeline, self.scheduler, timeout)

    async def aclose(self) -> None:
        self.slot.draining = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self.watcher is not None:
            await self.watcher.aclose()
