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
from ..runtime import hold_bounds_of, limits_of
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
            self.scheduler,  # type: ignore[arg-type]  (the same submit, on a replica)
            limits_of(s),
            on_scored=lambda response: self.metrics.count_scored(response.groups),
            hold=hold_bounds_of(s),
            variants=s.reward_variants(),
        )
        self.weights = ClusterWeights(s, self.slot, self.metrics, self.ledger, replicas)
        assembler = self.pipeline.assembler
        self.metrics.watch(
            weight_version=lambda: self.slot.version if self.slot.served is not None else -1,
            queue_depth=lambda: self.scheduler.depth,
            staged_bytes=lambda: self.weights.staging.staged_bytes,
            ready=lambda: self.slot.ready,
            held_groups=lambda: assembler.held_groups,
            held_samples=lambda: assembler.held_samples,
            held_bytes=lambda: assembler.held_bytes,
            groups_incomplete=lambda: assembler.incomplete,
        )
        self._connecting: asyncio.Task | None = None

    @property
    def max_batch_tokens(self) -> int:
        served = self.slot.served
        return served.max_batch_tokens if served is not None else 0

    def start(self, loaded=None) -> None:
        """/ready stays 503 until a replica has described the model and the ledger its version."""
        self.slot.bind_loop(asyncio.get_running_loop())
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

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
        self.slot.draining = True
        self.pipeline.assembler.fail_all("server is shutting down; send this sample again")
        end = asyncio.get_running_loop().time() + timeout
        while self.scheduler.in_flight and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.05)
        return self.scheduler.in_flight

    async def aclose(self) -> None:
        self.slot.draining = True
        if self._connecting is not None:
            self._connecting.cancel()
