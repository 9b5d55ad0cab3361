"""WeightLedger: the one named actor that knows the committed weight version and its weights.

Deployment-scoped state is recreated empty when Ray restarts an actor, so the committed version
lives here, in a named detached actor, and nowhere else. Replicas join it before they take
traffic (replaying `snapshot`), long-poll it for updates, and report what they staged and
applied; the ingress proposes, waits for every live replica, then commits or aborts.

A replica is live while its heartbeat is fresh: one that died stops beating and is no longer
waited for; Ray Serve replaces it and the replacement joins at the committed version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .ops import Update, compact

log = logging.getLogger(__name__)

NAMESPACE = "vigor"
LIVE_S = 5.0  # a replica not heard from for this long (it beats every second) is taken for dead


def ledger_name(app_name: str) -> str:
    return f"vigor-weights-{app_name}"


@dataclass
class Member:
    handle: Any  # the replica's own actor handle, to replace it when it fails an update
    version: int = -1
    checksum: tuple[int, float] | None = None  # (version, the sum of its weights then)
    seen: float = field(default_factory=time.monotonic)
    # update id → (tensors, bytes) it staged, or the error it refused it with
    staged: dict[str, Any] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)  # version → why


@dataclass
class Sync:
    """What a polling replica should do next."""

    committed: int
    apply: list[Update]  # committed updates above its version, in order
    stage: Update | None  # the update in flight, when this replica has not staged it yet
    pending_id: str | None  # staged data for any other id can be dropped
    resync: bool = False  # it fell below what the ledger still keeps: restart from the snapshot


class WeightLedger:
    def __init__(self) -> None:
        self.committed = 0
        self.snapshot: list[Update] = []  # replayed by a replica that joins
        self.log: list[Update] = []  # every committed update some live replica may not have
        self.trimmed_to = 0  # updates up to this version are gone from the log
        self.pending: Update | None = None
        self.expected: set[str] = set()
        self.members: dict[str, Member] = {}
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate, timeout: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
                return True
            except TimeoutError:
                return predicate()

    def live(self) -> dict[str, Member]:
        now = time.monotonic()
        return {k: m for k, m in self.members.items() if now - m.seen <= LIVE_S}

    # --- replicas --------------------------------------------------------------------------
    async def join(self, replica_id: str, handle: Any) -> tuple[list[Update], int]:
        self.members[replica_id] = Member(handle)
        log.info("replica %s joined at committed version %d", replica_id, self.committed)
        return list(self.snapshot), self.committed

    async def beat(self, replica_id: str, version: int, checksum) -> None:
        member = self.members.get(replica_id)
        if member is not None:
            member.seen, member.version, member.checksum = time.monotonic(), version, checksum
            await self._notify()

    async def poll(self, replica_id: str, version: int, timeout: float) -> Sync:
        member = self.members[replica_id]
        member.seen, member.version = time.monotonic(), version
        await self._notify()

        def news() -> bool:
            p = self.pending
            return self.committed > version or (p is not None and p.id not in member.staged)

        await self._wait(news, timeout)
        p = self.pending
        return Sync(
            committed=self.committed,
            apply=[u for u in self.log if u.version > version],
            stage=p if p is not None and p.id not in member.staged else None,
            pending_id=p.id if p is not None else None,
            resync=version < self.trimmed_to,
        )

    async def staged(self, replica_id: str, update_id: str, outcome: Any) -> None:
        self.members[replica_id].staged[update_id] = outcome
        await self._notify()

    async def applied(self, replica_id: str, version: int, error: BaseException | None) -> None:
        member = self.members[replica_id]
        if error is None:
            member.version = max(member.version, version)
        else:
            member.failed[version] = error
        self._trim()
        await self._notify()

    def _trim(self) -> None:
        live = self.live()
        floor = min((m.version for m in live.values()), default=self.committed)
        gone = [u.version for u in self.log if u.version <= floor]
        self.trimmed_to = max([self.trimmed_to, *gone])
        self.log = [u for u in self.log if u.version > floor]

    # --- the ingress -----------------------------------------------------------------------
    async def state(self) -> tuple[int, int]:
        """(committed version, live replicas)."""
        return self.committed, len(self.live())

    async def replicas(self) -> dict[str, tuple[int, tuple[int, float] | None]]:
        """Each live replica → (its version, (version, sum of its weights)): all should agree."""
        return {k: (m.version, m.checksum) for k, m in self.live().items()}

    async def propose(self, update: Update) -> None:
        if self.pending is not None:
            raise RuntimeError(f"update {self.pending.id} is still in flight")
        if update.version <= self.committed:
            raise ValueError(f"version {update.version} is not above {self.committed}")
        self.pending = update
        self.expected = set(self.live())
        await self._notify()

    async def await_staged(self, update_id: str, timeout: float) -> dict[str, Any]:
        """Each expected replica still live → (tensors, bytes) staged, its error, or "timeout"."""

        def done() -> bool:
            live = self.live()
            return all(update_id in live[k].staged for k in self.expected if k in live)

        await self._wait(done, timeout)
        live = self.live()
        return {k: live[k].staged.get(update_id, "timeout") for k in self.expected if k in live}

    async def abort(self, update_id: str) -> None:
        if self.pending is not None and self.pending.id == update_id:
            self.pending = None
            await self._notify()

    async def commit(self, update_id: str) -> None:
        """The point of no return: from here on the update is the served weights."""
        update = self.pending
        if update is None or update.id != update_id:
            raise RuntimeError(f"update {update_id} is not the one in flight")
        self.pending = None
        self.committed = update.version
        self.snapshot = compact(self.snapshot, update)
        self.log.append(update)
        await self._notify()

    async def await_applied(self, version: int, timeout: float) -> dict[str, Any]:
        """Every live replica that has not applied `version` → its error, or "timeout"."""

        def done() -> bool:
            return all(m.version >= version or version in m.failed for m in self.live().values())

        await self._wait(done, timeout)
        return {
            k: m.failed.get(version, "timeout")
            for k, m in self.live().items()
            if m.version < version
        }

    async def roll_back(self, update: Update, previous: int, snapshot: list[Update]) -> None:
        """Every replica refused to apply `update` (and stayed as it was): forget it."""
        self.committed = previous
        self.snapshot = snapshot
        self.log = [u for u in self.log if u.id != update.id]
        await self._notify()

    async def keep(self, data: bytes) -> list:
        """A body in the object store, owned here (in a list: the caller gets the reference)."""
        import ray

        return [ray.put(data)]

    async def history(self) -> list[Update]:
        return list(self.snapshot)

    async def replace(self, replica_ids: list[str]) -> None:
        """Kill replicas left behind; Ray Serve starts replacements, which join up to date."""
        import ray

        for k in replica_ids:
            member = self.members.pop(k, None)
            if member is not None:
                log.warning("replacing replica %s: it failed an update", k)
                ray.kill(member.handle, no_restart=True)
        self._trim()
        await self._notify()
