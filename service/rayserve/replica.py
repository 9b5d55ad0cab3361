"""ScoringReplica: one scoring replica of the Ray Serve application.

It runs the same Runtime as `vigor-serve` (engine worker, serving slot, scheduler, weight core),
minus HTTP, and stages and applies each update through that Runtime's WeightCore, as the plain
server's weight plane does.
Before Ray Serve routes it any request — its constructor has not returned — it loads the model,
joins the ledger and replays the committed updates, so a replica started late or restarted by
Ray serves the committed version from its first request. Afterwards a sync loop long-polls the
ledger: it stages each update in flight and applies each committed one, reporting both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import torch

from ..engine.types import SequenceScore, Sketch, TokenSequence
from ..errors import ModelLoadError
from ..runtime import Runtime
from ..settings import Settings
from ..weights.core import Staged, WeightCore
from ..weights.updates import TensorsUpdate
from .ledger import NAMESPACE
from .model_view import describe
from .ops import Update

log = logging.getLogger(__name__)

POLL_S = 1.0
BEAT_S = 1.0
CATCH_UP_S = 60.0  # how long a request waits for this replica to reach the committed version


class ScoringReplica:
    async def __init__(self, settings: Settings, ledger_name: str) -> None:
        import ray
        from ray import serve

        self.settings = settings
        self.runtime = Runtime(settings)
        self.runtime.start()
        slot = self.runtime.slot
        while slot.served is None:
            if slot.load_error:
                raise ModelLoadError(slot.load_error)
            await asyncio.sleep(0.05)
        self.core: WeightCore = self.runtime.weights.core
        self.ledger = ray.get_actor(ledger_name, namespace=NAMESPACE)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        me = ray.get_runtime_context().current_actor
        snapshot, committed = await self.ledger.join.remote(self.replica_id, me)
        for update in snapshot:
            await self._apply(await self._stage(update))
        await self.core.settle(committed)
        log.info("replica %s up at version %d", self.replica_id, slot.version)
        self._staged: tuple[str, Staged] | None = None  # (update id, staged)
        self._summed: tuple[int, float] | None = None
        self._failure: str | None = None
        self._tasks = [asyncio.create_task(self._sync()), asyncio.create_task(self._beat())]

    # --- scoring --------------------------------------------------------------------------
    async def score(
        self,
        sequences: list[TokenSequence],
        signals: tuple[str, ...],
        temperature: float,
        deadline_s: float | None,
        at_least: int,
        cost: int,
        estimator: Sketch | None = None,
    ) -> tuple[list[SequenceScore], int]:
        """One engine call at one version, at least `at_least` (the ingress's committed one).

        `cost` (tokens) is read by the router, not here.
        """
        await self.runtime.slot.wait_for_version(at_least, CATCH_UP_S)
        outcome = await self.runtime.scheduler.submit(
            sequences,
            signals=signals,
            temperature=temperature,
            estimator=estimator,
            deadline_s=deadline_s,
        )
        return outcome.scores, outcome.version

    async def describe(self) -> dict:
        """What the ingress shows in /v1/model and tokenizes with."""
        return describe(self.runtime.slot.require_served(), self.runtime.max_batch_tokens)

    async def check_bucket(self, blob) -> list[str]:
        """Validate one bucket against the model (the ingress answers a bad one at once);
        returns the parameters it gives."""
        staged = await self._stage(Update(version=0, op=TensorsUpdate((blob,), full=False)))
        self.core.release(staged)
        return list(staged.checked.tensors) if staged.checked is not None else []

    # --- one update through the core --------------------------------------------------------
    async def _stage(self, update: Update) -> Staged:
        return await self.core.stage(update.op, update.version, self.core.deadline())

    async def _apply(self, staged: Staged) -> int:
        """The swap on the engine worker; returns the version now served."""
        try:
            await self.core.apply(staged, self.core.deadline())
        finally:
            self.core.release(staged)
        return self.runtime.slot.version

    def _drop_staged(self) -> None:
        if self._staged is not None:
            self.core.release(self._staged[1])
            self._staged = None

    # --- Ray Serve hooks ------------------------------------------------------------------
    def check_health(self) -> None:
        if self._failure is not None:
            raise RuntimeError(self._failure)

    def record_routing_stats(self) -> dict:
        return {"queue_depth": self.runtime.scheduler.depth}

    # --- following the ledger -------------------------------------------------------------
    async def _beat(self) -> None:
        """Tells the ledger it lives, its version and its weights' checksum (may lag a beat)."""
        while True:
            with contextlib.suppress(Exception):
                slot = self.runtime.slot
                await self.ledger.beat.remote(self.replica_id, slot.version, self._summed)
                if self._summed is None or self._summed[0] != slot.version:
                    self._summed = await self.runtime.worker.run(self._checksum)
            await asyncio.sleep(BEAT_S)

    def _checksum(self) -> tuple[int, float]:
        """(version, sum of every weight), read together on the worker: replicas at one version
        must agree on it to the bit."""
        served = self.runtime.slot.require_served()
        with torch.no_grad():
            total = sum(float(p.detach().double().sum()) for p in served.model.parameters())
        return self.runtime.slot.version, total

    async def _sync(self) -> None:
        while True:
            try:
                sync = await self.ledger.poll.remote(
                    self.replica_id, self.runtime.slot.version, POLL_S
                )
                await self._follow(sync)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the ledger unreachable: keep serving, try again
                log.warning("sync with the weight ledger failed: %s", exc)
                await asyncio.sleep(POLL_S)

    async def _follow(self, sync) -> None:
        if sync.resync:
            # Updates it missed are gone from the ledger's log: health checks fail, and Ray
            # Serve replaces it with a replica that replays the snapshot.
            self._failure = "fell behind the weight ledger's log; waiting to be replaced"
            return
        for update in sync.apply:
            kept = self._staged
            staged = kept[1] if kept is not None and kept[0] == update.id else None
            if staged is None:
                self._drop_staged()
            self._staged = None
            error = None
            try:
                await self._apply(staged or await self._stage(update))
            except Exception as exc:
                error = exc
                log.error("replica %s failed to apply version %d: %s", self.replica_id,
                          update.version, exc)  # fmt: skip
            await self.ledger.applied.remote(self.replica_id, update.version, error)
            if error is not None:
                return
        if sync.committed > self.runtime.slot.version and not sync.apply:
            await self.core.settle(sync.committed)
        if self._staged is not None and self._staged[0] != sync.pending_id:
            self._drop_staged()  # aborted: drop its tensors
        if sync.stage is not None:
            try:
                self._drop_staged()
                staged = await self._stage(sync.stage)
                self._staged = (sync.stage.id, staged)
                outcome = (staged.tensors, staged.nbytes)
            except Exception as exc:
                outcome = exc
            await self.ledger.staged.remote(self.replica_id, sync.stage.id, outcome)
